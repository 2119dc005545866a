"""Rebuild long-term memories from the new DB's conversation history (DESIGN §4).

Every run pairs the whole history of the personalities it covers and writes only the exchanges
whose memory id is missing. Memory ids depend on content alone, so this catches everything a
watermark would (new exchanges, a trailing user message that got its answer) and also history
that arrived late (a second relational run after the bot already wrote newer memories), and a
memory the bot wrote itself in the same format is simply found present.

Pending exchanges are embedded through the cache in chunks of one request (2048 inputs); as many
chunks run side by side as the provider allows requests in flight, each on its own connection, so
database writes overlap the provider's work. Each chunk's memories are written with binary COPY
into staging and `INSERT … ON CONFLICT (id) DO NOTHING` in one transaction, so the chunks
finished before a failure survive it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from itertools import islice
from queue import Queue

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import args_row

from tinybot_migration.embedding_batches import truncate_for_embedding
from tinybot_migration.embedding_cache import CachedEmbeddings, embed_with_cache
from tinybot_migration.memory_pairing import Exchange, Message, PairingStats, pair_messages
from tinybot_migration.resources.database_connection import retry_deadlocks
from tinybot_migration.resources.embedding_provider import EmbeddingProviderResource

Log = Callable[[str], None]
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]
CANON_SCOPE = "personal"
SUMMARY_TYPE = "conversation"
SOURCE_SYSTEM = "tinybot"
REJECTION_SAMPLES = 5

_STAGE_COLUMNS = (
    ("id", "uuid"),
    ("persona_id", "uuid"),
    ("personality_id", "uuid"),
    ("content", "text"),
    ("embedding", "vector"),
    ("channel_id", "text"),
    ("guild_id", "text"),
    ("message_ids", "text[]"),
    ("created_at", "timestamptz"),
)


class UnknownPersonalityError(ValueError):
    """A partition key names a slug that the new DB's personalities table does not have."""


@dataclass
class PersonalityFigures:
    contexts: int = 0
    exchanges: int = 0
    already_present: int = 0
    written: int = 0
    rejected: int = 0
    waiting: int = 0  # trailing user messages without an answer yet


@dataclass
class RebuildReport:
    stats: PairingStats = field(default_factory=PairingStats)
    personality_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # slug -> id, as covered
    per_personality: dict[str, PersonalityFigures] = field(default_factory=dict)
    expected_ids: set[uuid.UUID] = field(default_factory=set)  # one per distinct exchange content
    duplicate_exchanges: int = 0  # same content as an earlier exchange of the same persona/personality
    already_present: int = 0
    pending: int = 0
    memories_written: int = 0
    cache_hits: int = 0
    provider_inputs: int = 0
    requests: int = 0
    retries: int = 0
    tokens: int = 0
    estimated_cost_usd: float = 0.0
    texts_truncated: int = 0
    rejected: int = 0
    rejection_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0


def personality_ids_for(conn: psycopg.Connection, slugs: Sequence[str]) -> dict[str, uuid.UUID]:
    rows = conn.execute("SELECT slug, id FROM personalities WHERE slug = ANY(%s)", (list(slugs),)).fetchall()
    found = dict(rows)
    unknown = [s for s in slugs if s not in found]
    if unknown:
        raise UnknownPersonalityError(
            f"personality partition(s) {', '.join(map(repr, unknown[:5]))} have no row in the new DB's "
            "personalities table: migrate the relational tables first, or delete the stale partition"
        )
    return {slug: found[slug] for slug in slugs}


def load_messages(conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID]) -> list[Message]:
    with conn.cursor(row_factory=args_row(Message)) as cur:
        cur.execute(
            "SELECT id, channel_id, guild_id, personality_id, persona_id, role, content, created_at"
            " FROM conversation_history WHERE personality_id = ANY(%s)",
            (list(personality_ids),),
        )
        return cur.fetchall()


