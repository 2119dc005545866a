"""The one bulk writer of `memories`, for every memory source (the rebuild, the shapes.inc import,
a single memory the bot adds, sync).

A source hands over `NewMemory` rows carrying every column but the embedding. They are embedded
through the cache in chunks of one request; as many chunks run side by side as the provider allows
requests in flight, each on its own connection, so database writes overlap the provider's work.
Each chunk is written with binary COPY into staging and `INSERT … ON CONFLICT (id)` in one
transaction, so the chunks finished before a failure survive it and a re-run writes nothing: a row
already there is kept, unless it is a Qdrant-only memory and the writer's is another source's.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from itertools import islice
from operator import attrgetter
from queue import Queue

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from tinybot_migration.lib import schema
from tinybot_migration.lib.embeddings.cache import (
    CachedEmbeddings,
    CostEstimate,
    cache_model_name,
    embed_with_cache,
)
from tinybot_migration.lib.embeddings.client import (
    ZERO_NORM,
    EmbeddingClient,
    EmbeddingDimensionError,
)
from tinybot_migration.lib.memories.vector_index import drop_for_bulk_load
from tinybot_migration.lib.postgres import Connect, retry_deadlocks
from tinybot_migration.lib.progress import Advanced, Notice, Progress, rate

SOURCE_BOT = "tzurot-v3"  # what the bot writes itself
SOURCE_SHAPES = "shapes-inc"
# A Qdrant-only memory (lib/qdrant/outcomes.py): it gives way to any other source writing the same id
# (a shapes.inc file readable again holds the record the Qdrant point stood in for).
SOURCE_QDRANT = "qdrant"
# Advisory locks serialising runs that write memories of the same personalities (see personality_locks).
PERSONALITY_LOCK_CLASS = 0x7469_6E6D  # "tinm"
PERSONALITY_LOCK_BUCKETS = 64


@dataclass(frozen=True)
class NewMemory:
    """One row of `memories` without its embedding; field names are the table's column names."""

    id: uuid.UUID
    persona_id: uuid.UUID | None  # None: a legacy memory whose shapes.inc user is not mapped yet
    personality_id: uuid.UUID
    content: str
    is_summarized: bool
    created_at: datetime
    source_system: str
    original_message_count: int | None = None
    summarized_at: datetime | None = None
    session_id: str | None = None
    canon_scope: str | None = None
    summary_type: str | None = None
    channel_id: str | None = None
    guild_id: str | None = None
    message_ids: list[str] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    legacy_shapes_user_id: uuid.UUID | None = None


_FIELDS = tuple(f.name for f in fields(NewMemory))
_values = attrgetter(*_FIELDS)
_TABLE_TYPES = {c.name: c.type for c in schema.MEMORIES.columns}
_COPY_TYPE_NAMES = {"boolean": "bool", "integer": "int4"}


def _copy_type(sql_type: str) -> str:
    """The type name binary COPY wants for a column type of the schema (no modifiers)."""
    base = re.sub(r"\(.*\)", "", sql_type)
    return _COPY_TYPE_NAMES.get(base, base)


_STAGED_COLUMNS = (*_FIELDS, "embedding")
_TAKE_OVER = ", ".join(f"{name} = EXCLUDED.{name}" for name in _STAGED_COLUMNS if name != "id")
_STAGED_TYPES = [_copy_type(_TABLE_TYPES[name]) for name in _STAGED_COLUMNS]
assert set(_STAGED_COLUMNS) == set(_TABLE_TYPES), "NewMemory must carry every column of memories"


# Staging columns without type modifiers: checking each vector's length (and each varchar's) in the
# COPY cost about a tenth of the write; the INSERT into memories checks them once.
_CREATE_STAGE = (
    "CREATE TEMP TABLE stage_memories ("
    + ", ".join(f"{name} {kind}" for name, kind in zip(_STAGED_COLUMNS, _STAGED_TYPES, strict=True))
    + ") ON COMMIT DROP"
)


