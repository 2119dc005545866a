"""The demo Qdrant store: a local-mode store (`QdrantClient(path=...)`) that matches the demo old
database and the demo shapes.inc export, as the bot's writers would have left it (QDRANT.md §1, §5).

It is built by reading both sources back after they were written (the old database read-only, the
export folder's JSON files), so whatever the generator planted there is what the store stands for.
Every point belongs to one planted category (`CATEGORIES`), counted in `DemoQdrantStore.planted`,
so tests and the demo summary can say what the migration must find:

- `live`: one point per exchange of the conversation history (a run of user messages and the next
  answer) in `persona-{persona}`, in the two text eras, createdAt exact or a little late, `userId`
  on part of era 1. `live` counts ALL live points, the renamed ones included.
- `exchange_without_point` (not a point): exchanges left without a point (the bot's pending
  memories, which never reached Qdrant, and a few more), about 3%.
- `live_retry`: a live point written again (new id, same text and vector, createdAt 1-5 s later).
- `qdrant_only_exchange`: live-format points whose exchange is not in the history.
- `shapes`: one point per (export record, sender), deleted records included (`shapes_deleted`
  counts those, within `shapes`); `shapes_early_id`: records stored under the early ingest's id
  uuid5(DNS, record id) instead (not in `shapes`); `shapes_record_unusable` (not a point): records
  whose result is not a non-empty string; `shapes_missing_from_export`: made-up shapes points.
- `old_layout_*`: `personality-{personality}` collections of the layout before 2025-10-23: copies
  of live points, refusal spam, points without `userId`, points only there.
- `renamed_reembedded`: all live points of one personality (also counted in `live`) whose vector
  embeds another text (the 2025-10-27 rename script): a different (old) name, newlines as spaces.
- `bad_*` and `created_at_in_seconds`: one point each that the migration must reject (or accept,
  flagged), including a 3-d vector in its own 3-d collection (`persona-legacy-wrongsize-demo`).

A shapes record id is "first/last". A single-sender record's point id is the first segment: a UUID
as is; a decimal u64 (the demo's ids are discord message ids) as the integer id Qdrant also takes;
anything else uuid5(DNS, record id). Several senders: uuid5(f47ac10b-..., "first:sender").

Vectors are the offline `hash_embedding(text, 1536)` the demo's provider uses, so a live point's
vector is the embedding of its content. Everything is drawn from one `random.Random(seed)`, so the
same sources and seed give the same store. At demo scale > 1 only the first block (personalities
with slug number <= PERSONALITIES_PER_BLOCK, their conversations and export folders) is written:
local mode keeps every vector in RAM (a scale-1 store is ~12,500 points, ~200 MB on disk, ~0.5 GB
of RAM to write or open) and warns above 20,000 points per collection. The result then says
`scaled_down=True`, with a note.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import shutil
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from qdrant_client import QdrantClient, models

from tinybot_migration.lib.demo_data import content
from tinybot_migration.lib.demo_data.generator import PERSONALITIES_PER_BLOCK
from tinybot_migration.lib.demo_data.shapes_export import MAPPINGS_FILE
from tinybot_migration.lib.demo_data.shapes_export import _date as export_date
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.passwords import redact_url
from tinybot_migration.lib.qdrant.points import REFUSAL_WINDOW, is_refusal
from tinybot_migration.lib.qdrant.source import LOCAL_STORE_MARKER
from tinybot_migration.lib.qdrant.vectors import cosine
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS

# Planted categories, in the order the summary lists them.
LIVE = "live"
EXCHANGE_WITHOUT_POINT = "exchange_without_point"
LIVE_RETRY = "live_retry"
QDRANT_ONLY_EXCHANGE = "qdrant_only_exchange"
SHAPES = "shapes"
SHAPES_DELETED = "shapes_deleted"
SHAPES_EARLY_ID = "shapes_early_id"
SHAPES_RECORD_UNUSABLE = "shapes_record_unusable"
SHAPES_MISSING_FROM_EXPORT = "shapes_missing_from_export"
OLD_LAYOUT_COPY = "old_layout_copy"
OLD_LAYOUT_REFUSAL = "old_layout_refusal"
OLD_LAYOUT_NO_USER_ID = "old_layout_no_user_id"
OLD_LAYOUT_ONLY = "old_layout_only"
RENAMED_REEMBEDDED = "renamed_reembedded"
BAD_ZERO_VECTOR = "bad_zero_vector"
BAD_CONTENT_MISSING = "bad_content_missing"
BAD_CONTENT_NOT_TEXT = "bad_content_not_text"
BAD_CONTENT_EMPTY = "bad_content_empty"
BAD_UNKNOWN_PERSONALITY = "bad_unknown_personality"
BAD_UNKNOWN_PERSONA = "bad_unknown_persona"
BAD_CREATED_AT_MISSING = "bad_created_at_missing"
BAD_CREATED_AT_ABSURD = "bad_created_at_absurd"
CREATED_AT_IN_SECONDS = "created_at_in_seconds"
BAD_WRONG_SIZE = "bad_wrong_size"
BAD_PERSONALITY_NOT_UUID = "bad_personality_not_uuid"
BAD_KINDS = (
    BAD_ZERO_VECTOR,
    BAD_CONTENT_MISSING,
    BAD_CONTENT_NOT_TEXT,
    BAD_CONTENT_EMPTY,
    BAD_UNKNOWN_PERSONALITY,
    BAD_UNKNOWN_PERSONA,
    BAD_CREATED_AT_MISSING,
    BAD_CREATED_AT_ABSURD,
    CREATED_AT_IN_SECONDS,
    BAD_WRONG_SIZE,
    BAD_PERSONALITY_NOT_UUID,
)
CATEGORIES = (
    LIVE,
    EXCHANGE_WITHOUT_POINT,
    LIVE_RETRY,
    QDRANT_ONLY_EXCHANGE,
    SHAPES,
    SHAPES_DELETED,
    SHAPES_EARLY_ID,
    SHAPES_RECORD_UNUSABLE,
    SHAPES_MISSING_FROM_EXPORT,
    OLD_LAYOUT_COPY,
    OLD_LAYOUT_REFUSAL,
    OLD_LAYOUT_NO_USER_ID,
    OLD_LAYOUT_ONLY,
    RENAMED_REEMBEDDED,
    *BAD_KINDS,
)
# Counted but not points of their own: subsets of another category, or things left unwritten.
SUBSET_CATEGORIES = (SHAPES_DELETED, RENAMED_REEMBEDDED)
NOT_POINTS = (EXCHANGE_WITHOUT_POINT, SHAPES_RECORD_UNUSABLE)

SHAPES_GROUP_NAMESPACE = uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479")
WRONG_SIZE_COLLECTION = "persona-legacy-wrongsize-demo"
STORE_MARKER = LOCAL_STORE_MARKER
_STORE_ENTRIES = {STORE_MARKER, ".lock", "collection"}
BATCH_SIZE = 256

# Shares and sizes of the planted categories.
_WITHOUT_POINT_SHARE = 0.03
_RETRY_SHARE = 0.01
_QDRANT_ONLY_EXCHANGES = 15
_EARLY_ID_SHARE = 0.02
_MISSING_FROM_EXPORT = 5
_OLD_LAYOUT_PERSONALITIES = 3
_OLD_LAYOUT_COPY_SHARE = 0.2
_OLD_LAYOUT_REFUSALS = 3
_OLD_LAYOUT_NO_USER_ID = 3
_OLD_LAYOUT_ONLY = 2
_RENAMED_MIN_POINTS = 10
RENAMED_MAX_COSINE = 0.99
# Live text eras by the rank of the answer's time (0 oldest .. 1 newest): era 1 (`User (name):`)
# for the older half; createdAt late (Date.now() at write) and userId (10-04..10-23) in bands of it.
_ERA_TWO_FROM = 0.5
_LATE_BEFORE = 0.47
_USER_ID_FROM = 0.22
_LATE_MS = (1_000, 25_000)
ERA_ONE_PREFIX = "User ("
_RETRY_LATER_MS = (1_000, 5_000)
REFUSALS = ("I cannot generate that content.", "I'm unable to help with that.")
YEAR_3000_MS = 32_503_680_000_000
_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class DemoQdrantStore:
    path: Path
    collections: int
    points: int
    planted: dict[str, int]  # category -> count; see CATEGORIES, SUBSET_CATEGORIES, NOT_POINTS
    scale: int  # of the demo data read
    scaled_down: bool = False
    note: str | None = None
    seconds: float = 0.0


def write_demo_qdrant_store(
    old_database_url: str,
    export_dir: Path,
    store_dir: Path,
    *,
    seed: int = 42,
    replace: bool = False,
) -> DemoQdrantStore:
    """Write the demo store for the demo old DB and shapes export into `store_dir`.

    Refuses (ValueError) a non-empty folder that is not a local-mode store, and an existing store
    unless `replace`. The store is written into a staging folder beside `store_dir` and moved into
    place once complete and closed, so a failure leaves `store_dir` as it was.
    """
    started = time.perf_counter()
    export_dir = Path(export_dir).expanduser().resolve()
    store_dir = Path(store_dir).expanduser().resolve()
    _check_store_dir(store_dir, replace)
    old = _read_old_database(old_database_url)
    folders, mappings = _read_export(export_dir, old)
    planner = _Planner(random.Random(seed), old)
    planner.plan_all(folders, mappings)
    planner.check_totals()

    staging = store_dir.parent / f".{store_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        collections = _write_store(staging, planner.points)
        if store_dir.exists():
            shutil.rmtree(store_dir)  # empty, or a store that replace=True may remove
        os.replace(staging, store_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    scaled_down = old.scale > 1
    note = (
        f"demo data at scale {old.scale}: only its first block is in the store (local mode holds every "
        "vector in RAM); the migration finds more points in the old DB and export than the store holds"
        if scaled_down
        else None
    )
    return DemoQdrantStore(
        path=store_dir,
        collections=collections,
        points=len(planner.points),
        planted={name: planner.planted[name] for name in CATEGORIES},
        scale=old.scale,
        scaled_down=scaled_down,
        note=note,
        seconds=round(time.perf_counter() - started, 3),
    )


# --- the store folder -----------------------------------------------------------------------------


def is_local_store(folder: Path) -> bool:
    """True when `folder` holds a local-mode store (meta.json) and nothing else."""
    if not (folder / STORE_MARKER).is_file():
        return False
    return all(entry.name in _STORE_ENTRIES for entry in folder.iterdir())


def _check_store_dir(store_dir: Path, replace: bool) -> None:
    if store_dir.exists() and not store_dir.is_dir():
        raise ValueError(f"the Qdrant store path {store_dir} exists and is not a folder")
    if not store_dir.exists() or not any(store_dir.iterdir()):
        return
    if not is_local_store(store_dir):
        raise ValueError(
            f"refusing to write the demo Qdrant store into {store_dir}: the folder is not empty and is not "
            f"a Qdrant local-mode store ({STORE_MARKER}, collection/); choose an empty or new folder"
        )
    if not replace:
        raise ValueError(
            f"the folder {store_dir} already holds a Qdrant store; write with replace=True to delete and rewrite it"
        )


# --- reading the sources --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Personality:
    id: str
    name: str
    slug: str


@dataclass(frozen=True)
class _Persona:
    id: str
    display: str  # preferred_name, else name: the era-2 text's speaker
    username: str  # its owner's: the era-1 text's speaker
    discord_id: str  # its owner's: the `userId` payload


@dataclass(frozen=True)
class _Context:
    persona: str
    personality: str
    channel: str
    guild: str | None


@dataclass(frozen=True)
class _Exchange:
    context: _Context
    user_text: str  # the last user message of the run
    answer: str
    answer_id: str
    answer_ms: int


@dataclass
class _OldDatabase:
    scale: int
    personalities: dict[str, _Personality]  # id -> personality (the first block's at scale > 1)
    all_slugs: set[str]
    personas: dict[str, _Persona]
    default_persona: dict[str, str]  # owner's discord id -> default persona id
    exchanges: list[_Exchange]
    answers: set[str]  # every assistant text of the history
    pending_answers: set[str]  # assistant message ids whose memory is pending


def _read_old_database(url: str) -> _OldDatabase:
    """Everything the store needs from the old DB, in one read-only snapshot."""
    try:
        with psycopg.connect(url) as conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            return _read_snapshot(conn)
    except psycopg.OperationalError as error:
        raise ValueError(f"cannot read the old database {redact_url(url)}: {error}".splitlines()[0]) from None


def _read_snapshot(conn: psycopg.Connection) -> _OldDatabase:
    rows = conn.execute("SELECT id::text, name, slug FROM personalities ORDER BY id").fetchall()
    everyone = {r[0]: _Personality(*r) for r in rows}
    scale = max(1, len(everyone) // PERSONALITIES_PER_BLOCK)
    personalities = _first_block(everyone) if scale > 1 else everyone
    personas = {
        r[0]: _Persona(r[0], r[2] or r[1], r[3], r[4])
        for r in conn.execute(
            "SELECT p.id::text, p.name, p.preferred_name, u.username, u.discord_id"
            " FROM personas p JOIN users u ON u.id = p.owner_id ORDER BY p.id"
        )
    }
    default_persona = dict(
        conn.execute(
            "SELECT u.discord_id, d.persona_id::text FROM user_default_personas d JOIN users u ON u.id = d.user_id"
        ).fetchall()
    )
    pending = {r[0] for r in conn.execute("SELECT conversation_history_id::text FROM pending_memories")}
    history = conn.execute(
        "SELECT id::text, channel_id, guild_id, personality_id::text, persona_id::text, role, content,"
        " created_at FROM conversation_history WHERE personality_id = ANY(%s::uuid[])"
        " ORDER BY channel_id, personality_id, persona_id, created_at,"
        " CASE role WHEN 'user' THEN 0 ELSE 1 END, id",
        (list(personalities),),
    ).fetchall()
    exchanges = _pair_exchanges(history)
    answers = {row[6] for row in history if row[5] == "assistant"}
    return _OldDatabase(
        scale,
        personalities,
        {p.slug for p in everyone.values()},
        personas,
        default_persona,
        exchanges,
        answers,
        pending,
    )


def _first_block(personalities: dict[str, _Personality]) -> dict[str, _Personality]:
    """The generator's first block: slugs numbered 1..PERSONALITIES_PER_BLOCK ("luna-7")."""
    kept = {}
    for key, personality in personalities.items():
        number = personality.slug.rsplit("-", 1)[-1]
        if number.isdecimal() and int(number) <= PERSONALITIES_PER_BLOCK:
            kept[key] = personality
    if not kept:
        raise ValueError("the old database's personalities have no numbered slugs: it is not demo data")
    return kept


