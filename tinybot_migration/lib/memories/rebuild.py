"""Rebuild long-term memories from the new DB's conversation history (docs/design.md §4).

A full rebuild (the migration, the sensor's reconciliation) pairs the whole history of the
personalities it covers and writes only the exchanges whose memory id is missing. Memory ids
depend on content alone, so this catches new exchanges, a trailing user message that got its
answer, and history that arrived late (a second relational run after the bot already wrote newer
memories); a memory the bot wrote itself in the same format is simply found present. A delta
rebuild (the sensor's incremental runs) pairs only the contexts that moved since the personality's
coverage mark (`coverage.py`), so its cost follows the delta, not the history. Either records the
newest message it paired as the new mark. The history is a memory source (`RebuildSource`) of
the one memory pipeline (`pipeline.py`), which writes the missing memories oldest first, or only
prices them (`memory_bill.estimate_rebuild`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import args_row

from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.memories.coverage import (
    HISTORY_DELTA,
    HISTORY_FULL,
    HISTORY_MODES,
    coverage_marks,
    load_delta_messages,
    newest_message_times,
    record_coverage,
)
from tinybot_migration.lib.memories.pairing import Exchange, Message, PairingStats, pair_messages
from tinybot_migration.lib.memories.pipeline import write_memories
from tinybot_migration.lib.memories.writer import (
    SOURCE_BOT,
    MemorySourceReport,
    NewMemory,
    memory_count,
    memory_ids,
    present_memory_ids,
)
from tinybot_migration.lib.personalities import personality_batches, personality_ids_for
from tinybot_migration.lib.postgres import Connect
from tinybot_migration.lib.progress import Progress

CANON_SCOPE = "personal"
SUMMARY_TYPE = "conversation"
REJECTION_SAMPLES = 5
# Personalities are paired and written a batch at a time, each batch about this many messages of
# history (one personality's history is never split), so a rebuild's memory follows the batch,
# not the table: at scale 100 a single pass held 436,400 messages and 1.5 GB.
MESSAGES_PER_BATCH = 50_000


@dataclass
class PersonalityFigures:
    contexts: int = 0
    exchanges: int = 0
    already_present: int = 0
    written: int = 0
    rejected: int = 0
    waiting: int = 0  # trailing user messages without an answer yet


@dataclass
class RebuildReport(MemorySourceReport):
    stats: PairingStats = field(default_factory=PairingStats)
    per_personality: dict[str, PersonalityFigures] = field(default_factory=dict)
    expected_ids: set[uuid.UUID] = field(default_factory=set)  # one per distinct exchange content
    duplicate_exchanges: int = 0  # same content as an earlier exchange of the same persona/personality
    rejected: int = 0
    rejection_samples: list[str] = field(default_factory=list)
    history_from: str = "new database"  # where the history was paired from (an estimate: maybe the old DB)
    history: str = HISTORY_FULL  # full: every message of the personalities; delta: since their marks
    messages_read: int = 0
    newest_paired: dict[uuid.UUID, datetime | None] = field(default_factory=dict)  # coverage marks to record

    def estimate_metadata(self, model: str) -> dict:
        """An estimate's figures (`pipeline.estimate_memories`), named as a run names what it spent."""
        return {
            **self.estimate.estimate_metadata(model),
            "history_from": self.history_from,
            "personalities": len(self.personality_ids),
            "exchanges": self.stats.exchanges,
            "memories_to_write": self.pending,
            "memories_already_present": self.already_present,
        }


def load_messages(conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID]) -> list[Message]:
    with conn.cursor(row_factory=args_row(Message)) as cur:
        cur.execute(
            "SELECT id, channel_id, guild_id, personality_id, persona_id, role, content, created_at"
            " FROM conversation_history WHERE personality_id = ANY(%s)",
            (list(personality_ids),),
        )
        return cur.fetchall()


def memory_of(exchange: Exchange) -> NewMemory:
    """The memory an exchange gives (docs/design.md §4)."""
    answer = exchange.answer
    return NewMemory(
        id=exchange.memory_id,
        persona_id=answer.persona_id,
        personality_id=answer.personality_id,
        content=exchange.content,
        is_summarized=False,
        created_at=answer.created_at,
        source_system=SOURCE_BOT,
        canon_scope=CANON_SCOPE,
        summary_type=SUMMARY_TYPE,
        channel_id=answer.channel_id,
        guild_id=answer.guild_id,
        message_ids=exchange.message_ids,
    )


