"""The HNSW indexes on `memories.embedding` (docs/design.md §5) and the settings their scans need.

- `idx_memories_embedding`, over every memory, as the migration plan asks (the bot's later
  migrations drop it by that name): built after the bulk load with memory sized to the table,
  dropped before a load that would have to maintain it row by row, left in place by incremental
  runs. Under the bot's persona filter it is a trap (a scan finds ef_search candidates, then
  filters them away). The planner takes it only for a persona holding much of the table, so with
  no persona index the database gets EXACT_SETTINGS, which price that walk out (the plan check
  says so on the data migrated). The bot's query reads a persona's rows exactly through a B-tree
  (the bot's `memories_persona_id_idx`, the project's persona-personality-time one): the exact
  answer, 15-50 ms p50 for the largest personas at 100x (benchmarks/README.md).
- only when asked (`persona_index_min_rows` > 0; approximate, so off by default): one partial HNSW
  index per scope with at least that many memories: a persona (`WHERE persona_id = '<uuid>'`), or
  a persona with one personality (`… AND personality_id = '<uuid>'`), as the bot's query filters
  when it has a personality. The query for that scope walks a graph of its memories only, 3-7 ms at
  100x where reading them all exactly costs ~1.5-6 µs a row, at recall@15 0.987-0.997.
- with them, database settings (`ALTER DATABASE … SET`, seen by every new session, the bot's
  included): `hnsw.iterative_scan = strict_order`, so a persona index under a personality or cutoff
  filter keeps walking until k rows qualify, in order, instead of returning fewer; `hnsw.ef_search`;
  `hnsw.max_scan_tuples` at least the largest indexed scope, so such a walk may cover it all.
  Without them the persona indexes would lose rows: when the role may not set them, none is built.

Before the global index is built over a fresh load (nobody else connected), the table is rewritten
in (persona, personality, created_at) order (`order_rows_by_scope`, a CLUSTER): a scope's rows then
sit on adjacent pages, which PostgreSQL reads several at a time, and the exact read of the largest
personas at 100x drops from 15.9 / 46.9 to 11.3 / 19.5 ms p50 / p95 (104 s for 10 GB). Done before
the HNSW build, so that the rewrite does not build the graph twice. After a load the table is
vacuumed and analyzed (`vacuum_for_search`) so the planner knows its size.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import psutil
import psycopg
from psycopg import sql

from tinybot_migration.lib.database import DatabaseConnectionError
from tinybot_migration.lib.postgres import VECTOR_INDEX_LOCK, Connect, advisory_lock
from tinybot_migration.lib.progress import Advanced, Notice, Progress, quiet, rate
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS, PERSONA_PERSONALITY_INDEX

INDEX_NAME = "idx_memories_embedding"
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 64
# The build's memory cap for a server elsewhere (its memory is not known here); 0 means "size it
# from this machine's available memory" for a server running here. A graph that outgrows
# maintenance_work_mem is finished on disk, page by page: 5.7x slower at 40k vectors with a quarter
# of the memory it wanted (benchmarks/README.md, "The HNSW build").
DEFAULT_MAX_BUILD_MEMORY_MB = 2048
AUTO_BUILD_MEMORY = 0
LOCAL_SERVER_MEMORY_SHARE = 0.5  # of this machine's available memory, for a server running here
MIN_BUILD_MEMORY_MB = 64  # PostgreSQL's default maintenance_work_mem
GRAPH_OUTGREW_MEMORY = "hnsw graph no longer fits into maintenance_work_mem"
# A load adding at least this share of the table's rows (and at least BULK_LOAD_MIN_ROWS) drops
# the index first: inserting into HNSW row by row costs a few times what building over all rows
# costs per row, so past about half the table the rebuild is cheaper.
BULK_LOAD_SHARE = 0.5
BULK_LOAD_MIN_ROWS = 10_000
# Off by default: the bot's query must return exactly the rows an exact scan returns, and an HNSW
# walk does not (recall@15 0.987-0.997 a bucket at 100x, benchmarks/README.md). A deployment that
# trades that for speed sets persona_index_min_rows, e.g. to APPROXIMATE_PERSONA_INDEX_MIN_ROWS:
# from there reading a scope's rows exactly costs more than ~5 ms at 100x (1.5 µs a row in cache, up
# to 6 µs from the OS's) while its index answers in 3-7 ms.
DEFAULT_PERSONA_INDEX_MIN_ROWS = 0
APPROXIMATE_PERSONA_INDEX_MIN_ROWS = 1_000
PERSONA_INDEX_PREFIX = "tinybot_migration_hnsw_"
# Candidates a persona index's scan starts from (pgvector's default is 40): recall@15 reached 1.000
# at 100 on clustered vectors of personas up to 6,400 memories (benchmarks/README.md).
DEFAULT_EF_SEARCH = 100
PGVECTOR_MAX_SCAN_TUPLES = 20_000  # pgvector's default hnsw.max_scan_tuples
ITERATIVE_SCAN = "strict_order"
# How often a build's progress is read from pg_stat_progress_create_index (when it can be watched).
BUILD_PROGRESS_SECONDS = 2.0


@dataclass(frozen=True)
class IndexState:
    exists: bool
    valid: bool = False
    size_bytes: int = 0
    definition: str = ""


@dataclass(frozen=True)
class IndexBuild:
    action: str  # "built", "rebuilt (was invalid)" or "left in place"
    rows: int
    seconds: float
    state: IndexState
    maintenance_work_mem_mb: int = 0
    concurrently: bool = False
    wanted_memory_mb: int = 0  # what the whole graph needs in memory
    scope_order_seconds: float | None = None  # the rewrite in scope order before the build; None: not done
    graph_fit_in_memory: bool = True  # False: PostgreSQL finished the build on disk (its NOTICE)
    parallel_workers: int = 0  # max_parallel_maintenance_workers of the build's session


def index_state(conn: psycopg.Connection) -> IndexState:
    row = conn.execute(
        "SELECT i.indisvalid, pg_relation_size(i.indexrelid), pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s AND c.relnamespace = 'public'::regnamespace",
        (INDEX_NAME,),
    ).fetchone()
    return IndexState(False) if row is None else IndexState(True, row[0], row[1], row[2])


def graph_memory_mb(rows: int, m: int, dimensions: int = EMBEDDING_DIMENSIONS) -> int:
    """What building over `rows` vectors in memory needs: the vector, the neighbour lists of layer
    0 (2·m item pointers) and their overhead, with a margin."""
    per_row = dimensions * 4 + 2 * m * 8 + 96
    return int(rows * per_row * 1.2 / 2**20) + 1


def build_memory_mb(rows: int, m: int, max_mb: int, dimensions: int = EMBEDDING_DIMENSIONS) -> int:
    """maintenance_work_mem for the build: the graph's memory, capped at `max_mb`."""
    return max(MIN_BUILD_MEMORY_MB, min(max_mb, graph_memory_mb(rows, m, dimensions)))