def _pair_exchanges(rows: list[tuple]) -> list[_Exchange]:
    """Exchanges of history rows ordered by context, time, user first, id: a run of consecutive
    user messages and the next answer. Empty / whitespace messages are skipped (the bot stored
    none); an answer with no user message before it in its context makes no exchange."""
    exchanges: list[_Exchange] = []
    current: tuple | None = None
    last_user: str | None = None
    for message_id, channel, guild, personality, persona, role, text, at in rows:
        if (channel, personality, persona) != current:
            current, last_user = (channel, personality, persona), None
        if not text or not text.strip():
            continue
        if role == "user":
            last_user = text
        elif role == "assistant" and last_user is not None:
            context = _Context(persona, personality, channel, guild)
            exchanges.append(_Exchange(context, last_user, text, message_id, _ms(at)))
            last_user = None
    return exchanges


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


@dataclass(frozen=True)
class _Folder:
    slug: str
    personality: _Personality
    records: list


def _read_export(export_dir: Path, old: _OldDatabase) -> tuple[list[_Folder], dict]:
    """The export's folders of the kept personalities (by slug) and its sender mappings."""
    mappings_file = export_dir / MAPPINGS_FILE
    if not mappings_file.is_file():
        raise ValueError(f"{export_dir} is not a shapes.inc export: it has no {MAPPINGS_FILE}")
    mappings = json.loads(mappings_file.read_text("utf-8")).get("mappings", {})
    by_slug = {p.slug: p for p in old.personalities.values()}
    folders = []
    for folder in sorted(p for p in export_dir.iterdir() if p.is_dir()):
        if folder.name not in by_slug:
            if folder.name in old.all_slugs:
                continue  # a later block's folder (scale > 1)
            raise ValueError(f"the shapes.inc folder {folder} names no personality of the old database")
        records = json.loads((folder / f"{folder.name}_memories.json").read_text("utf-8"))
        folders.append(_Folder(folder.name, by_slug[folder.name], records))
    return folders, mappings