@dataclass
class ChunkOutcome:
    size: int
    embedded: CachedEmbeddings
    truncated: int  # texts sent cut to the per-input token limit (their memories keep the full text)
    rejected: list[tuple[NewMemory, str]]  # refused by the provider, with its reason; not written
    written: Counter[uuid.UUID]  # rows inserted per personality id (rows already present not counted)
    embed_seconds: float = 0.0  # looking up the cache and waiting for the provider
    write_seconds: float = 0.0  # the COPY and insert into memories


@dataclass
class EmbeddingSpend:
    """What a source's chunks cost in embeddings, added up (the figures every memory asset reports)."""

    cache_hits: int = 0
    provider_inputs: int = 0
    requests: int = 0
    retries: int = 0
    tokens: int = 0
    estimated_cost_usd: float = 0.0
    texts_truncated: int = 0
    # Summed over chunks that may run side by side: time spent, not wall time.
    embed_seconds: float = 0.0
    write_seconds: float = 0.0

    def absorb_spend(self, outcome: ChunkOutcome) -> None:
        embedded = outcome.embedded
        self.cache_hits += embedded.cache_hits
        self.provider_inputs += embedded.provider_inputs
        self.requests += embedded.requests
        self.retries += embedded.retries
        self.tokens += embedded.tokens
        self.estimated_cost_usd += embedded.estimated_cost_usd
        self.texts_truncated += outcome.truncated
        self.embed_seconds += outcome.embed_seconds
        self.write_seconds += outcome.write_seconds

    def spend_metadata(self, model: str) -> dict:
        """What was spent, named as a dry run names its estimate (`cache.CostEstimate`)."""
        return {
            "embedding_model": model,
            "cache_hits": self.cache_hits,
            "provider_inputs": self.provider_inputs,
            "provider_requests": self.requests,
            "provider_retries": self.retries,
            "tokens": self.tokens,
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
            "texts_truncated": self.texts_truncated,
        }


@dataclass
class MemorySourceReport(EmbeddingSpend):
    """What every memory source reports (the rebuild, shapes.inc, and the ones to come): its
    personalities, the memories pending, written and already present (per personality in the
    source's own figures, each with `written`), and what embedding them cost."""

    personality_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # slug -> id
    per_personality: dict = field(default_factory=dict)  # slug -> the source's figures
    pending: int = 0
    memories_written: int = 0
    already_present: int = 0
    estimate: CostEstimate | None = None  # set by an estimate (`pipeline.estimate_memories`)
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per pipeline phase


def write_pending(
    conn: psycopg.Connection,
    connect: Connect | None,
    provider: EmbeddingClient,
    pending: Sequence[NewMemory],
    report: MemorySourceReport,
    stage: str,
    log: Progress,
    started: float,
    on_rejected: Callable[[NewMemory, str, str], None],
    chunk_size: int | None = None,
    done: int = 0,
    total: int | None = None,
) -> int:
    """Embed and write a source's pending memories through the shared writer, adding each chunk's
    figures to `report` and saying how far it got; a text the provider refused goes to
    `on_rejected` (the memory, its personality's slug, the provider's reason). Returns how many memories are done, `done` included (a source writing in batches
    passes it on, with its `total`)."""
    slug_of = {pid: slug for slug, pid in report.personality_ids.items()}
    for outcome in embed_and_write(conn, connect, provider, pending, log, chunk_size):
        report.absorb_spend(outcome)
        for memory, reason in outcome.rejected:
            on_rejected(memory, slug_of[memory.personality_id], reason)
        for personality_id, written in outcome.written.items():
            report.memories_written += written
            report.per_personality[slug_of[personality_id]].written += written
        done += outcome.size
        log(
            Advanced(
                stage,
                done,
                len(pending) if total is None else total,
                "memories embedded and written",
                rate(done, time.perf_counter() - started),
                f"{report.cache_hits:,} cache hits, {report.requests:,} requests",
            )
        )
    return done


def embedding_column_dimensions(conn: psycopg.Connection) -> int:
    """The dimensions `memories.embedding` is declared with in this database."""
    return conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding'"
    ).fetchone()[0]