def existing_memory_ids(conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    rows = conn.execute(
        "SELECT id FROM memories WHERE personality_id = ANY(%s)", (list(personality_ids),)
    ).fetchall()
    return {r[0] for r in rows}


def rebuild_memories(
    conn: psycopg.Connection,
    provider: EmbeddingProviderResource,
    slugs: Sequence[str],
    log: Log | None = None,
    chunk_size: int | None = None,
    connect: Connect | None = None,
) -> RebuildReport:
    """Write the missing memories of the personalities `slugs`; see the module docstring.

    `connect` opens more connections to the same database, for chunks that run side by side.
    """
    started = time.perf_counter()
    say = log or (lambda _line: None)
    report = RebuildReport()
    ids = report.personality_ids = personality_ids_for(conn, slugs)
    slug_of = {personality_id: slug for slug, personality_id in ids.items()}
    messages: dict[uuid.UUID, list[Message]] = {personality_id: [] for personality_id in ids.values()}
    for message in load_messages(conn, list(ids.values())):
        messages[message.personality_id].append(message)
    present = existing_memory_ids(conn, list(ids.values()))

    exchanges: list[Exchange] = []
    for slug, personality_id in ids.items():
        pairing = pair_messages(messages[personality_id])
        report.stats.add(pairing.stats)
        report.per_personality[slug] = PersonalityFigures(
            contexts=pairing.stats.contexts,
            exchanges=pairing.stats.exchanges,
            waiting=pairing.stats.unanswered_user_messages,
        )
        exchanges += pairing.exchanges
    by_id: dict[uuid.UUID, Exchange] = {}
    for exchange in exchanges:
        memory = exchange.memory_id
        earlier = by_id.get(memory)
        if earlier is None or _age(exchange) < _age(earlier):
            by_id[memory] = exchange  # identical content: the earliest exchange gives the memory
        if earlier is not None:
            report.duplicate_exchanges += 1
    report.expected_ids = set(by_id)
    pending: dict[uuid.UUID, Exchange] = {}
    for memory, exchange in by_id.items():
        figures = report.per_personality[slug_of[exchange.answer.personality_id]]
        if memory in present:
            figures.already_present += 1
            report.already_present += 1
        else:
            pending[memory] = exchange
    report.pending = len(pending)
    say(
        f"memories: {len(slugs)} personalities, {report.stats.contexts:,} contexts, "
        f"{report.stats.exchanges:,} exchanges, {report.already_present:,} memories present, "
        f"{report.pending:,} to write"
    )

    queue = sorted(pending.items(), key=lambda item: _age(item[1]))
    size = chunk_size or provider.max_inputs_per_request
    chunks = [queue[first : first + size] for first in range(0, len(queue), size)]
    done = 0
    for outcome in _embed_and_write_all(conn, connect, provider, chunks, log):
        _absorb(report, outcome, slug_of)
        done += outcome.size
        say(
            f"memories: {done:,}/{len(queue):,} embedded and written ({report.cache_hits:,} cache hits, "
            f"{report.requests:,} requests, {done / (time.perf_counter() - started):,.0f}/s)"
        )
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _ChunkOutcome:
    size: int
    embedded: CachedEmbeddings
    truncated: int
    rejected: list[tuple[uuid.UUID, Exchange, str]]
    written: Counter[uuid.UUID]


def _embed_and_write_all(
    conn: psycopg.Connection,
    connect: Connect | None,
    provider: EmbeddingProviderResource,
    chunks: list[list[tuple[uuid.UUID, Exchange]]],
    log: Log | None,
) -> Iterator[_ChunkOutcome]:
    """Each chunk embedded (through the cache) and written in its own transactions.

    With `connect`, as many chunks as the provider allows requests in flight run at once, each on
    a connection of its own, so one chunk's database writes overlap the others' requests. After a
    failure no new chunk starts; the ones running finish (and stay written), then the error goes on.
    """
    workers = max(1, provider.max_concurrent_requests) if connect is not None else 1
    if workers == 1 or len(chunks) <= 1:
        for part in chunks:
            yield _embed_and_write(conn, provider, part, log)
        return
    with ExitStack() as stack:
        idle: Queue[psycopg.Connection] = Queue()
        for _ in range(min(workers, len(chunks))):
            idle.put(stack.enter_context(connect()))

        def task(part):
            worker_conn = idle.get()
            try:
                return _embed_and_write(worker_conn, provider, part, log)
            finally:
                idle.put(worker_conn)

        with ThreadPoolExecutor(workers, thread_name_prefix="memories") as pool:
            waiting = iter(chunks)
            running = {pool.submit(task, part) for part in islice(waiting, workers)}
            failure: BaseException | None = None
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future.exception() is not None:
                        failure = failure or future.exception()
                    else:
                        yield future.result()
                    if failure is None:
                        running |= {pool.submit(task, part) for part in islice(waiting, 1)}
            if failure is not None:
                raise failure


def _absorb(report: RebuildReport, outcome: _ChunkOutcome, slug_of: dict) -> None:
    embedded = outcome.embedded
    report.cache_hits += embedded.cache_hits
    report.provider_inputs += embedded.provider_inputs
    report.requests += embedded.requests
    report.retries += embedded.retries
    report.tokens += embedded.tokens
    report.estimated_cost_usd += embedded.estimated_cost_usd
    report.texts_truncated += outcome.truncated
    for memory, exchange, reason in outcome.rejected:
        report.rejected += 1
        report.per_personality[slug_of[exchange.answer.personality_id]].rejected += 1
        if len(report.rejection_samples) < REJECTION_SAMPLES:
            report.rejection_samples.append(f"memory {memory} (answer {exchange.answer.id}): {reason}")
    for personality_id, written in outcome.written.items():
        report.memories_written += written
        report.per_personality[slug_of[personality_id]].written += written


def _age(exchange: Exchange) -> tuple:
    return (exchange.answer.created_at, exchange.answer.id)


def _embed_and_write(
    conn: psycopg.Connection,
    provider: EmbeddingProviderResource,
    part: list[tuple[uuid.UUID, Exchange]],
    log: Log | None,
) -> _ChunkOutcome:
    texts = [exchange.content for _, exchange in part]
    embedded = embed_with_cache(conn, provider, texts, log)
    rows, rejected = [], []
    for row, (memory, exchange) in enumerate(part):
        if row in embedded.rejected:
            rejected.append((memory, exchange, embedded.rejected[row]))
        else:
            rows.append((memory, exchange, embedded.vectors[row]))
    return _ChunkOutcome(
        size=len(part),
        embedded=embedded,
        truncated=sum(truncate_for_embedding(t)[1] for t in texts),
        rejected=rejected,
        written=write_memories(conn, rows),
    )


def write_memories(
    conn: psycopg.Connection, rows: list[tuple[uuid.UUID, Exchange, np.ndarray]]
) -> Counter[uuid.UUID]:
    """Binary COPY into staging, then insert what is missing, in one transaction.

    Returns the rows inserted per personality id (rows already present are not counted).
    """
    if not rows:
        return Counter()
    register_vector(conn)

    def transaction() -> list[tuple]:
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE stage_memories ("
                + ", ".join(f"{name} {kind}" for name, kind in _STAGE_COLUMNS)
                + ") ON COMMIT DROP"
            )
            with conn.cursor().copy("COPY stage_memories FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([kind for _, kind in _STAGE_COLUMNS])
                for memory, exchange, vector in rows:
                    answer = exchange.answer
                    copy.write_row(
                        (
                            memory,
                            answer.persona_id,
                            answer.personality_id,
                            exchange.content,
                            vector,
                            answer.channel_id,
                            answer.guild_id,
                            exchange.message_ids,
                            answer.created_at,
                        )
                    )
            return conn.execute(
                "INSERT INTO memories (id, persona_id, personality_id, content, embedding, is_summarized,"
                " canon_scope, summary_type, channel_id, guild_id, message_ids, created_at, source_system)"
                " SELECT id, persona_id, personality_id, content, embedding, false, %s, %s, channel_id,"
                " guild_id, message_ids, created_at, %s FROM stage_memories ORDER BY id"
                " ON CONFLICT (id) DO NOTHING"
                " RETURNING personality_id",
                (CANON_SCOPE, SUMMARY_TYPE, SOURCE_SYSTEM),
            ).fetchall()

    inserted = retry_deadlocks(transaction)
    return Counter(personality_id for (personality_id,) in inserted)
