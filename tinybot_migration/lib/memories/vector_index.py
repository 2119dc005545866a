"""The HNSW index on `memories.embedding` (docs/design.md §5): built after the bulk load with memory sized
to the table, dropped before a load that would have to maintain it row by row, left in place by
incremental runs.

Whether the bot's memory query (`bot_query.py`) walks this index or reads the persona's rows
through its `memories_persona_id_idx` is the planner's choice, judged by the search checks. After
a load the table is vacuumed and analyzed (`vacuum_for_search`) so the planner knows its size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import psutil
import psycopg

from tinybot_migration.lib.database import DatabaseConnectionError
from tinybot_migration.lib.postgres import VECTOR_INDEX_LOCK, Connect, advisory_lock
from tinybot_migration.lib.progress import Advanced, Notice, Progress, quiet, rate
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS

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
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX_NAME}")
    wanted_mb = graph_memory_mb(rows, m)
    memory_mb = build_memory_mb(rows, m, build_memory_cap_mb(conn, max_build_memory_mb))
    workers = int(conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0])
    concurrently = other_sessions(conn) > 0
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
    outgrew: list[str] = []

    def note(diagnostic) -> None:
        if (diagnostic.message_primary or "").startswith(GRAPH_OUTGREW_MEMORY):
            outgrew.append(diagnostic.message_primary)

    started = time.perf_counter()
    conn.execute(f"SET maintenance_work_mem = '{memory_mb}MB'")
    conn.add_notice_handler(note)
    try:
        with _build_progress(conn.info.backend_pid, rows, watch, log):
            conn.execute(
                f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}{INDEX_NAME} ON memories"
                f" USING hnsw (embedding vector_cosine_ops) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
            )
    finally:
        conn.remove_notice_handler(note)
        conn.execute("RESET maintenance_work_mem")
    seconds = time.perf_counter() - started
    return IndexBuild(
        action, rows, seconds, index_state(conn), memory_mb, concurrently, wanted_mb, not outgrew, workers
    )


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
        f"vector index: dropping {INDEX_NAME} before writing {incoming:,} memories into about {existing:,}; "
        "memory_vector_index builds it again after the load"
    )
    conn.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")
    return True