def build_memory_cap_mb(conn: psycopg.Connection, max_build_memory_mb: int) -> int:
    """The most the build may take: `max_build_memory_mb`, or for AUTO_BUILD_MEMORY a share of this
    machine's available memory when the server runs here (a unix socket or a loopback host), else
    DEFAULT_MAX_BUILD_MEMORY_MB."""
    if max_build_memory_mb != AUTO_BUILD_MEMORY:
        return max_build_memory_mb
    host = conn.info.host or ""
    if host.startswith("/") or host in ("localhost", "127.0.0.1", "::1"):
        return max(
            MIN_BUILD_MEMORY_MB, int(psutil.virtual_memory().available * LOCAL_SERVER_MEMORY_SHARE / 2**20)
        )
    return DEFAULT_MAX_BUILD_MEMORY_MB


def other_sessions(conn: psycopg.Connection) -> int:
    """Client sessions on this database besides ours: the table is serving someone else."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchone()[0]


def ensure_vector_index(
    conn: psycopg.Connection,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    max_build_memory_mb: int = AUTO_BUILD_MEMORY,
    log: Progress | None = None,
    watch: Connect | None = None,
) -> IndexBuild:
    """Build the index unless a valid one exists (an invalid one, left by an interrupted concurrent
    build, is dropped first). `conn` must be in autocommit mode. With `watch` (a second connection to
    the same database) the build reports the memories it has loaded as it goes."""
    log = log or quiet
    with vector_index_lock(conn, log):
        return _ensure_vector_index(conn, m, ef_construction, max_build_memory_mb, log, watch)


BUILD_ELSEWHERE = f"vector index: another run is building, dropping or measuring {INDEX_NAME}; waiting for it"


def vector_index_lock(conn: psycopg.Connection, log: Progress | None = None) -> AbstractContextManager[None]:
    """Held while the index is built, dropped or measured: one run at a time (it nests in a session)."""
    return advisory_lock(conn, VECTOR_INDEX_LOCK, BUILD_ELSEWHERE, log or quiet)


def _ensure_vector_index(
    conn: psycopg.Connection,
    m: int,
    ef_construction: int,
    max_build_memory_mb: int,
    log: Progress,
    watch: Connect | None,
) -> IndexBuild:
    rows = conn.execute("SELECT count(*) FROM memories WHERE embedding IS NOT NULL").fetchone()[0]
    state = index_state(conn)
    if state.exists and state.valid:
        return IndexBuild("left in place", rows, 0.0, state)
    action = "rebuilt (was invalid)" if state.exists else "built"
    if state.exists:
        _drop_index(conn, INDEX_NAME, concurrently=True)
    wanted_mb = graph_memory_mb(rows, m)
    memory_mb = build_memory_mb(rows, m, build_memory_cap_mb(conn, max_build_memory_mb))
    workers = int(conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0])
    concurrently = other_sessions(conn) > 0
    ordered = None if concurrently else order_rows_by_scope(conn, memory_mb, log)
    log(
        f"vector index: building {INDEX_NAME} over {rows:,} memories (m={m}, ef_construction={ef_construction}, "
        f"maintenance_work_mem {memory_mb:,} MB, {workers} parallel workers"
        f"{', concurrently: the table serves other sessions' if concurrently else ''})"
    )
    if memory_mb < wanted_mb:
        log(
            Notice(
                f"vector index: the graph needs about {wanted_mb:,} MB but the build may take {memory_mb:,} MB: "
                "PostgreSQL finishes it on disk, several times slower (raise max_build_memory_mb if the "
                "database server has the memory)"
            )
        )
    seconds, fit = build_hnsw(
        conn,
        INDEX_NAME,
        "",
        m,
        ef_construction,
        memory_mb,
        concurrently,
        lambda: _build_progress(conn.info.backend_pid, rows, watch, log),
    )
    return IndexBuild(
        action,
        rows,
        seconds,
        index_state(conn),
        maintenance_work_mem_mb=memory_mb,
        concurrently=concurrently,
        wanted_memory_mb=wanted_mb,
        scope_order_seconds=ordered,
        graph_fit_in_memory=fit,
        parallel_workers=workers,
    )


SCOPE_ORDER_INDEX = PERSONA_PERSONALITY_INDEX[1].name


def order_rows_by_scope(
    conn: psycopg.Connection, memory_mb: int, log: Progress | None = None
) -> float | None:
    """Rewrite memories in (persona, personality, created_at) order: CLUSTER on the project's
    B-tree, whose mark is then cleared (the bot's catalog keeps no trace of it). Only while nobody
    else uses the table (CLUSTER locks it whole) and before the HNSW build (it would rebuild the
    graph). Returns the seconds, or None when it was not done: the B-tree is missing, the server has
    no room for the copy or the role does not own the table (the exact path is as right, only
    slower; a notice says so)."""
    log = log or quiet
    if conn.execute("SELECT to_regclass(%s)", (f"public.{SCOPE_ORDER_INDEX}",)).fetchone()[0] is None:
        return None
    log(f"vector index: rewriting memories in persona, personality, time order ({SCOPE_ORDER_INDEX})")
    started = time.perf_counter()
    try:
        with maintenance_work_mem(conn, memory_mb):
            conn.execute(sql.SQL("CLUSTER memories USING {}").format(sql.Identifier(SCOPE_ORDER_INDEX)))
        conn.execute("ALTER TABLE memories SET WITHOUT CLUSTER")
    except (psycopg.errors.DiskFull, psycopg.errors.InsufficientPrivilege) as error:
        log(
            Notice(
                f"vector index: memories left in their load order ({error.diag.message_primary}): the bot's query "
                "is as exact, and slower for large personas"
            )
        )
        return None
    return time.perf_counter() - started


@contextmanager
def maintenance_work_mem(conn: psycopg.Connection, memory_mb: int) -> Iterator[None]:
    """The session's maintenance_work_mem at `memory_mb` for the block, reset after it."""
    conn.execute(f"SET maintenance_work_mem = '{int(memory_mb)}MB'")
    try:
        yield
    finally:
        conn.execute("RESET maintenance_work_mem")


def build_hnsw(
    conn: psycopg.Connection,
    name: str,
    where: str,
    m: int,
    ef_construction: int,
    memory_mb: int,
    concurrently: bool,
    watching: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> tuple[float, bool]:
    """CREATE INDEX `name` (HNSW, cosine) on memories.embedding, `where` a partial index's predicate
    (already quoted) or "", with maintenance_work_mem `memory_mb`. Returns the seconds and whether
    the graph fit in memory (PostgreSQL says so in a NOTICE when it did not)."""
    outgrew: list[str] = []

    def note(diagnostic) -> None:
        if (diagnostic.message_primary or "").startswith(GRAPH_OUTGREW_MEMORY):
            outgrew.append(diagnostic.message_primary)

    started = time.perf_counter()
    conn.add_notice_handler(note)
    try:
        with maintenance_work_mem(conn, memory_mb), watching():
            conn.execute(
                f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}{name} ON memories"
                f" USING hnsw (embedding vector_cosine_ops) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
                + (f" WHERE {where}" if where else "")
            )
    finally:
        conn.remove_notice_handler(note)
    return time.perf_counter() - started, not outgrew


@contextmanager
def _build_progress(backend_pid: int, rows: int, watch: Connect | None, log: Progress) -> Iterator[None]:
    """While the block builds the index in session `backend_pid`, report from a second connection
    how many memories the build has loaded (pgvector fills tuples_done while it loads them)."""
    if watch is None:
        yield
        return
    done = threading.Event()
    started = time.perf_counter()

    def report() -> None:
        with watch() as conn:
            while not done.wait(BUILD_PROGRESS_SECONDS):
                row = conn.execute(
                    "SELECT tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = %s",
                    (backend_pid,),
                ).fetchone()
                conn.rollback()  # activity views are read once per transaction
                if row is not None and row[0]:
                    loaded = int(row[0])
                    total = int(row[1]) or rows
                    log(
                        Advanced(
                            "vector index",
                            loaded,
                            total,
                            "memories indexed",
                            rate(loaded, time.perf_counter() - started),
                        )
                    )

    def report_while_reachable() -> None:
        try:
            report()
        except (psycopg.Error, DatabaseConnectionError) as error:  # the build goes on, unreported
            log(f"vector index: no build progress ({type(error).__name__})")

    watcher = threading.Thread(target=report_while_reachable, name="vector-index-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def vacuum_for_search(conn: psycopg.Connection) -> float:
    """VACUUM (ANALYZE) memories: fresh statistics for the planner after a load, and pages marked
    all-visible for any index-only scan. Cheap when nothing changed: pages already all-visible are
    skipped. Returns the seconds."""
    started = time.perf_counter()
    conn.execute("VACUUM (ANALYZE) memories")
    return time.perf_counter() - started


def drop_for_bulk_load(
    conn: psycopg.Connection,
    incoming: int,
    log: Progress | None = None,
    share: float | None = None,
    min_rows: int | None = None,
) -> bool:
    """Drop the index before writing `incoming` memories when that many would cost more to maintain
    row by row than to build again after (`memory_vector_index` rebuilds it; a caller that rebuilds
    it at once may pass its own `share` and `min_rows`). Returns whether it was dropped."""
    share = BULK_LOAD_SHARE if share is None else share
    min_rows = BULK_LOAD_MIN_ROWS if min_rows is None else min_rows
    if incoming < min_rows or not index_state(conn).exists:
        return False
    with vector_index_lock(conn, log):
        return _drop_for_bulk_load(conn, incoming, share, min_rows, log)


def _drop_for_bulk_load(
    conn: psycopg.Connection, incoming: int, share: float, min_rows: int, log: Progress | None
) -> bool:
    if not index_state(conn).exists:
        return False
    existing = conn.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'memories'::regclass"
    ).fetchone()[0]
    if incoming < share * existing:
        return False
    (log or quiet)(
        f"vector index: dropping {INDEX_NAME} and the persona indexes before writing {incoming:,} memories "
        f"into about {existing:,}; memory_vector_index builds them again after the load"
    )
    _drop_index(conn, INDEX_NAME, concurrently=False)
    _drop_persona_indexes(conn)
    return True


def _drop_persona_indexes(conn: psycopg.Connection) -> None:
    for index in persona_indexes(conn).values():
        _drop_index(conn, index.name, concurrently=False)


# --- the persona indexes and the search settings ----------------------------------------------------


class SearchSettingsRefused(Exception):
    """The role may not set the database's search settings (it neither owns the database nor is a
    superuser); the message says what to run as the owner."""


# What a persona index covers: a persona's memories (personality None), or the memories of one
# persona with one personality (the bot's query filters by both when it is given a personality).
Scope = tuple[uuid.UUID, uuid.UUID | None]


@dataclass(frozen=True)
class PersonaIndex:
    name: str
    scope: Scope
    valid: bool
    size_bytes: int


@dataclass
class PersonaIndexes:
    """What `ensure_persona_indexes` found and did."""

    min_rows: int
    built: dict[Scope, int] = field(default_factory=dict)  # scope -> memories indexed
    kept: int = 0
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    size_bytes: int = 0  # of every persona index after the run
    settings: dict[str, str] = field(default_factory=dict)  # the database's, as a new session sees them
    refused: str = ""  # why none is built (the settings could not be set)

    @property
    def count(self) -> int:
        return len(self.built) + self.kept


def persona_index_name(persona_id: uuid.UUID, personality_id: uuid.UUID | None = None) -> str:
    """The persona's hex, or for a persona with one personality a UUID of the two (a name holds 63
    characters): the scope itself is read back from the index's predicate."""
    key = persona_id if personality_id is None else uuid.uuid5(persona_id, str(personality_id))
    return f"{PERSONA_INDEX_PREFIX}{key.hex}"


def _predicate(scope: Scope) -> sql.Composable:
    persona, personality = scope
    where = sql.SQL("persona_id = {}").format(sql.Literal(str(persona)))
    if personality is None:
        return where
    return sql.SQL("{} AND personality_id = {}").format(where, sql.Literal(str(personality)))


_SCOPE_IN_PREDICATE = re.compile(r"(persona|personality)_id = '([0-9a-f-]{36})'::uuid")


def persona_indexes(conn: psycopg.Connection) -> dict[Scope, PersonaIndex]:
    """The persona indexes on memories, by scope (read from each index's predicate)."""
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid, pg_relation_size(c.oid), pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'public.memories'::regclass"
        " AND starts_with(c.relname, %s)",
        (PERSONA_INDEX_PREFIX,),
    ).fetchall()
    found = {}
    for name, valid, size, predicate in rows:
        ids = {column: uuid.UUID(value) for column, value in _SCOPE_IN_PREDICATE.findall(predicate or "")}
        if "persona" in ids:
            scope = (ids["persona"], ids.get("personality"))
            found[scope] = PersonaIndex(name, scope, valid, size)
    return found


