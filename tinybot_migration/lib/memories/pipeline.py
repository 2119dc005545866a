"""The one memory pipeline every source feeds: the rebuild from the conversation history, the
shapes.inc import, and the Qdrant import to come.

A source turns its own rows into `NewMemory` rows for a batch of personalities, reading only
(`plan`), and accounts for its rows once it knows which texts the provider refused (`account`).
The pipeline does the rest the same way for each:

- `write_memories` embeds and writes the planned memories through the shared writer, between the
  source's own writes (`apply` before them, `record` after), one batch at a time;
- `estimate_memories` stops after planning, asks the source what its own writes would change
  (`foresee`, in place of `apply`) and prices the planned texts through the cache. It writes
  nothing and calls no provider: the estimate is a function of its own, not a mode threaded
  through the writing path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import psycopg

from tinybot_migration.lib.embeddings.cache import estimate_cost
from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.memories.vector_index import drop_for_bulk_load
from tinybot_migration.lib.memories.writer import (
    MemorySourceReport,
    NewMemory,
    check_embedding_dimensions,
    write_pending,
)
from tinybot_migration.lib.postgres import Connect
from tinybot_migration.lib.progress import Progress, quiet

Batch = dict[str, uuid.UUID]  # slug -> personality id
R = TypeVar("R", bound=MemorySourceReport)


class MemorySource(Protocol[R]):
    """What a source of memories hands the pipeline. It holds its own read connections (the new
    database's memories, or nothing before the first migration; where its rows come from)."""

    stage: str  # the progress label of its writes
    report: R  # its figures, `MemorySourceReport` and its own

    def batches(self) -> list[Batch]:
        """Its personalities in batches (one personality is never split), so memory follows a batch."""
        ...

    def load_bound(self, batches: list[Batch]) -> int | None:
        """At most how many memories the whole load writes (to weigh the vector index against when it
        comes in several batches), or None when the source cannot say cheaply."""
        ...

    def plan(self, batch: Batch) -> list[NewMemory]:
        """The batch's memories not in the new database yet, oldest first. Reads only."""
        ...

    def batch_line(self, number: int, batches: int, batch: Batch, pending: int) -> str:
        """What to say before a batch's memories are written (or priced)."""
        ...

    def apply(self, conn: psycopg.Connection, batch: Batch) -> None:
        """Its own writes that the memories depend on (shapes.inc: the sender mappings)."""
        ...

    def foresee(self, batch: Batch) -> None:
        """For an estimate, what `apply` would change, into `report`. Reads only."""
        ...

    def rejected(self, memory: NewMemory, slug: str, reason: str) -> None:
        """The provider refused this memory's text: it is not written."""
        ...

    def account(self, batch: Batch) -> None:
        """Where each of the batch's rows went, into `report`. Writes nothing."""
        ...

    def record(self, conn: psycopg.Connection, batch: Batch) -> None:
        """Its own writes after the batch's memories (rejects, coverage marks)."""
        ...


def write_memories(
    source: MemorySource[R],
    conn: psycopg.Connection,
    provider: EmbeddingClient,
    *,
    connect: Connect | None = None,
    log: Progress | None = None,
    chunk_size: int | None = None,
) -> R:
    """Write the source's missing memories into the new database `conn`, batch by batch; chunks run
    side by side on connections from `connect`. Returns its report."""
    started = time.perf_counter()
    log = log or quiet
    check_embedding_dimensions(conn, provider)
    report = source.report
    batches = source.batches()
    if len(batches) > 1 and (bound := source.load_bound(batches)) is not None:
        # Each batch's writer weighs the vector index against its own share; the whole load does here.
        drop_for_bulk_load(conn, bound, log)
    done = 0
    for number, batch in enumerate(batches, start=1):
        with phase(report, "plan"):
            pending = source.plan(batch)
        log(source.batch_line(number, len(batches), batch, len(pending)))
        with phase(report, "apply"):
            source.apply(conn, batch)
        with phase(report, "embed_and_write"):
            done = write_pending(
                conn,
                connect,
                provider,
                pending,
                report,
                source.stage,
                log,
                started,
                source.rejected,
                chunk_size,
                done,
                report.pending,
            )
        with phase(report, "account"):
            source.account(batch)
            source.record(conn, batch)
    report.seconds = time.perf_counter() - started
    return report


def estimate_memories(
    source: MemorySource[R],
    cache: psycopg.Connection | None,
    provider: EmbeddingClient,
    log: Progress | None = None,
) -> R:
    """What `write_memories` would embed and what it would cost, with `report.estimate` set: the
    planned texts priced against the embedding cache in `cache` (None: an empty cache). Reads only."""
    started = time.perf_counter()
    log = log or quiet
    report = source.report
    batches = source.batches()
    texts: list[str] = []
    for number, batch in enumerate(batches, start=1):
        with phase(report, "plan"):
            pending = source.plan(batch)
        log(source.batch_line(number, len(batches), batch, len(pending)))
        texts += [memory.content for memory in pending]
        with phase(report, "apply"):
            source.foresee(batch)
        with phase(report, "account"):
            source.account(batch)
    report.estimate = estimate_cost(cache, provider, texts)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def phase(report: MemorySourceReport, name: str) -> Iterator[None]:
    """Time one phase of the pipeline into `report.phase_seconds` (the benchmarks' breakdown)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        report.phase_seconds[name] = report.phase_seconds.get(name, 0.0) + time.perf_counter() - started