def check_embedding_dimensions(conn: psycopg.Connection, provider: EmbeddingClient) -> None:
    """Refuse a provider whose vectors cannot fit the column, before any request is paid for."""
    column = embedding_column_dimensions(conn)
    if provider.dimensions != column:
        raise EmbeddingDimensionError(
            f"the embedding provider asks {cache_model_name(provider)} for {provider.dimensions} dimensions, "
            f"but memories.embedding in the new database is vector({column}): set the embedding_provider "
            f"resource's dimensions to {column}"
        )


def memory_ids(
    conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID], source_system: str
) -> set[uuid.UUID]:
    """Ids of the memories of one source for these personalities."""
    rows = conn.execute(
        "SELECT id FROM memories WHERE personality_id = ANY(%s) AND source_system = %s",
        (list(personality_ids), source_system),
    ).fetchall()
    return {r[0] for r in rows}


def present_memory_ids(
    conn: psycopg.Connection, candidates: Sequence[uuid.UUID], source_system: str
) -> set[uuid.UUID]:
    """Which of these memory ids of one source the new DB holds (primary-key lookups)."""
    rows = conn.execute(
        "SELECT id FROM memories WHERE id = ANY(%s) AND source_system = %s", (list(candidates), source_system)
    ).fetchall()
    return {r[0] for r in rows}


def memory_count(conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID], source_system: str) -> int:
    """How many memories of one source these personalities hold."""
    return conn.execute(
        "SELECT count(*) FROM memories WHERE personality_id = ANY(%s) AND source_system = %s",
        (list(personality_ids), source_system),
    ).fetchone()[0]


def delete_memories_with_zero_vectors(conn: psycopg.Connection) -> dict[str, int]:
    """Delete memories whose embedding is all zero, so the next run writes them again with a real
    one; returns how many went, per source system."""
    rows = conn.execute(
        "DELETE FROM memories WHERE vector_norm(embedding) < %s RETURNING source_system", (ZERO_NORM,)
    ).fetchall()
    return dict(Counter(source for (source,) in rows))


def embed_and_write(
    conn: psycopg.Connection,
    connect: Connect | None,
    provider: EmbeddingClient,
    memories: Sequence[NewMemory],
    log: Progress | None = None,
    chunk_size: int | None = None,
) -> Iterator[ChunkOutcome]:
    """Embed `memories` (through the cache) and write them, one transaction per chunk.

    Another run writing memories of the same personalities is waited for (so a text is never sent
    by two runs at once: this one then finds it in the cache). With `connect`, as many chunks as
    the provider allows requests in flight run at once, each on a connection of its own. After a
    failure no new chunk starts; the ones running finish (and stay written), then the error goes on.
    A load large enough drops the vector index first (`vector_index.drop_for_bulk_load`).
    """
    if not memories:
        return
    drop_for_bulk_load(conn, len(memories), log)
    chunks = chunks_by_text(memories, chunk_size or provider.settings.max_inputs_per_request)
    workers = max(1, provider.settings.max_concurrent_requests) if connect is not None else 1
    with personality_locks(conn, {m.personality_id for m in memories}, log):
        if workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                yield _embed_and_write_chunk(conn, provider, chunk, log)
            return
        yield from _chunks_side_by_side(connect, provider, chunks, workers, log)


def chunks_by_text(memories: Sequence[NewMemory], size: int) -> list[list[NewMemory]]:
    """Chunks of at most `size` distinct texts, in order, every memory of one text in the same
    chunk: chunks running side by side never send the same text twice."""
    chunks: list[list[NewMemory]] = []
    texts_in_last = 0
    chunk_of_text: dict[str, int] = {}
    for memory in memories:
        index = chunk_of_text.get(memory.content)
        if index is None:
            if not chunks or texts_in_last >= size:
                chunks.append([])
                texts_in_last = 0
            index = chunk_of_text[memory.content] = len(chunks) - 1
            texts_in_last += 1
        chunks[index].append(memory)
    return chunks