def large_scopes(conn: psycopg.Connection, min_rows: int) -> dict[Scope, int]:
    """Memories per persona and per persona with one personality, for those with at least `min_rows`."""
    rows = conn.execute(
        "SELECT persona_id, personality_id, count(*) FROM memories WHERE persona_id IS NOT NULL"
        " GROUP BY GROUPING SETS ((persona_id), (persona_id, personality_id)) HAVING count(*) >= %s",
        (max(1, min_rows),),
    ).fetchall()
    return {(persona, personality): rows for persona, personality, rows in rows}


def database_settings(conn: psycopg.Connection) -> dict[str, str]:
    """The settings the database gives every new session (`ALTER DATABASE … SET`)."""
    row = conn.execute(
        "SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0"
        " AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    return dict(entry.split("=", 1) for entry in (row[0] if row else []))


# pgvector prices an HNSW scan by the candidates it starts from: at its largest ef_search the
# global index costs more than reading a persona's rows exactly, even for a persona holding 80% of
# a 10,000-row table (which the planner otherwise walks it for, 20 of 20 queries); and a scan that
# is still chosen keeps walking (strict order) until k rows qualify.
EXACT_SETTINGS = {"hnsw.iterative_scan": ITERATIVE_SCAN, "hnsw.ef_search": "1000"}


def _keep_the_global_index_out(conn: psycopg.Connection, log: Progress) -> dict[str, str]:
    """With no persona index, the database's settings that keep the bot's query off the global
    index (EXACT_SETTINGS). Returns the database's settings; a role that may not set them gets a
    notice (the plan check then shows whether a plan takes the index)."""
    try:
        return apply_search_settings(conn, EXACT_SETTINGS)
    except SearchSettingsRefused as refused:
        log(
            Notice(
                f"vector index: the bot's query may walk {INDEX_NAME} for a persona holding much of the table: {refused}"
            )
        )
        return database_settings(conn)


def search_settings(ef_search: int, largest_indexed: int) -> dict[str, str]:
    """What the persona indexes need from every session: see the module docstring."""
    return {
        "hnsw.iterative_scan": ITERATIVE_SCAN,
        "hnsw.ef_search": str(int(ef_search)),
        "hnsw.max_scan_tuples": str(max(PGVECTOR_MAX_SCAN_TUPLES, int(largest_indexed))),
    }


def apply_search_settings(conn: psycopg.Connection, wanted: dict[str, str]) -> dict[str, str]:
    """Set `wanted` on the database where it differs from what the database has (nothing to do, no
    privilege needed, when an owner has set them already). Returns the database's settings after.
    Raises SearchSettingsRefused when the role may not."""
    have = database_settings(conn)
    changes = {name: value for name, value in wanted.items() if have.get(name) != value}
    if not changes:
        return have
    conn.execute("SELECT '[1]'::vector")  # loads pgvector, whose hnsw.* settings ALTER DATABASE checks
    database = conn.info.dbname
    statements = [
        sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(database), sql.SQL(name), sql.Literal(value)
        )
        for name, value in changes.items()
    ]
    try:
        for statement in statements:
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as error:
        wanted_sql = "; ".join(s.as_string(conn) for s in statements)
        raise SearchSettingsRefused(
            f"the role {conn.info.user!r} may not set database {database!r}'s search settings "
            f"({error.diag.message_primary}); as its owner run: {wanted_sql}"
        ) from None
    return database_settings(conn)


