"""Deterministic demo data: a filled old database plus a shapes.inc export folder.

The data is built in *blocks*, one per scale unit. A block is a self-contained bot population
(14 users, 67 personas, 67 personalities, 4,364 messages in 79 contexts, 66 shapes folders holding
9,364 memory records, ...), so at scale N every count is exactly N times the scale-1 count. Every
id, timestamp and text comes from one `random.Random(seed)` and a fixed base date, so the same
(scale, seed) gives byte-identical data. The old database is written in one transaction with COPY.

Real-data quirks the migration must survive are planted on purpose in every block: two personas of
one owner with the same name, a pair and a triple of fully identical messages, user/assistant ties
on created_at, runs of consecutive user messages, unanswered trailing user messages, conversations
opened by the assistant, DMs (NULL guild), NULL / nested / unicode / JSON-`null` jsonb values,
bytea with 0x00 bytes, empty strings beside NULLs, and in the export: deleted, group, duplicate and
empty records plus unmapped senders.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import random
import shutil
import threading
import time
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tinybot_migration.lib.demo_data import content
from tinybot_migration.lib.demo_data.shapes_export import (
    GHOST_SENDERS_PER_BLOCK,
    MAPPINGS_FILE,
    ShapesExporter,
    ShapesJob,
    allocate,
    write_mappings_file,
)
from tinybot_migration.lib.new_database_schema import apply_old_schema
from tinybot_migration.lib.passwords import redact_url
from tinybot_migration.lib.postgres import prepare_bulk_load
from tinybot_migration.lib.schema import OLD_TABLES as OLD_TABLE_DESCRIPTIONS

# Old-DB tables in foreign-key order, with the columns the generator writes.
OLD_TABLES: dict[str, tuple[str, ...]] = {t.name: t.column_names for t in OLD_TABLE_DESCRIPTIONS}

# Rows per block (= per scale unit). The tests pin the scale-1 figures.
USERS_PER_BLOCK = 14
PERSONAS_PER_BLOCK = 67
PERSONALITIES_PER_BLOCK = 67
MESSAGES_PER_BLOCK = 4_364
CONTEXTS_PER_BLOCK = 79
SYSTEM_PROMPTS_PER_BLOCK = 3
GLOBAL_LLM_CONFIGS_PER_BLOCK = 4
USER_LLM_CONFIGS_PER_BLOCK = 3
USERS_WITHOUT_DEFAULT_PERSONA = 2
PERSONALITIES_WITH_DEFAULT_CONFIG = 60
CO_OWNED_PERSONALITIES = 5
USER_PERSONALITY_CONFIGS_PER_BLOCK = 30
ACTIVATED_CHANNELS_PER_BLOCK = 20
GUILDS_PER_BLOCK = 4
CHANNELS_PER_GUILD = 3
DM_CONTEXTS_PER_BLOCK = 10
# Contexts per block that carry each planted conversation quirk (disjoint sets).
_ASSISTANT_FIRST = 3
_TRAILING_USER = 10
_TIES = 4
# Pending memories per block: answers whose memory the rebuild stores anyway, and assistant-first
# messages it cannot store (the bot's processor must).
_PENDING_ANSWERS = 4
_PENDING_ERRORS = (
    "Request timed out.",
    "Connection error.",
    "429 Rate limit reached for text-embedding-3-small",
)

# All timestamps are naive UTC with millisecond precision, derived from this fixed date.
BASE_DATE = datetime(2025, 1, 1)
_EPOCH = datetime(1970, 1, 1)
_BASE_MS = 1_735_689_600_000  # BASE_DATE in Unix milliseconds
_DAY_MS = 86_400_000
_DISCORD_EPOCH_MS = 1_420_070_400_000  # 2015-01-01, the origin of discord snowflakes
_PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"  # holds 0x00 bytes

# From this scale on, worker processes write the shapes export while this one fills the DB.
_WORKER_MIN_SCALE = 8  # below it, starting the workers costs more than they save
_MAX_WORKERS = 2
# Tables big enough that their foreign keys and secondary indexes are rebuilt after the load.
_BULK_TABLES = ("conversation_history",)
_ADVISORY_LOCK_KEY = 0x7469_6E79_6465_6D6F  # "tinydemo": one generator per database at a time
_NEW_DB_MARKERS = ("_prisma_migrations", "memories", "shapes_persona_mappings")


@dataclass(frozen=True)
class DemoDataSummary:
    scale: int
    seed: int
    table_counts: dict[str, int]  # old-DB table name -> rows written, in foreign-key order
    contexts: int  # distinct (channel_id, personality_id, persona_id)
    shapes_folders: int
    shapes_memories: int  # records in all <slug>_memories.json files
    shapes_deleted: int
    shapes_group_memories: int  # records with 2+ senders (deleted ones included)
    shapes_senders: int  # distinct senders appearing in records
    shapes_unmapped_senders: int  # of those, the ones that map to no user
    seconds: float


def old_database_has_data(old_database_url: str) -> bool:
    """True when the old database's `users` table exists and has rows."""
    with psycopg.connect(old_database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()[0]
        if not exists:
            return False
        return conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]


