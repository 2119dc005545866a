"""Rebuild long-term memories from the new DB's conversation history (docs/design.md §4).

A full rebuild (the migration, the sensor's reconciliation) pairs the whole history of the
personalities it covers and writes only the exchanges whose memory id is missing. Memory ids
depend on content alone, so this catches new exchanges, a trailing user message that got its
answer, and history that arrived late (a second relational run after the bot already wrote newer
memories); a memory the bot wrote itself in the same format is simply found present. A delta
rebuild (the sensor's incremental runs) pairs only the contexts that moved since the personality's
coverage mark (`coverage.py`), so its cost follows the delta, not the history. Either records the
newest message it paired as the new mark. The missing memories go through the shared writer
(`writer.embed_and_write`), oldest first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import psycopg
from psycopg.rows import args_row

from tinybot_migration.lib.embeddings.cache import estimate_cost
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
from tinybot_migration.lib.memories.vector_index import drop_for_bulk_load
from tinybot_migration.lib.memories.writer import (
    SOURCE_BOT,
    MemorySourceReport,
    NewMemory,
    check_embedding_dimensions,
    memory_count,
    memory_ids,
    present_memory_ids,
    write_pending,
)
from tinybot_migration.lib.new_database_schema import has_new_schema, has_rows
from tinybot_migration.lib.personalities import personality_batches, personality_ids_for
from tinybot_migration.lib.postgres import Connect
from tinybot_migration.lib.progress import Progress, quiet
from tinybot_migration.lib.schema import CONVERSATION_HISTORY

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
    history_from: str = "new database"  # where a dry run paired the history
    history: str = HISTORY_FULL  # full: every message of the personalities; delta: since their marks
    messages_read: int = 0
    newest_paired: dict[uuid.UUID, datetime | None] = field(default_factory=dict)  # coverage marks to record


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
    if history not in HISTORY_MODES:
        raise ValueError(f"history must be one of {', '.join(HISTORY_MODES)}, not {history!r}")
    started = time.perf_counter()
    log = log or quiet
    check_embedding_dimensions(conn, provider)
    report = RebuildReport(personality_ids=personality_ids_for(conn, slugs), history=history)
    # A delta is small by definition: one batch, without counting every personality's history.
    batches = (
        [report.personality_ids]
        if history == HISTORY_DELTA
        else history_batches(conn, report.personality_ids)
    )
    if len(batches) > 1:
        # Each batch's writer weighs the vector index against its own share; the whole load does here.
        drop_for_bulk_load(conn, answers_without_memory(conn, list(report.personality_ids.values())), log)
    done = 0
    for number, batch in enumerate(batches, start=1):
        pending = missing_memories(
            conn, distinct_exchanges(pair_personalities(conn, report, batch), report), report, batch
        )
        log(batch_line(report, number, len(batches), batch, len(pending)))
        done = write_pending(
            conn,
            connect,
            provider,
            pending,
            report,
            "memories",
            log,
            started,
            partial(_rejected, report),
            chunk_size,
            done,
            report.pending,
        )
    record_coverage(conn, report.newest_paired)
    report.seconds = time.perf_counter() - started
    return report


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


def estimate_rebuild(
    new_conn: psycopg.Connection,
    old_connect: Connect,
    provider: EmbeddingClient,
    slugs: Sequence[str],
    log: Progress | None = None,
) -> RebuildReport:
    """What `rebuild_memories` would embed and what it would cost, reading only (`new_conn` may be
    read-only; no provider is called). Before the first migration the new DB has no history: the
    old DB's is paired instead (its ids differ, the texts and so the bill do not)."""
    started = time.perf_counter()
    if has_rows(new_conn, CONVERSATION_HISTORY):
        report = RebuildReport(personality_ids=personality_ids_for(new_conn, slugs))
        everyone = report.personality_ids
        pending = missing_memories(
            new_conn,
            distinct_exchanges(pair_personalities(new_conn, report, everyone), report),
            report,
            everyone,
        )
        cache = new_conn
    else:
        with old_connect() as old_conn:
            report = RebuildReport(
                personality_ids=personality_ids_for(old_conn, slugs), history_from="old database"
            )
            distinct = distinct_exchanges(
                pair_personalities(old_conn, report, report.personality_ids), report
            )
        pending = [memory_of(exchange) for exchange in distinct.values()]
        report.pending = len(pending)
        cache = new_conn if has_new_schema(new_conn) else None
    report.estimate = estimate_cost(cache, provider, [m.content for m in pending])
    (log or quiet)(
        f"memories (dry run, history from the {report.history_from}): {report.stats.exchanges:,} exchanges, "
        f"{report.pending:,} memories to write, {report.estimate.texts:,} texts to embed, "
        f"~{report.estimate.tokens:,} tokens"
    )
    report.seconds = time.perf_counter() - started
    return report


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
    conn: psycopg.Connection,
    distinct: dict[uuid.UUID, Exchange],
    report: RebuildReport,
    batch: dict[str, uuid.UUID],
) -> list[NewMemory]:
    """The batch's memories not in the new DB yet, oldest first (a delta looks its few ids up; a
    full rebuild reads every id of the batch's personalities once)."""
    if report.history == HISTORY_DELTA:
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


def _rejected(report: RebuildReport, memory: NewMemory, slug: str, reason: str) -> None:
    """A memory whose text the provider refused: counted, and the first few named."""
    report.rejected += 1
    report.per_personality[slug].rejected += 1
    if len(report.rejection_samples) < REJECTION_SAMPLES:
        report.rejection_samples.append(f"memory {memory.id} (answer {memory.message_ids[-1]}): {reason}")


def _age(exchange: Exchange) -> tuple:
    return (exchange.answer.created_at, exchange.answer.id)