class RebuildSource:
    """The conversation history as a memory source (`pipeline.MemorySource`): one memory per
    distinct exchange. The history is read from `history` (the new database; the old one for an
    estimate before the first migration), the memories already present from `memories` (None: a
    new database without any)."""

    stage = "memories"

    def __init__(
        self,
        history: psycopg.Connection,
        memories: psycopg.Connection | None,
        slugs: Sequence[str],
        mode: str = HISTORY_FULL,
        history_from: str = "new database",
    ) -> None:
        if mode not in HISTORY_MODES:
            raise ValueError(f"history must be one of {', '.join(HISTORY_MODES)}, not {mode!r}")
        self.history, self.memories = history, memories
        self.report = RebuildReport(
            personality_ids=personality_ids_for(history, slugs), history=mode, history_from=history_from
        )

    def batches(self) -> list[dict[str, uuid.UUID]]:
        # A delta is small by definition: one batch, without counting every personality's history.
        if self.report.history == HISTORY_DELTA:
            return [self.report.personality_ids]
        return history_batches(self.history, self.report.personality_ids)

    def load_bound(self, batches: list[dict[str, uuid.UUID]]) -> int:
        return answers_without_memory(self.history, list(self.report.personality_ids.values()))

    def plan(self, batch: dict[str, uuid.UUID]) -> list[NewMemory]:
        report = self.report
        distinct = distinct_exchanges(pair_personalities(self.history, report, batch), report)
        return missing_memories(self.memories, distinct, report, batch)

    def batch_line(self, number: int, batches: int, batch: dict, pending: int) -> str:
        return batch_line(self.report, number, batches, batch, pending)

    def apply(self, conn: psycopg.Connection, batch: dict[str, uuid.UUID]) -> None:
        pass  # the history is the new database's own: nothing to write before the memories

    def foresee(self, batch: dict[str, uuid.UUID]) -> None:
        pass  # nor anything to foresee

    def rejected(self, memory: NewMemory, slug: str, reason: str) -> None:
        """A memory whose text the provider refused: counted, and the first few named."""
        report = self.report
        report.rejected += 1
        report.per_personality[slug].rejected += 1
        if len(report.rejection_samples) < REJECTION_SAMPLES:
            report.rejection_samples.append(f"memory {memory.id} (answer {memory.message_ids[-1]}): {reason}")

    def account(self, batch: dict[str, uuid.UUID]) -> None:
        pass  # pairing counted every message as it planned

    def record(self, conn: psycopg.Connection, batch: dict[str, uuid.UUID]) -> None:
        """The batch's coverage marks: its memories are written, so a delta starts after them."""
        newest = self.report.newest_paired
        record_coverage(conn, {pid: newest[pid] for pid in batch.values() if pid in newest})


def rebuild_memories(
    conn: psycopg.Connection,
    provider: EmbeddingClient,
    slugs: Sequence[str],
    log: Progress | None = None,
    chunk_size: int | None = None,
    connect: Connect | None = None,
    history: str = HISTORY_FULL,
) -> RebuildReport:
    """Write the missing memories of the personalities `slugs`; see the module docstring.

    `connect` opens more connections to the same database, for chunks that run side by side.
    `history` is `full` or `delta`; a personality without a coverage mark is paired in full.
    """
    source = RebuildSource(conn, conn, slugs, history)
    return write_memories(source, conn, provider, connect=connect, log=log, chunk_size=chunk_size)


def batch_line(report: RebuildReport, number: int, batches: int, batch: dict, pending: int) -> str:
    """The log line before a batch is written; with several batches the figures are so far."""
    head = f"memories ({report.history} history)"
    if batches > 1:
        head += f", batch {number} of {batches} ({len(batch)} personalities, {pending:,} to write), so far"
    else:
        head += f": {len(batch)} personalities,"
    return (
        f"{head} {report.messages_read:,} messages, {report.stats.contexts:,} contexts, "
        f"{report.stats.exchanges:,} exchanges, {report.already_present:,} memories present"
        + (f", {pending:,} to write" if batches == 1 else "")
    )


def answers_without_memory(conn: psycopg.Connection, personality_ids: list[uuid.UUID]) -> int:
    """At most how many memories a full rebuild of these personalities writes (every exchange ends
    with an answer)."""
    answers = conn.execute(
        "SELECT count(*) FROM conversation_history WHERE personality_id = ANY(%s) AND role = 'assistant'",
        (personality_ids,),
    ).fetchone()[0]
    return max(0, answers - memory_count(conn, personality_ids, SOURCE_BOT))