def generate_demo_data(
    old_database_url: str,
    export_dir: Path,
    *,
    scale: int = 1,
    seed: int = 42,
    replace: bool = False,
) -> DemoDataSummary:
    """Fill the old database and write the shapes.inc export under `export_dir`.

    Refuses (ValueError) when the database already holds rows or `export_dir` is not empty, unless
    `replace` is true: then the old tables are truncated and the export folder recreated. The
    database is written in one transaction and the export is staged next to `export_dir` and moved
    into place only after the commit, so a failure leaves both as they were.
    """
    started = time.perf_counter()
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    export_dir = Path(export_dir).expanduser().resolve()
    where = redact_url(old_database_url)
    _check_export_dir(export_dir, replace)

    staging = export_dir.parent / f".{export_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with psycopg.connect(old_database_url, autocommit=True) as conn:
            _refuse_new_database(conn, where)
            apply_old_schema(conn)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
                filled = _non_empty_tables(conn)
                if filled and not replace:
                    raise ValueError(
                        f"the old database {where} already holds data ({', '.join(filled)}); "
                        "generate with replace=True to truncate it first"
                    )
                if replace:
                    tables = sql.SQL(", ").join(sql.Identifier(t) for t in OLD_TABLES)
                    conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(tables))
                restore = [
                    statement for table in _BULK_TABLES for statement in prepare_bulk_load(conn, table)
                ]
                result = _generate(conn, staging, scale, seed)
                for statement in restore:
                    conn.execute(statement)
        if export_dir.exists():
            shutil.rmtree(export_dir)  # empty, or a shapes export that replace=True may remove
        os.replace(staging, export_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return DemoDataSummary(scale=scale, seed=seed, seconds=round(time.perf_counter() - started, 3), **result)


def _check_export_dir(export_dir: Path, replace: bool) -> None:
    if export_dir.exists() and not export_dir.is_dir():
        raise ValueError(f"the shapes export path {export_dir} exists and is not a folder")
    if not export_dir.exists() or not any(export_dir.iterdir()):
        return
    if not replace:
        raise ValueError(
            f"the shapes export folder {export_dir} is not empty; "
            "generate with replace=True to delete and recreate it"
        )
    if not _looks_like_shapes_export(export_dir):
        raise ValueError(
            f"refusing to delete {export_dir}: it holds files other than a shapes.inc export "
            f"({MAPPINGS_FILE} and <slug>/<slug>_memories.json folders)"
        )


def _looks_like_shapes_export(folder: Path) -> bool:
    for entry in folder.iterdir():
        if entry.is_file() and entry.name == MAPPINGS_FILE:
            continue
        if not entry.is_dir() or entry.is_symlink():
            return False
        if any(f.name != f"{entry.name}_memories.json" for f in entry.iterdir()):
            return False
    return True


def _refuse_new_database(conn: psycopg.Connection, where: str) -> None:
    for table in _NEW_DB_MARKERS:
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
            raise ValueError(
                f"the database {where} has a {table!r} table: it looks like the new database, "
                "not the old one; demo data only goes into the old database"
            )


def _non_empty_tables(conn: psycopg.Connection) -> list[str]:
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {} WHERE EXISTS (SELECT 1 FROM {})").format(sql.Literal(t), sql.Identifier(t))
        for t in OLD_TABLES
    )
    return [row[0] for row in conn.execute(query)]


# --- generation ---------------------------------------------------------------------------------