def ensure_persona_indexes(
    conn: psycopg.Connection,
    min_rows: int = DEFAULT_PERSONA_INDEX_MIN_ROWS,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef_search: int = DEFAULT_EF_SEARCH,
    max_build_memory_mb: int = AUTO_BUILD_MEMORY,
    log: Progress | None = None,
) -> PersonaIndexes:
    """A valid partial index for every scope (a persona, or a persona with one personality) with at
    least `min_rows` memories, the search settings they need on the database, and no index left for
    a scope that fell below half of `min_rows` (between the two, an index is kept and none is built:
    a scope near the line does not flip). Only what is missing is built. `conn` must be in
    autocommit mode; `min_rows` 0 (the default) turns the persona indexes off (each one dropped).
    With no persona index left, the database gets EXACT_SETTINGS instead."""
    log = log or quiet
    with vector_index_lock(conn, log):
        return _ensure_persona_indexes(
            conn, min_rows, m, ef_construction, ef_search, max_build_memory_mb, log
        )


def _ensure_persona_indexes(
    conn: psycopg.Connection,
    min_rows: int,
    m: int,
    ef_construction: int,
    ef_search: int,
    max_build_memory_mb: int,
    log: Progress,
) -> PersonaIndexes:
    started = time.perf_counter()
    report = PersonaIndexes(min_rows)
    sizes = large_scopes(conn, (min_rows + 1) // 2) if min_rows > 0 else {}
    existing = persona_indexes(conn)
    concurrently = other_sessions(conn) > 0
    for scope, index in existing.items():
        if scope not in sizes or not index.valid:
            _drop_index(conn, index.name, concurrently)
            report.dropped.append(index.name)
    kept = {scope for scope, index in existing.items() if scope in sizes and index.valid}
    wanted = {scope: rows for scope, rows in sizes.items() if rows >= min_rows and scope not in kept}
    if kept or wanted:
        largest = max([sizes[scope] for scope in kept] + list(wanted.values()))
        try:
            report.settings = apply_search_settings(conn, search_settings(ef_search, largest))
        except SearchSettingsRefused as refused:
            report.refused = str(refused)
            log(Notice(f"vector index: no persona index: {refused}"))
            for scope in kept:
                _drop_index(conn, existing[scope].name, concurrently)
                report.dropped.append(existing[scope].name)
            kept, wanted = set(), {}
    else:  # no persona index: the bot's query reads every persona exactly
        report.settings = _keep_the_global_index_out(conn, log)
    report.kept = len(kept)
    if wanted:
        _build_persona_indexes(
            conn, wanted, report, m, ef_construction, max_build_memory_mb, concurrently, log
        )
    report.size_bytes = sum(index.size_bytes for index in persona_indexes(conn).values())
    if not report.settings:
        report.settings = database_settings(conn)
    report.seconds = time.perf_counter() - started
    return report


def _build_persona_indexes(
    conn: psycopg.Connection,
    wanted: dict[Scope, int],
    report: PersonaIndexes,
    m: int,
    ef_construction: int,
    max_build_memory_mb: int,
    concurrently: bool,
    log: Progress,
) -> None:
    cap_mb = build_memory_cap_mb(conn, max_build_memory_mb)
    log(
        f"vector index: building {len(wanted):,} persona indexes over {sum(wanted.values()):,} memories "
        f"(personas, and personas with one personality, of {report.min_rows:,} memories or more; m={m}, "
        f"ef_construction={ef_construction})"
    )
    for done, (scope, rows) in enumerate(sorted(wanted.items(), key=lambda item: -item[1]), start=1):
        where = _predicate(scope).as_string(conn)
        memory_mb = build_memory_mb(rows, m, cap_mb)
        build_hnsw(conn, persona_index_name(*scope), where, m, ef_construction, memory_mb, concurrently)
        report.built[scope] = rows
        log(Advanced("persona indexes", done, len(wanted), "indexes built"))


def _drop_index(conn: psycopg.Connection, name: str, concurrently: bool) -> None:
    statement = "DROP INDEX CONCURRENTLY IF EXISTS {}" if concurrently else "DROP INDEX IF EXISTS {}"
    conn.execute(sql.SQL(statement).format(sql.Identifier(name)))