def history_batches(
    conn: psycopg.Connection, personality_ids: dict[str, uuid.UUID]
) -> list[dict[str, uuid.UUID]]:
    """The personalities in batches of about MESSAGES_PER_BATCH messages of history."""
    counts = dict(
        conn.execute(
            "SELECT personality_id, count(*) FROM conversation_history WHERE personality_id = ANY(%s) GROUP BY 1",
            (list(personality_ids.values()),),
        ).fetchall()
    )
    return personality_batches(personality_ids, lambda _, pid: counts.get(pid, 0), MESSAGES_PER_BATCH)


def history_messages(
    conn: psycopg.Connection, report: RebuildReport, personality_ids: list[uuid.UUID]
) -> list[Message]:
    """The messages of `personality_ids` that the report's history mode reads: all of them, or
    since each personality's mark (in full for a personality without one)."""
    if report.history != HISTORY_DELTA:
        return load_messages(conn, personality_ids)
    marks = coverage_marks(conn, personality_ids)
    unmarked = [pid for pid in personality_ids if pid not in marks]
    return load_delta_messages(conn, marks) + (load_messages(conn, unmarked) if unmarked else [])


def pair_personalities(
    conn: psycopg.Connection, report: RebuildReport, batch: dict[str, uuid.UUID]
) -> list[Exchange]:
    """Every exchange of the batch's personalities (slug -> id; of what the report's history mode
    reads), each personality paired on its own; the figures go into `report`."""
    by_personality: dict[uuid.UUID, list[Message]] = {pid: [] for pid in batch.values()}
    messages = history_messages(conn, report, list(batch.values()))
    report.messages_read += len(messages)
    newest = newest_message_times(messages)
    if report.history == HISTORY_FULL:  # a personality with no history yet is covered too
        newest |= {pid: None for pid in by_personality if pid not in newest}
    report.newest_paired |= newest
    for message in messages:
        by_personality[message.personality_id].append(message)
    exchanges: list[Exchange] = []
    for slug, personality_id in batch.items():
        pairing = pair_messages(by_personality[personality_id])
        report.stats.add(pairing.stats)
        report.per_personality[slug] = PersonalityFigures(
            contexts=pairing.stats.contexts,
            exchanges=pairing.stats.exchanges,
            waiting=pairing.stats.unanswered_user_messages,
        )
        exchanges += pairing.exchanges
    return exchanges


def distinct_exchanges(exchanges: list[Exchange], report: RebuildReport) -> dict[uuid.UUID, Exchange]:
    """One exchange per memory id: identical content in one persona and personality is one memory,
    given by the earliest exchange. (A memory id includes the personality, so a batch of whole
    personalities holds every exchange of its ids.)"""
    by_id: dict[uuid.UUID, Exchange] = {}
    for exchange in exchanges:
        memory = exchange.memory_id
        earlier = by_id.get(memory)
        if earlier is None or _age(exchange) < _age(earlier):
            by_id[memory] = exchange
        if earlier is not None:
            report.duplicate_exchanges += 1
    report.expected_ids |= by_id.keys()
    return by_id


def missing_memories(
    conn: psycopg.Connection | None,
    distinct: dict[uuid.UUID, Exchange],
    report: RebuildReport,
    batch: dict[str, uuid.UUID],
) -> list[NewMemory]:
    """The batch's memories not in the new DB yet, oldest first (a delta looks its few ids up; a
    full rebuild reads every id of the batch's personalities once; `conn` None: a new database
    without memories)."""
    if conn is None:
        present: set[uuid.UUID] = set()
    elif report.history == HISTORY_DELTA:
        present = present_memory_ids(conn, list(distinct), SOURCE_BOT)
    else:
        present = memory_ids(conn, list(batch.values()), SOURCE_BOT)
    pending: list[Exchange] = []
    slug_of = {pid: slug for slug, pid in batch.items()}
    for memory, exchange in distinct.items():
        if memory in present:
            report.per_personality[slug_of[exchange.answer.personality_id]].already_present += 1
            report.already_present += 1
        else:
            pending.append(exchange)
    report.pending += len(pending)
    return [memory_of(exchange) for exchange in sorted(pending, key=_age)]


def _age(exchange: Exchange) -> tuple:
    return (exchange.answer.created_at, exchange.answer.id)