class _Source:
    """The one random source: UUIDv4s, unique discord snowflakes, timestamps."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._snowflakes: set[str] = set()

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def snowflake(self, unix_ms: int) -> str:
        """A discord id (17-19 digits) minted at `unix_ms`, unique among all `snowflake` ids."""
        since = max(unix_ms - _DISCORD_EPOCH_MS, 30 * _DAY_MS)
        while True:
            value = str((since << 22) | self.rng.getrandbits(22))
            if value not in self._snowflakes:
                self._snowflakes.add(value)
                return value


def _dt(unix_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=unix_ms)


def _slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    words = "".join(c if c.isalnum() else " " for c in ascii_name).split()
    return "-".join(words) or "personality"


def _maybe(rng: random.Random, value: object, null: float = 0.35, empty: float = 0.0):
    """`value`, or NULL with probability `null`, or '' with probability `empty`."""
    r = rng.random()
    if r < null:
        return None
    if r < null + empty:
        return ""
    return value


def _copy(conn: psycopg.Connection, table: str, rows: Sequence[tuple]) -> None:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in OLD_TABLES[table])
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), columns)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


class _CopyWriter:
    """COPYs blocks on a thread, so the server checks and stores block N while Python builds N+1.

    The connection is used by this thread only until `close()` / `abort()` returns.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self._queue: queue.Queue[dict[str, list[tuple]] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-data-copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                tables = self._queue.get()
                if tables is None:
                    return
                for table, rows in tables.items():
                    if rows:
                        _copy(self._conn, table, rows)
        except BaseException as error:  # re-raised in the calling thread
            self._error = error

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, tables: dict[str, list[tuple]] | None) -> None:
        while True:
            self._check()
            if not self._thread.is_alive():
                raise RuntimeError("the demo-data COPY thread stopped unexpectedly")
            try:
                self._queue.put(tables, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.put(None)
        self._thread.join()
        self._check()

    def abort(self) -> None:
        """Stop after the COPY in progress, if any, and wait (the caller then rolls back)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join()


def _generate(conn: psycopg.Connection, staging: Path, scale: int, seed: int) -> dict:
    source = _Source(seed)
    counts = dict.fromkeys(OLD_TABLES, 0)
    contexts = 0
    cores = os.cpu_count() or 1
    workers = 0 if scale < _WORKER_MIN_SCALE or cores < 2 else min(_MAX_WORKERS, cores, scale)
    exporter = writer = None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived tuples: collections would cost a third of the time
    try:
        exporter = ShapesExporter(staging, workers=workers)
        writer = _CopyWriter(conn)
        for index in range(scale):
            block = _Block(source, index, seed)
            tables, block_contexts, job = block.build()
            exporter.submit(job)
            writer.put(tables)
            for table, rows in tables.items():
                counts[table] += len(rows)
            contexts += block_contexts
        writer.close()
        results = exporter.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        if exporter is not None:
            exporter.abort()
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    mappings: dict[str, dict[str, str]] = {}
    for result in results:
        mappings.update(result.mappings)
    write_mappings_file(staging, mappings)
    return {
        "table_counts": counts,
        "contexts": contexts,
        "shapes_folders": sum(r.folders for r in results),
        "shapes_memories": sum(r.memories for r in results),
        "shapes_deleted": sum(r.deleted for r in results),
        "shapes_group_memories": sum(r.group_memories for r in results),
        "shapes_senders": sum(r.senders for r in results),
        "shapes_unmapped_senders": sum(r.unmapped_senders for r in results),
    }


@dataclass
class _User:
    id: uuid.UUID
    discord_id: str
    username: str
    created_ms: int
    personas: list[uuid.UUID]


class _Block:
    """One scale unit of data; `build()` returns its rows per table, context count and shapes."""

    def __init__(self, source: _Source, index: int, seed: int) -> None:
        self.seed = seed
        self.source = source
        self.rng = source.rng
        self.index = index
        self.tables: dict[str, list[tuple]] = {t: [] for t in OLD_TABLES}

    def _suffix(self) -> str:
        """Keeps names that seed global ids (system prompts, global llm configs) unique per block."""
        return "" if self.index == 0 else f" (set {self.index + 1})"

    def _later(self, after_ms: int, max_days: int) -> int:
        """A time after `after_ms`, at most `max_days` later and never after the base date."""
        return min(after_ms + self.rng.randrange(3_600_000, max_days * _DAY_MS), _BASE_MS - _DAY_MS)

    def build(self) -> tuple[dict[str, list[tuple]], int, ShapesJob]:
        self._users()
        self._personas()
        self._system_prompts()
        self._llm_configs()
        self._personalities()
        self._personality_links()
        self._channels()
        contexts = self._conversations()
        self._pending_memories()
        with_default = {row[0] for row in self.tables["user_default_personas"]}
        mapped = [(u.discord_id, u.username) for u in self.users if u.id in with_default]
        ghosts = [
            self.source.snowflake(_BASE_MS - self.rng.randrange(500 * _DAY_MS, 900 * _DAY_MS))
            for _ in range(GHOST_SENDERS_PER_BLOCK)
        ]
        job = ShapesJob(self.seed, self.index, list(self.personality_names), mapped, ghosts)
        return self.tables, contexts, job

    # users, personas, defaults -------------------------------------------------------------

    def _users(self) -> None:
        rng = self.rng
        self.users: list[_User] = []
        for i in range(USERS_PER_BLOCK):
            if i == 0:  # an account from 2015: a 17-digit discord id
                created = _DISCORD_EPOCH_MS + rng.randrange(40 * _DAY_MS, 250 * _DAY_MS)
            else:
                created = _DISCORD_EPOCH_MS + rng.randrange(300 * _DAY_MS, 3_600 * _DAY_MS)
            name = rng.choice(content.USERNAMES)
            if rng.random() < 0.5:
                name += str(rng.randrange(100))
            user = _User(self.source.uuid(), self.source.snowflake(created), name, created, [])
            self.users.append(user)
            updated = self._later(created, 400)
            self.tables["users"].append((user.id, user.discord_id, name, _dt(created), _dt(updated)))

    def _personas(self) -> None:
        rng = self.rng
        per_user = [1] * USERS_PER_BLOCK
        per_user[0] = 2  # the owner of the same-name pair
        for _ in range(PERSONAS_PER_BLOCK - sum(per_user)):
            per_user[rng.randrange(USERS_PER_BLOCK)] += 1
        self.personas: list[tuple[uuid.UUID, _User]] = []
        for user, count in zip(self.users, per_user, strict=True):
            used: set[str] = set()
            for k in range(count):
                if user is self.users[0] and k == 1:
                    name = next(iter(used))  # same owner, same name: a persona id-seed collision
                else:
                    choices = [n for n in content.PERSONA_NAMES if n not in used]
                    name = rng.choice(choices) if choices else f"Persona {k + 1}"
                used.add(name)
                persona_id = self.source.uuid()
                created = self._later(user.created_ms, 300)
                self.tables["personas"].append(
                    (
                        persona_id,
                        name,
                        _maybe(rng, content.prose(rng, 1), null=0.3, empty=0.05),
                        f"I am {name}. " + content.prose(rng, rng.randrange(1, 4)),
                        _maybe(rng, rng.choice(content.NAMES), null=0.4),
                        _maybe(rng, rng.choice(content.PRONOUNS), null=0.5),
                        user.id,
                        _dt(created),
                        _dt(self._later(created, 60)),
                    )
                )
                user.personas.append(persona_id)
                self.personas.append((persona_id, user))
        without = set(rng.sample(range(1, USERS_PER_BLOCK), USERS_WITHOUT_DEFAULT_PERSONA))
        for i, user in enumerate(self.users):
            if i not in without:
                updated = self._later(user.created_ms, 500)
                row = (user.id, rng.choice(user.personas), _dt(updated))
                self.tables["user_default_personas"].append(row)

    # system prompts, llm configs -------------------------------------------------------------

    def _system_prompts(self) -> None:
        rng = self.rng
        names = ("Default", "Roleplay", "Concise & factual")
        self.system_prompts: list[uuid.UUID] = []
        for i in range(SYSTEM_PROMPTS_PER_BLOCK):
            prompt_id = self.source.uuid()
            created = _BASE_MS - rng.randrange(200 * _DAY_MS, 700 * _DAY_MS)
            body = "You are {assistant}, talking with {user}.\n" + content.prose(rng, 3)
            self.tables["system_prompts"].append(
                (
                    prompt_id,
                    names[i % len(names)] + self._suffix(),
                    _maybe(rng, "Used when a personality has no prompt of its own.", null=0.4),
                    body,
                    self.index == 0 and i == 0,  # exactly one default in the whole data set
                    _dt(created),
                    _dt(self._later(created, 100)),
                )
            )
            self.system_prompts.append(prompt_id)

    def _llm_configs(self) -> None:
        rng = self.rng
        d = Decimal
        globals_ = (
            # name, model, vision, temperature, top_p, top_k, freq, presence, repetition, max_tokens
            ("Claude Sonnet", "anthropic/claude-sonnet-4", "anthropic/claude-sonnet-4", d("0.70"), d("0.95"),
             None, None, None, d("1.05"), 4096),
            ("GPT-4o mini", "openai/gpt-4o-mini", None, None, None, None, None, None, None, None),
            ("Llama 3.1 70B", "meta-llama/llama-3.1-70b-instruct", None, d("1.05"), d("0.90"), 40,
             d("0.10"), d("-0.50"), d("1.10"), 8192),
            ("Gemini Flash", "google/gemini-2.0-flash", "google/gemini-2.0-flash", d("0.00"), d("1.00"),
             64, d("0.00"), d("0.00"), None, 2048),
        )  # fmt: skip
        self.global_configs: list[uuid.UUID] = []
        self.user_configs: list[tuple[uuid.UUID, uuid.UUID]] = []  # (config id, owner id)
        owned_names = ("My config", "Creative", "Cheap & fast", "Long context")
        owned = rng.sample(owned_names, USER_LLM_CONFIGS_PER_BLOCK)
        specs = [(g, None) for g in globals_]
        for name in owned:  # a user's tweak of a global model: numerics of their own
            model, vision = rng.choice(globals_)[1:3]
            numerics = (
                rng.choice((d("0.70"), d("1.05"), d("0.85"), None)),
                rng.choice((d("0.95"), d("0.90"), None)),
                rng.choice((40, 100, None)),
                rng.choice((d("0.10"), d("0.00"), None)),
                rng.choice((d("0.20"), d("-0.30"), None)),
                rng.choice((d("1.05"), d("1.15"), None)),
                rng.choice((1024, 4096, None)),
            )
            specs.append(((name, model, vision, *numerics), rng.choice(self.users)))
        for i, (spec, owner) in enumerate(specs):
            name, model, vision, temperature, top_p, top_k, freq, presence, repetition, max_tokens = spec
            config_id = self.source.uuid()
            created = _BASE_MS - rng.randrange(100 * _DAY_MS, 600 * _DAY_MS)
            self.tables["llm_configs"].append(
                (
                    config_id,
                    name + (self._suffix() if owner is None else ""),
                    _maybe(rng, f"{model} with tuned sampling", null=0.4),
                    owner.id if owner else None,
                    owner is None,
                    self.index == 0 and i == 0,
                    model,
                    vision,
                    temperature,
                    top_p,
                    top_k,
                    freq,
                    presence,
                    repetition,
                    max_tokens,
                    rng.choice((d("0.15"), d("0.30"), None)),
                    rng.choice((15, 50, None)),
                    rng.choice((20, 20, 30, 50)),
                    _dt(created),
                    _dt(self._later(created, 90)),
                )
            )
            if owner is None:
                self.global_configs.append(config_id)
            else:
                self.user_configs.append((config_id, owner.id))

    # personalities and their links ---------------------------------------------------------------

    def _personalities(self) -> None:
        rng = self.rng
        self.personalities: list[tuple[uuid.UUID, int]] = []  # (id, created ms)
        self.personality_names: list[tuple[str, str]] = []  # (slug, name)
        for i in range(PERSONALITIES_PER_BLOCK):
            name = rng.choice(content.PERSONALITY_NAMES)
            slug = f"{_slugify(name)}-{self.index * PERSONALITIES_PER_BLOCK + i + 1}"
            personality_id = self.source.uuid()
            created = _BASE_MS - rng.randrange(30 * _DAY_MS, 500 * _DAY_MS)
            custom, voice, image, avatar = self._personality_json(i)
            bare = i == 3  # every nullable column NULL
            self.tables["personalities"].append(
                (
                    personality_id,
                    name,
                    None if bare else _maybe(rng, f"{name} ✨", null=0.3),
                    slug,
                    None if bare else _maybe(rng, rng.choice(self.system_prompts), null=0.2),
                    f"{name} is " + content.prose(rng, rng.randrange(2, 5)),
                    ", ".join(rng.sample(content.TRAITS, 3)),
                    None if bare else _maybe(rng, rng.choice(content.TRAITS)),
                    None if bare else _maybe(rng, str(rng.randrange(18, 900)), empty=0.1),
                    None if bare else _maybe(rng, content.prose(rng, 1)),
                    None if bare else _maybe(rng, ", ".join(rng.sample(content.TOPICS, 2))),
                    None if bare else _maybe(rng, ", ".join(rng.sample(content.TOPICS, 2)), empty=0.05),
                    None if bare else _maybe(rng, "Make {user} smile; remember their stories."),
                    None if bare else _maybe(rng, f"{{user}}: hi!\n{{assistant}}: Hello, I'm {name} 👋"),
                    custom,
                    voice is not None and rng.random() < 0.8,
                    voice,
                    image is not None,
                    image,
                    avatar,
                    _dt(created),
                    _dt(self._later(created, 30)),
                )
            )
            self.personalities.append((personality_id, created))
            self.personality_names.append((slug, name))

    def _personality_json(self, i: int) -> tuple[str | None, str | None, str | None, bytes | None]:
        """custom_fields, voice_settings, image_settings (JSON text) and avatar_data."""
        rng = self.rng
        nested = '{"a": {"b": [1, 2, {"c": null}]}}'
        unicode_json = '{"lore": {"home": "Kyōto 京都", "likes": ["茶", "🍵", "👩‍💻"], "rtl": "שלום مرحبا"}}'
        customs = (
            None,
            "{}",
            '{"tags": ["x", "y"], "level": 3, "flags": {"nsfw": false, "beta": true}, "ratio": 0.5}',
            nested,
            unicode_json,
            '{"quote": "she said \\"hi\\"", "path": "C:\\\\bot\\\\data", "lines": "a\\nb"}',
        )
        voices = (
            None,
            '{"provider": "elevenlabs", "voice_id": "EXAVITQu4vr4xnSDxMaL", "stability": 0.5, '
            '"similarity_boost": 0.75}',
            '{"provider": "openai", "voice": "nova", "speed": 1.0}',
        )
        images = (
            None,
            '{"model": "flux-schnell", "size": "1024x1024", "style": {"preset": "anime", '
            '"negative": ["blurry", "低品質"]}}',
        )
        custom, voice, image = rng.choice(customs), rng.choice(voices), rng.choice(images)
        avatar = _PNG_HEADER + rng.randbytes(rng.randrange(200, 600)) if rng.random() < 0.6 else None
        if i == 0:
            custom, avatar = nested, _PNG_HEADER + rng.randbytes(300)
        elif i == 1:
            custom = unicode_json
        elif i == 2:
            voice = "null"  # JSON null, not SQL NULL: must survive as such
        elif i == 3:
            custom = voice = image = avatar = None
        return custom, voice, image, avatar

    def _personality_links(self) -> None:
        rng = self.rng
        with_config = sorted(rng.sample(range(PERSONALITIES_PER_BLOCK), PERSONALITIES_WITH_DEFAULT_CONFIG))
        for i in with_config:
            personality_id, created = self.personalities[i]
            if rng.random() < 0.85:
                config = rng.choice(self.global_configs)
            else:
                config = rng.choice(self.user_configs)[0]
            row = (personality_id, config, _dt(self._later(created, 20)))
            self.tables["personality_default_configs"].append(row)

        owners: dict[int, _User] = {}
        for i, (personality_id, created) in enumerate(self.personalities):
            owners[i] = rng.choice(self.users)
            stamp = _dt(created)
            self.tables["personality_owners"].append((personality_id, owners[i].id, "owner", stamp, stamp))
        for i in sorted(rng.sample(range(PERSONALITIES_PER_BLOCK), CO_OWNED_PERSONALITIES)):
            personality_id, created = self.personalities[i]
            editor = rng.choice([u for u in self.users if u is not owners[i]])
            added = self._later(created, 60)
            self.tables["personality_owners"].append(
                (personality_id, editor.id, "editor", _dt(added), _dt(added))
            )

        pairs: set[tuple[int, int]] = set()
        while len(pairs) < USER_PERSONALITY_CONFIGS_PER_BLOCK:
            pairs.add((rng.randrange(USERS_PER_BLOCK), rng.randrange(PERSONALITIES_PER_BLOCK)))
        for u, p in sorted(pairs):
            user = self.users[u]
            personality_id, created = self.personalities[p]
            own = [c for c, owner in self.user_configs if owner == user.id]
            r = rng.random()
            if r < 0.4:
                config = None
            elif own and r < 0.6:
                config = rng.choice(own)
            else:
                config = rng.choice(self.global_configs)
            made = self._later(max(created, user.created_ms), 90)
            self.tables["user_personality_configs"].append(
                (
                    self.source.uuid(),
                    user.id,
                    personality_id,
                    _maybe(rng, rng.choice(user.personas), null=0.3),
                    config,
                    _dt(made),
                    _dt(self._later(made, 30)),
                )
            )

    # channels and conversations --------------------------------------------------------------------

    def _channels(self) -> None:
        rng = self.rng
        self.guild_channels: list[tuple[str, str]] = []  # (channel id, guild id)
        for _ in range(GUILDS_PER_BLOCK):
            guild = self.source.snowflake(_BASE_MS - rng.randrange(400 * _DAY_MS, 2_000 * _DAY_MS))
            for _ in range(CHANNELS_PER_GUILD):
                channel = self.source.snowflake(_BASE_MS - rng.randrange(30 * _DAY_MS, 400 * _DAY_MS))
                self.guild_channels.append((channel, guild))
        self.dm_channels = [self.source.snowflake(self._later(u.created_ms, 1_000)) for u in self.users]
        # Activated (channel, personality) pairs: every guild channel has at least one.
        activated: set[tuple[int, int]] = {
            (c, rng.randrange(PERSONALITIES_PER_BLOCK)) for c in range(len(self.guild_channels))
        }
        while len(activated) < ACTIVATED_CHANNELS_PER_BLOCK:
            activated.add((rng.randrange(len(self.guild_channels)), rng.randrange(PERSONALITIES_PER_BLOCK)))
        self.activated = sorted(activated)
        for c, p in self.activated:
            personality_id, created = self.personalities[p]
            made = self._later(created, 60)
            self.tables["activated_channels"].append(
                (
                    self.source.uuid(),
                    self.guild_channels[c][0],
                    personality_id,
                    rng.random() < 0.8,
                    None if rng.random() < 0.25 else rng.choice(self.users).id,
                    _dt(made),
                    _dt(self._later(made, 30)),
                )
            )

    def _conversations(self) -> int:
        rng = self.rng
        contexts: list[tuple[str, str | None, uuid.UUID, uuid.UUID]] = []
        seen: set[tuple[str, uuid.UUID, uuid.UUID]] = set()
        while len(contexts) < CONTEXTS_PER_BLOCK:
            if len(contexts) < DM_CONTEXTS_PER_BLOCK:
                u = rng.randrange(USERS_PER_BLOCK)
                channel, guild = self.dm_channels[u], None
                persona = rng.choice(self.users[u].personas)
                personality = rng.choice(self.personalities)[0]
            else:
                if rng.random() < 0.85:
                    c, p = rng.choice(self.activated)
                else:
                    c, p = rng.randrange(len(self.guild_channels)), rng.randrange(PERSONALITIES_PER_BLOCK)
                channel, guild = self.guild_channels[c]
                personality = self.personalities[p][0]
                persona = rng.choice(self.personas)[0]
            if (channel, personality, persona) not in seen:
                seen.add((channel, personality, persona))
                contexts.append((channel, guild, personality, persona))

        sizes = allocate(rng, MESSAGES_PER_BLOCK, CONTEXTS_PER_BLOCK, minimum=2)
        eligible = [i for i, size in enumerate(sizes) if size >= 12]
        special = rng.sample(eligible, _ASSISTANT_FIRST + _TRAILING_USER + _TIES + 2)
        assistant_first = set(special[:_ASSISTANT_FIRST])
        trailing = set(special[_ASSISTANT_FIRST : _ASSISTANT_FIRST + _TRAILING_USER])
        ties = set(special[_ASSISTANT_FIRST + _TRAILING_USER : -2])
        identical = {special[-2]: 2, special[-1]: 3}  # a pair and a triple of identical messages

        rows = self.tables["conversation_history"]
        rnd = rng.random
        exchanges: set[tuple] = set()
        for i, (channel, guild, personality, persona) in enumerate(contexts):
            n = sizes[i]
            lead = 1 if i in assistant_first else 0
            tail = rng.randrange(1, 3) if i in trailing else 0
            body = n - lead - tail
            if body == 1:
                tail, body = tail + 1, 0
            runs = _user_runs(rng, body, identical.get(i))
            now = _BASE_MS + rng.randrange(0, 150 * _DAY_MS)

            def emit(role: str, text: str, at: int, c=channel, g=guild, p=personality, s=persona) -> None:
                rows.append((self.source.uuid(), c, g, p, s, role, text, _dt(at)))

            if lead:
                emit("assistant", content.assistant_message(rng), now)
                now += 5_000 + int(rng.expovariate(1 / 600_000))
            for r, run in enumerate(runs):
                first_at, first_text = now, content.user_message(rng)
                emit("user", first_text, now)
                asked = [first_text]
                for k in range(1, run):
                    if r == 0 and i in identical and k < identical[i]:
                        emit("user", first_text, first_at)  # fully identical: same time and text
                    else:
                        now += 2_000 + int(rnd() * 90_000)
                        asked.append(content.user_message(rng))
                        emit("user", asked[-1], now)
                if not (r == 1 and i in ties):  # a tie: the answer shares the user's timestamp
                    now += 1_200 + int(rnd() * 40_000)
                # Two exchanges with the same texts for one (personality, persona) would give two
                # rebuilt memories the same id: only the planted quirks may collide, so redraw.
                while True:
                    answer = content.assistant_message(rng)
                    key = (personality, persona, "\n".join(asked), answer)
                    if key not in exchanges:
                        exchanges.add(key)
                        break
                emit("assistant", answer, now)
                now += 5_000 + int(rng.expovariate(1 / 900_000))
                if rnd() < 0.03:  # the conversation pauses for days
                    now += _DAY_MS + int(rnd() * 19 * _DAY_MS)
            for _ in range(tail):
                emit("user", content.user_message(rng), now)
                now += 3_000 + int(rnd() * 60_000)
        return len(contexts)

    def _pending_memories(self) -> None:
        """Old `pending_memories`: a few answers (the rebuild stores their exchange) and every
        assistant-first message (only the bot's processor can store it). Drawn from a random source
        of their own, so the other tables stay as the tests pin them."""
        rng = random.Random(f"{self.seed}:{self.index}:pending")
        history = self.tables["conversation_history"]
        names = {p[0]: name for p, (_, name) in zip(self.personalities, self.personality_names, strict=True)}

        def context(row: tuple) -> tuple:
            return (row[1], row[3], row[4])

        answers, firsts = [], []
        for j, row in enumerate(history):
            if row[5] != "assistant":
                continue
            previous = history[j - 1] if j else None
            if previous is None or context(previous) != context(row):
                firsts.append(row)
            elif previous[5] == "user":
                answers.append(row)
        for k, row in enumerate([*rng.sample(answers, min(_PENDING_ANSWERS, len(answers))), *firsts]):
            message_id, channel, guild, personality, persona, _, text, at = row
            attempts = k % 4
            metadata = {
                "personaId": str(persona),
                "personalityId": str(personality),
                "sessionId": None,
                "canonScope": "personal",
                "timestamp": int(at.replace(tzinfo=UTC).timestamp() * 1000),
                "summaryType": "conversation",
                "contextType": "channel",
                "channelId": channel,
                "guildId": guild,
                "serverId": guild,
            }
            self.tables["pending_memories"].append(
                (
                    uuid.UUID(int=rng.getrandbits(128), version=4),
                    message_id,
                    persona,
                    personality,
                    names[personality],
                    f"{{user}}: {content.user_message(rng)}\n{{assistant}}: {text}",
                    Jsonb(metadata),
                    at,
                    attempts,
                    at + timedelta(minutes=attempts) if attempts else None,
                    rng.choice(_PENDING_ERRORS) if attempts else None,
                )
            )


def _user_runs(rng: random.Random, body: int, first: int | None) -> list[int]:
    """Lengths of the user runs of `body` messages made of (k user messages + 1 answer) exchanges."""
    runs: list[int] = []
    left = body
    while left > 0:
        if first is not None and not runs:
            k = first
        else:
            r = rng.random()
            k = 1 if r < 0.99 else 2 if r < 0.996 else 3 if r < 0.999 else 4
        k = min(k, left - 1)
        if left - (k + 1) == 1:  # never leave a lone message behind
            k += 1
        runs.append(k)
        left -= k + 1
    return runs