@contextmanager
def personality_locks(
    conn: psycopg.Connection, personality_ids: set[uuid.UUID], log: Progress | None
) -> Iterator[None]:
    """Session advisory locks on the personalities' lock buckets, taken in order (no deadlock) and
    held while their memories are written. Buckets, not one lock per personality, keep the count
    within PostgreSQL's lock table; a killed run's locks go with its connection."""
    buckets = sorted({pid.int % PERSONALITY_LOCK_BUCKETS for pid in personality_ids})
    taken: list[int] = []
    try:
        for bucket in buckets:
            if not conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (PERSONALITY_LOCK_CLASS, bucket)
            ).fetchone()[0]:
                if log is not None:
                    log(
                        Notice(
                            "memories: another run is writing memories of the same personalities; waiting for it"
                        )
                    )
                conn.execute("SELECT pg_advisory_lock(%s, %s)", (PERSONALITY_LOCK_CLASS, bucket))
            taken.append(bucket)
        yield
    finally:
        for bucket in taken:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (PERSONALITY_LOCK_CLASS, bucket))


def _chunks_side_by_side(
    connect: Connect,
    provider: EmbeddingClient,
    chunks: list[Sequence[NewMemory]],
    workers: int,
    log: Progress | None,
) -> Iterator[ChunkOutcome]:
    with ExitStack() as stack:
        idle: Queue[psycopg.Connection] = Queue()
        for _ in range(min(workers, len(chunks))):
            idle.put(stack.enter_context(connect()))

        def task(chunk: Sequence[NewMemory]) -> ChunkOutcome:
            worker_conn = idle.get()
            try:
                return _embed_and_write_chunk(worker_conn, provider, chunk, log)
            finally:
                idle.put(worker_conn)

        with ThreadPoolExecutor(workers, thread_name_prefix="memories") as pool:
            waiting = iter(chunks)
            running = {pool.submit(task, chunk) for chunk in islice(waiting, workers)}
            failure: BaseException | None = None
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future.exception() is not None:
                        failure = failure or future.exception()
                    else:
                        yield future.result()
                    if failure is None:
                        running |= {pool.submit(task, chunk) for chunk in islice(waiting, 1)}
            if failure is not None:
                raise failure


def _embed_and_write_chunk(
    conn: psycopg.Connection,
    provider: EmbeddingClient,
    chunk: Sequence[NewMemory],
    log: Progress | None,
) -> ChunkOutcome:
    texts = [memory.content for memory in chunk]
    started = time.perf_counter()
    embedded = embed_with_cache(conn, provider, texts, log)
    embedded_at = time.perf_counter()
    accepted, vectors, rejected = [], [], []
    for row, memory in enumerate(chunk):
        if row in embedded.rejected:
            rejected.append((memory, embedded.rejected[row]))
        else:
            accepted.append(memory)
            vectors.append(embedded.vectors[row])
    written = write_memories(conn, accepted, vectors)
    return ChunkOutcome(
        size=len(chunk),
        embedded=embedded,
        truncated=embedded.truncated,
        rejected=rejected,
        written=written,
        embed_seconds=embedded_at - started,
        write_seconds=time.perf_counter() - embedded_at,
    )


def write_memories(
    conn: psycopg.Connection, memories: Sequence[NewMemory], vectors: Sequence[np.ndarray]
) -> Counter[uuid.UUID]:
    """Binary COPY into staging, then insert what is missing, in one transaction.

    Returns the rows inserted per personality id (rows already present are not counted).
    """
    if not memories:
        return Counter()
    register_vector(conn)
    columns = ", ".join(_STAGED_COLUMNS)

    def transaction() -> list[tuple]:
        with conn.transaction():
            conn.execute(_CREATE_STAGE)
            with conn.cursor().copy(f"COPY stage_memories ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_STAGED_TYPES)
                for memory, vector in zip(memories, vectors, strict=True):
                    copy.write_row((*_values(memory), vector))
            return conn.execute(
                f"INSERT INTO memories ({columns}) SELECT {columns} FROM stage_memories ORDER BY id"
                f" ON CONFLICT (id) DO UPDATE SET {_TAKE_OVER} WHERE memories.source_system = %s"
                " AND EXCLUDED.source_system <> %s RETURNING personality_id",
                (SOURCE_QDRANT, SOURCE_QDRANT),
            ).fetchall()

    inserted = retry_deadlocks(transaction)
    return Counter(personality_id for (personality_id,) in inserted)