# --- planning the points --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    collection: str
    id: str | int
    vector: np.ndarray
    payload: dict
    category: str


def _embed(text: str) -> np.ndarray:
    return hash_embedding(text, EMBEDDING_DIMENSIONS)


def era_one_text(username: str, user_text: str, name: str, answer: str) -> str:
    """The bot's live text until 2025-10-27."""
    return f"{ERA_ONE_PREFIX}{username}): {user_text}\n{name}: {answer}"


def era_two_text(speaker: str, user_text: str, name: str, answer: str) -> str:
    """The bot's live text after 2025-10-27 (speaker: the persona's preferred name or name)."""
    return f"{speaker}: {user_text}\n{name}: {answer}"


def shapes_point_id(record_id: str, senders: list, sender: str) -> str | int:
    """The shapes import's point id for `sender`'s copy of a record (see the module docstring)."""
    first = record_id.split("/")[0]
    if len(senders) > 1:
        return str(uuid.uuid5(SHAPES_GROUP_NAMESPACE, f"{first}:{sender}"))
    with contextlib.suppress(ValueError):
        return str(uuid.UUID(first))
    if first.isascii() and first.isdecimal() and int(first) < 2**64:
        return int(first)
    return early_shapes_id(record_id)


def early_shapes_id(record_id: str) -> str:
    """The early ingest's point id for a record."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, record_id))


@dataclass
class _Planner:
    """Draws every point from one random source, category by category, in a fixed order."""

    rng: random.Random
    old: _OldDatabase
    points: list[_Point] = field(default_factory=list)
    planted: Counter = field(default_factory=Counter)
    live: list[_Point] = field(default_factory=list)
    renamed: str | None = None  # personality id
    old_layout: list[str] = field(default_factory=list)  # personality ids
    used_answers: set[str] = field(default_factory=set)

    def plan_all(self, folders: list[_Folder], mappings: dict) -> None:
        kept = self.exchanges_with_points()
        self.pick_personalities(kept)
        self.plan_live(kept)
        self.plan_retries()
        self.plan_qdrant_only()
        self.plan_old_layout()
        self.plan_bad_points()
        shapes_points = self.plan_shapes(folders, mappings)
        self.plan_missing_from_export(shapes_points)

    def add(self, point: _Point) -> _Point:
        self.points.append(point)
        self.planted[point.category] += 1
        return point

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # live points ---------------------------------------------------------------------------------

    def exchanges_with_points(self) -> list[_Exchange]:
        """All exchanges but ~3%: the pending memories' answers and a random few more."""
        exchanges = self.old.exchanges
        target = round(_WITHOUT_POINT_SHARE * len(exchanges))
        pending = [i for i, e in enumerate(exchanges) if e.answer_id in self.old.pending_answers]
        others = [i for i, e in enumerate(exchanges) if e.answer_id not in self.old.pending_answers]
        skipped = set(pending) | set(self.rng.sample(others, max(0, min(len(others), target - len(pending)))))
        self.planted[EXCHANGE_WITHOUT_POINT] = len(skipped)
        return [e for i, e in enumerate(exchanges) if i not in skipped]

    def pick_personalities(self, kept: list[_Exchange]) -> None:
        """The renamed personality (>= 10 live points) and three with old-layout collections."""
        counts = Counter(e.context.personality for e in kept)
        big = sorted(p for p, n in counts.items() if n >= _RENAMED_MIN_POINTS)
        if not big:
            raise ValueError(f"no personality has {_RENAMED_MIN_POINTS} exchanges: too little history")
        self.renamed = self.rng.choice(big)
        rest = sorted(p for p, n in counts.items() if p != self.renamed and n >= 5)
        rest = rest or sorted(p for p in counts if p != self.renamed)
        self.old_layout = self.rng.sample(rest, min(_OLD_LAYOUT_PERSONALITIES, len(rest)))

    def plan_live(self, kept: list[_Exchange]) -> None:
        ordered = sorted(kept, key=lambda e: (e.answer_ms, e.answer_id))
        points = [self.live_point(e, rank / len(ordered)) for rank, e in enumerate(ordered)]
        self.live = self.reembed_renamed(points)
        for point in self.live:
            self.add(point)

    def live_point(self, exchange: _Exchange, rank: float) -> _Point:
        context = exchange.context
        persona = self.old.personas[context.persona]
        name = self.old.personalities[context.personality].name
        era_one = rank < _ERA_TWO_FROM and context.personality != self.renamed
        if era_one:
            text = era_one_text(persona.username, exchange.user_text, name, exchange.answer)
        else:
            text = era_two_text(persona.display, exchange.user_text, name, exchange.answer)
        at = exchange.answer_ms
        if rank < _LATE_BEFORE:
            at += self.rng.randint(*_LATE_MS)
        user_id = persona.discord_id if era_one and rank >= _USER_ID_FROM else None
        payload = self.live_payload(context, text, at, user_id)
        return _Point(f"persona-{context.persona}", self.new_id(), _embed(text), payload, LIVE)

    def live_payload(self, context: _Context, text: str, at: int, user_id: str | None) -> dict:
        """The live writer's payload: absent fields (guildId in DMs, sessionId, userId) left out."""
        payload = {
            "content": text,
            "personaId": context.persona,
            "personalityId": context.personality,
            "personalityName": self.old.personalities[context.personality].name,
            "createdAt": at,
            "channelId": context.channel,
        }
        if context.guild is not None:
            payload["guildId"] = context.guild
        payload["canonScope"] = "personal"
        payload["summaryType"] = "conversation"
        if user_id is not None:
            payload["userId"] = user_id
        return payload

    def reembed_renamed(self, points: list[_Point]) -> list[_Point]:
        """The renamed personality's vectors: its text under an old name, newlines as spaces, the old
        name taking more words until every vector is off its content's embedding."""
        name = self.old.personalities[self.renamed].name
        renamed = [i for i, p in enumerate(points) if p.payload["personalityId"] == self.renamed]
        others = sorted({n for n in content.PERSONALITY_NAMES if n not in name and name not in n})
        self.rng.shuffle(others)
        for words in range(1, len(others) + 1):
            old_name = " ".join(others[:words])
            vectors = {
                i: _embed(points[i].payload["content"].replace("\n", " ").replace(name, old_name))
                for i in renamed
            }
            if all(cosine(v, points[i].vector) < RENAMED_MAX_COSINE for i, v in vectors.items()):
                break
        else:
            raise RuntimeError(f"no old name moves the points of {name!r} below cosine {RENAMED_MAX_COSINE}")
        self.planted[RENAMED_REEMBEDDED] = len(renamed)
        return [replace(p, vector=vectors[i]) if i in vectors else p for i, p in enumerate(points)]

    def plan_retries(self) -> None:
        """~1% of live points written twice: a new id, createdAt 1-5 s later (renamed ones not)."""
        eligible = [p for p in self.live if p.payload["personalityId"] != self.renamed]
        for point in self.rng.sample(eligible, max(1, round(_RETRY_SHARE * len(self.live)))):
            payload = {
                **point.payload,
                "createdAt": point.payload["createdAt"] + self.rng.randint(*_RETRY_LATER_MS),
            }
            self.add(_Point(point.collection, self.new_id(), point.vector, payload, LIVE_RETRY))

    # made-up live-format points ----------------------------------------------------------------------

    def contexts(self, personality: str | None = None) -> list[_Context]:
        """Contexts that have live points (of `personality` when given), in a stable order."""
        found = {
            _Context(
                p.payload["personaId"],
                p.payload["personalityId"],
                p.payload["channelId"],
                p.payload.get("guildId"),
            )
            for p in self.live
            if personality is None or p.payload["personalityId"] == personality
        }
        return sorted(found, key=lambda c: (c.persona, c.personality, c.channel))

    @functools.cached_property
    def answer_times(self) -> list[int]:
        return sorted(e.answer_ms for e in self.old.exchanges)

    def time_range(self, era: int) -> tuple[int, int]:
        """The history's answer times of the older (era 1) or newer (era 2) half."""
        times = self.answer_times
        middle = times[len(times) // 2]
        return (times[0], middle) if era == 1 else (middle, times[-1])

    def made_up_answer(self) -> str:
        """An answer that is in no exchange of the history (nor in an earlier made-up point)."""
        while True:
            answer = content.assistant_message(self.rng)
            if answer not in self.old.answers and answer not in self.used_answers:
                self.used_answers.add(answer)
                return answer

    def made_up_point(self, context: _Context, category: str, *, era: int, user_id: bool = False) -> _Point:
        """A live-format point whose exchange is not in the history."""
        persona = self.old.personas[context.persona]
        name = self.old.personalities[context.personality].name
        user_text = content.user_message(self.rng)
        answer = self.made_up_answer()
        if era == 1:
            text = era_one_text(persona.username, user_text, name, answer)
        else:
            text = era_two_text(persona.display, user_text, name, answer)
        at = self.rng.randint(*self.time_range(era))
        payload = self.live_payload(context, text, at, persona.discord_id if user_id else None)
        return _Point(f"persona-{context.persona}", self.new_id(), _embed(text), payload, category)

    def plan_qdrant_only(self) -> None:
        contexts = self.contexts()
        for _ in range(_QDRANT_ONLY_EXCHANGES):
            self.add(self.made_up_point(self.rng.choice(contexts), QDRANT_ONLY_EXCHANGE, era=2))

    # the layout before 2025-10-23 --------------------------------------------------------------------

    def plan_old_layout(self) -> None:
        for k, personality in enumerate(self.old_layout):
            collection = f"personality-{personality}"
            self.plan_copies(personality, collection)
            contexts = self.contexts(personality)
            if k < _OLD_LAYOUT_REFUSALS:
                self.add(self.refusal_point(contexts, collection, REFUSALS[k % len(REFUSALS)]))
            if k < _OLD_LAYOUT_NO_USER_ID:
                point = self.made_up_point(self.rng.choice(contexts), OLD_LAYOUT_NO_USER_ID, era=1)
                self.add(replace(point, collection=collection))
            if k < _OLD_LAYOUT_ONLY:
                point = self.made_up_point(self.rng.choice(contexts), OLD_LAYOUT_ONLY, era=1, user_id=True)
                self.add(replace(point, collection=collection))

    def plan_copies(self, personality: str, collection: str) -> None:
        """~20% of the personality's live points, same id, vector and payload (userId added), drawn
        from its era-1 points (the layout was left behind on 2025-10-23) while there are enough."""
        own = [p for p in self.live if p.payload["personalityId"] == personality]
        size = max(1, round(_OLD_LAYOUT_COPY_SHARE * len(own)))
        older = [p for p in own if p.payload["content"].startswith(ERA_ONE_PREFIX)]
        for point in self.rng.sample(older if len(older) >= size else own, size):
            persona = self.old.personas[point.payload["personaId"]]
            payload = {**point.payload, "userId": point.payload.get("userId", persona.discord_id)}
            self.add(_Point(collection, point.id, point.vector, payload, OLD_LAYOUT_COPY))

    def refusal_point(self, contexts: list[_Context], collection: str, refusal: str) -> _Point:
        """Refusal spam: an era-1 point whose first 50 characters hold the refusal (a short user line:
        `Hello`, as the bot wrote for an empty message); era 2 when the username is too long."""
        for context in self.rng.sample(contexts, len(contexts)):
            persona = self.old.personas[context.persona]
            name = self.old.personalities[context.personality].name
            for text in (
                era_one_text(persona.username, "Hello", name, refusal),
                era_two_text(persona.display, "Hello", name, refusal),
            ):
                if is_refusal(text):
                    at = self.rng.randint(*self.time_range(1))
                    payload = self.live_payload(context, text, at, persona.discord_id)
                    return _Point(collection, self.new_id(), _embed(text), payload, OLD_LAYOUT_REFUSAL)
        raise RuntimeError(f"no context of {collection} fits a refusal in {REFUSAL_WINDOW} characters")

    # bad points ----------------------------------------------------------------------------------------

    def plan_bad_points(self) -> None:
        contexts = self.contexts()
        for kind in BAD_KINDS:
            point = self.made_up_point(self.rng.choice(contexts), kind, era=2)
            self.add(self.spoil(point, kind))

    def spoil(self, point: _Point, kind: str) -> _Point:
        """The one thing wrong with a bad point; it is a valid-looking live point otherwise."""
        payload = dict(point.payload)
        if kind == BAD_ZERO_VECTOR:
            return replace(point, vector=np.zeros(EMBEDDING_DIMENSIONS, dtype=np.float32))
        if kind == BAD_CONTENT_MISSING:
            del payload["content"]
        elif kind == BAD_CONTENT_NOT_TEXT:
            payload["content"] = 12345
        elif kind == BAD_CONTENT_EMPTY:
            payload["content"] = ""
            return replace(point, payload=payload, vector=_embed(""))
        elif kind == BAD_UNKNOWN_PERSONALITY:
            payload["personalityId"] = self.new_id()
        elif kind == BAD_UNKNOWN_PERSONA:
            persona = self.new_id()
            payload["personaId"] = persona
            return replace(point, payload=payload, collection=f"persona-{persona}")
        elif kind == BAD_CREATED_AT_MISSING:
            del payload["createdAt"]
        elif kind == BAD_CREATED_AT_ABSURD:
            payload["createdAt"] = YEAR_3000_MS
        elif kind == CREATED_AT_IN_SECONDS:
            payload["createdAt"] = payload["createdAt"] // 1000
        elif kind == BAD_WRONG_SIZE:
            vector = np.array([0.6, 0.8, 0.0], dtype=np.float32)
            return replace(point, vector=vector, collection=WRONG_SIZE_COLLECTION)
        elif kind == BAD_PERSONALITY_NOT_UUID:
            payload["personalityId"] = "not-a-uuid"
        return replace(point, payload=payload)

    # shapes.inc ----------------------------------------------------------------------------------------

    def plan_shapes(self, folders: list[_Folder], mappings: dict) -> list[_Point]:
        """One point per (record, sender), in export order; ~2% of single-sender records under the
        early ingest's id."""
        written = []
        for folder in folders:
            for record in folder.records:
                if not _usable(record):
                    self.planted[SHAPES_RECORD_UNUSABLE] += 1
                    continue
                vector = _embed(record["result"])
                early = (
                    len(record["senders"]) == 1
                    and not record.get("deleted")
                    and self.rng.random() < _EARLY_ID_SHARE
                )
                for sender in record["senders"]:
                    point = self.shapes_point(folder, record, sender, mappings, vector, early)
                    written.append(self.add(point))
                    if point.category == SHAPES and record.get("deleted"):
                        self.planted[SHAPES_DELETED] += 1
        return written

    def shapes_point(
        self, folder: _Folder, record: dict, sender: str, mappings: dict, vector: np.ndarray, early: bool
    ) -> _Point:
        persona = self.persona_of_sender(sender, mappings)
        metadata = record["metadata"]
        payload = {
            "content": record["result"],
            "personaId": persona or f"legacy-{sender}",
            "personalityId": folder.personality.id,
            "personalityName": folder.personality.name,
            "createdAt": math.floor(metadata["created_at"] * 1000),
        }
        for key, source in (("channelId", "discord_channel_id"), ("guildId", "discord_guild_id")):
            if metadata.get(source) is not None:
                payload[key] = str(metadata[source])
        payload["canonScope"] = "personal" if persona else "legacy"
        payload["summaryType"] = record.get("summary_type")
        collection = f"persona-{persona}" if persona else f"persona-legacy-{sender}"
        if early:
            return _Point(collection, early_shapes_id(record["id"]), vector, payload, SHAPES_EARLY_ID)
        point_id = shapes_point_id(record["id"], record["senders"], sender)
        return _Point(collection, point_id, vector, payload, SHAPES)

    def persona_of_sender(self, sender: str, mappings: dict) -> str | None:
        """shapes user -> discord id (uuid-mappings.json) -> user -> default persona; None: unmapped."""
        mapping = mappings.get(sender)
        discord_id = mapping.get("discordId") if isinstance(mapping, dict) else None
        return self.old.default_persona.get(discord_id) if discord_id else None

    def plan_missing_from_export(self, shapes_points: list[_Point]) -> None:
        """A few made-up shapes points (text in no record), in mapped and legacy collections."""
        results = {p.payload["content"] for p in shapes_points}
        by_collection: dict[str, list[_Point]] = defaultdict(list)
        for point in shapes_points:
            by_collection[point.collection].append(point)
        legacy = sorted(c for c in by_collection if c.startswith("persona-legacy-"))
        mapped = sorted(c for c in by_collection if c not in legacy)
        chosen = self.rng.sample(mapped, min(3, len(mapped))) + self.rng.sample(legacy, min(2, len(legacy)))
        while len(chosen) < _MISSING_FROM_EXPORT:
            chosen.append(self.rng.choice(sorted(by_collection)))
        for collection in chosen:
            template = self.rng.choice(by_collection[collection])
            self.add(self.missing_point(template, results))

    def missing_point(self, template: _Point, results: set[str]) -> _Point:
        at = template.payload["createdAt"] + self.rng.randint(_DAY_MS // 24, 3 * _DAY_MS)
        day = export_date(at)  # the export's own date format
        while True:
            text = content.memory_text(
                self.rng, template.payload["personalityName"], self.rng.choice(content.NAMES), day
            )
            if text not in results:
                results.add(text)
                break
        payload = {**template.payload, "content": text, "createdAt": at}
        return _Point(template.collection, self.new_id(), _embed(text), payload, SHAPES_MISSING_FROM_EXPORT)

    def check_totals(self) -> None:
        """Each point is in exactly one category; the subsets and non-points are counted apart."""
        points = sum(n for name, n in self.planted.items() if name not in SUBSET_CATEGORIES + NOT_POINTS)
        if points != len(self.points):
            raise RuntimeError(f"planted categories count {points} points, the plan has {len(self.points)}")
        keys = Counter((p.collection, p.id) for p in self.points)
        repeated = [key for key, n in keys.items() if n > 1]
        if repeated:
            raise RuntimeError(f"{len(repeated)} point ids repeat within a collection, e.g. {repeated[0]}")


def _usable(record: dict) -> bool:
    """A record the import could embed: a non-blank text result, an id, senders and a time."""
    result = record.get("result")
    metadata = record.get("metadata")
    return (
        isinstance(result, str)
        and bool(result.strip())
        and isinstance(record.get("id"), str)
        and bool(record.get("senders"))
        and isinstance(metadata, dict)
        and isinstance(metadata.get("created_at"), int | float)
    )


# --- writing ----------------------------------------------------------------------------------------


def _write_store(folder: Path, points: list[_Point]) -> int:
    """Write the points, a collection at a time in batches; return the number of collections."""
    by_collection: dict[str, list[_Point]] = defaultdict(list)
    for point in points:
        by_collection[point.collection].append(point)
    client = QdrantClient(path=str(folder))
    try:
        for name in sorted(by_collection):
            _write_collection(client, name, by_collection[name])
    finally:
        client.close()
    return len(by_collection)


def _write_collection(client: QdrantClient, name: str, points: list[_Point]) -> None:
    size = len(points[0].vector)
    client.create_collection(
        name, vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE)
    )
    _skip_fsync(client, name)
    for batch in _batches(points, BATCH_SIZE):
        client.upsert(
            name,
            points=[models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in batch],
        )
    written = client.count(name, exact=True).count
    if written != len(points):
        raise RuntimeError(f"collection {name}: {written} points written, {len(points)} planned")


def _skip_fsync(client: QdrantClient, name: str) -> None:
    """Local mode commits (and syncs) its sqlite file once per point: ~10 ms each on a busy disk.
    The store is written in a staging folder that only becomes the store once complete, so a
    crash cannot leave a half-written store behind: the syncs buy nothing here. Private API of
    qdrant-client 1.20: when it moves, the store is written as before, only slower."""
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        connection = client._client.collections[name].storage.storage
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA journal_mode = MEMORY")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
