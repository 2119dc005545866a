"""Retrieval parity: what Qdrant's search returned against what the bot's own memory query returns on
the new DB, for the same inputs (../shared/QDRANT.md §4, "Retrieval parity").

Pairs (a `persona-*` collection and a personality in it, as the bot searched them) are sampled by
size: the smallest, the median and the largest. A few of each pair's points serve as queries,
their landed vectors as the query vectors (no provider needed) and their createdAt as the cutoff.
Qdrant's answer is its search with the bot's filters (personalityId, createdAt < cutoff, top k,
score threshold), or, with no Qdrant reachable, the same search computed exactly over the landed
vectors (the bot's collections were exact too: indexing_threshold 0). The bot's answer is its
statement (`memories/bot_query.py`) with the new persona and personality ids.

Every Qdrant hit is then one of:
- **found**: its memory is in the bot's answer;
- **displaced**: its memory exists but would not place: the bot's answer holds k memories scoring
  at least as well, or the memory's own text scores below the threshold (a rebuilt memory's text is
  not the point's);
- **lost**: its memory would place but is missing from the answer (an approximate index);
- **missing**: no memory holds it, or the memory has no embedding: a migration bug;
- **dropped**: its point was decided superseded or rejected (with a reason, in the landing).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import psycopg
from qdrant_client import QdrantClient, models

from tinybot_migration.lib.memories.bot_query import (
    DEFAULT_LIMIT,
    DEFAULT_MIN_SIMILARITY,
    bot_memory_query,
    vector_literal,
)
from tinybot_migration.lib.qdrant.points import PERSONA, Layout
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS, QDRANT_POINTS

FOUND, DISPLACED, LOST, MISSING, DROPPED = "found", "displaced", "lost", "missing", "dropped"
HIT_CLASSES = (FOUND, DISPLACED, LOST, MISSING, DROPPED)
BUCKETS = ("smallest", "median", "largest")
PAIRS_PER_BUCKET = 2
QUERIES_PER_PAIR = 5
EXAMPLES = 5
_DECIDED_AWAY = ("superseded", "rejected")


@dataclass(frozen=True)
class Pair:
    """A persona collection and one personality in it, with the new ids of both."""

    collection: str
    personality_key: str  # the payload's personalityId (old DB id)
    points: int
    persona_id: uuid.UUID
    personality_id: uuid.UUID


@dataclass(frozen=True)
class QueryPoint:
    ref: str
    vector: np.ndarray
    created_at_ms: int


@dataclass
class BucketParity:
    bucket: str
    pairs: list[str] = field(default_factory=list)
    queries: int = 0
    counts: Counter = field(default_factory=Counter)  # hit class -> hits
    examples: list[str] = field(default_factory=list)  # missing and lost hits, named

    @property
    def hits(self) -> int:
        return sum(self.counts.values())


@dataclass
class Parity:
    qdrant_answered_by: str  # "qdrant" (its own search) or "landed vectors" (computed exactly)
    buckets: dict[str, BucketParity] = field(default_factory=dict)
    bot_query_ms: list[float] = field(default_factory=list)  # each bot query's wall time, as run here

    def latency_ms(self, q: float) -> float | None:
        return round(float(np.percentile(self.bot_query_ms, q)), 2) if self.bot_query_ms else None

    def total(self, hit_class: str) -> int:
        return sum(b.counts.get(hit_class, 0) for b in self.buckets.values())

    @property
    def queries(self) -> int:
        return sum(b.queries for b in self.buckets.values())


def sampled_pairs(conn: psycopg.Connection) -> dict[str, list[Pair]]:
    """Pairs by bucket: those of the smallest, median and largest Qdrant point counts among the
    pairs of two points or more decided to stand for a persona of the new DB (deterministic)."""
    rows = conn.execute(
        f"""
        SELECT collection, payload->>'personalityId', count(*),
               (array_agg(persona_id) FILTER (WHERE persona_id IS NOT NULL))[1],
               (array_agg(personality_id) FILTER (WHERE persona_id IS NOT NULL))[1]
        FROM {QDRANT_POINTS.qualified}
        WHERE collection LIKE 'persona-%%' AND collection NOT LIKE 'persona-legacy-%%'
        GROUP BY 1, 2
        HAVING bool_or(persona_id IS NOT NULL) AND count(*) > 1
        ORDER BY 3, 1, 2
        """
    ).fetchall()
    pairs = [Pair(*row) for row in rows if Layout.of(row[0]).kind == PERSONA]
    if not pairs:
        return {}
    middle = len(pairs) // 2
    picks = {
        "smallest": range(0, PAIRS_PER_BUCKET),
        "median": range(middle, middle + PAIRS_PER_BUCKET),
        "largest": range(len(pairs) - PAIRS_PER_BUCKET, len(pairs)),
    }
    return {bucket: [pairs[i] for i in indexes if 0 <= i < len(pairs)] for bucket, indexes in picks.items()}


def _pair_points(conn: psycopg.Connection, pair: Pair, standing_only: bool) -> list[tuple[str, list, float]]:
    """(ref, vector, createdAt) of the pair's points with a 1536-d vector and a numeric createdAt;
    `standing_only`: those decided matched or imported."""
    decided = " AND outcome IN ('matched', 'imported')" if standing_only else ""
    return conn.execute(
        f"SELECT collection || '/' || point_id, vector, (payload->>'createdAt')::numeric FROM {QDRANT_POINTS.qualified}"
        " WHERE collection = %s AND payload->>'personalityId' = %s AND array_length(vector, 1) = %s"
        f" AND jsonb_typeof(payload->'createdAt') = 'number'{decided}",
        (pair.collection, pair.personality_key, EMBEDDING_DIMENSIONS),
    ).fetchall()


def query_points(conn: psycopg.Connection, pair: Pair) -> list[QueryPoint]:
    """The pair's points that serve as queries: matched or imported, with a usable vector, by id hash."""
    rows = sorted(_pair_points(conn, pair, True), key=lambda row: hashlib.sha256(row[0].encode()).hexdigest())
    return [
        QueryPoint(ref, np.asarray(v, dtype=np.float32), int(ms)) for ref, v, ms in rows[:QUERIES_PER_PAIR]
    ]


# --- Qdrant's answer ------------------------------------------------------------------------------


def qdrant_search(client: QdrantClient, pair: Pair, query: QueryPoint) -> list[tuple[str, float]]:
    """The bot's search on Qdrant: its persona collection, its personality, older than the cutoff."""
    response = client.query_points(
        pair.collection,
        query=query.vector.tolist(),
        query_filter=_bot_filter(pair.personality_key, query.created_at_ms),
        limit=DEFAULT_LIMIT,
        score_threshold=DEFAULT_MIN_SIMILARITY,
        with_payload=False,
    )
    return [(f"{pair.collection}/{point.id}", float(point.score)) for point in response.points]


def _bot_filter(personality_key: str, cutoff_ms: int) -> models.Filter:
    return models.Filter(
        must=[
            models.FieldCondition(key="personalityId", match=models.MatchValue(value=personality_key)),
            models.FieldCondition(key="createdAt", range=models.Range(lt=cutoff_ms)),
        ]
    )


class LandedSearch:
    """Qdrant's search computed exactly over the landed vectors of a pair (Qdrant may be gone)."""

    def __init__(self, conn: psycopg.Connection, pair: Pair) -> None:
        rows = _pair_points(conn, pair, False)
        self.refs = [row[0] for row in rows]
        vectors = np.asarray([row[1] for row in rows], dtype=np.float32).reshape(
            len(rows), EMBEDDING_DIMENSIONS
        )
        norms = np.linalg.norm(vectors, axis=1)
        self.unit = vectors / np.where(norms == 0, 1, norms)[:, None]  # Qdrant normalises cosine vectors
        self.created = np.asarray([float(row[2]) for row in rows])

    def search(self, query: QueryPoint) -> list[tuple[str, float]]:
        scores = self.unit @ (query.vector / np.linalg.norm(query.vector))
        eligible = np.flatnonzero((self.created < query.created_at_ms) & (scores >= DEFAULT_MIN_SIMILARITY))
        best = eligible[np.argsort(-scores[eligible], kind="stable")][:DEFAULT_LIMIT]
        return [(self.refs[i], float(scores[i])) for i in best]


# --- the comparison ---------------------------------------------------------------------------------


def measure_parity(conn: psycopg.Connection, client: QdrantClient | None = None) -> Parity:
    """Compare Qdrant's answers (its own search with `client`, else computed over the landing) with
    the bot's query on `conn`, per bucket (module docstring)."""
    parity = Parity("qdrant" if client is not None else "landed vectors")
    for bucket, pairs in sampled_pairs(conn).items():
        result = parity.buckets[bucket] = BucketParity(bucket)
        for pair in pairs:
            result.pairs.append(f"{pair.collection} × {pair.personality_key} ({pair.points:,} points)")
            landed = None if client is not None else LandedSearch(conn, pair)
            for query in query_points(conn, pair):
                hits = qdrant_search(client, pair, query) if client is not None else landed.search(query)
                _classify(conn, pair, query, hits, result, parity.bot_query_ms)
    return parity


def _classify(
    conn: psycopg.Connection,
    pair: Pair,
    query: QueryPoint,
    hits: list[tuple[str, float]],
    result: BucketParity,
    timings: list[float],
) -> None:
    result.queries += 1
    cutoff = datetime.fromtimestamp(query.created_at_ms / 1000, UTC)
    started = time.perf_counter()
    answer = bot_memory_query(query.vector.tolist(), pair.persona_id, pair.personality_id, cutoff).run(conn)
    timings.append((time.perf_counter() - started) * 1000)
    answered = {row.id for row in answer}
    floor = min(row.score for row in answer) if len(answer) == DEFAULT_LIMIT else DEFAULT_MIN_SIMILARITY
    decided = _decisions(conn, [ref for ref, _ in hits])
    held = _memories(conn, [m for _, m in decided.values() if m is not None], query, cutoff)
    for ref, _ in hits:
        outcome, memory = decided.get(ref, (None, None))
        hit_class = _hit_class(outcome, memory, held, answered, floor)
        result.counts[hit_class] += 1
        if hit_class in (MISSING, LOST) and len(result.examples) < EXAMPLES:
            result.examples.append(
                f"query {query.ref}: hit {ref} ({outcome}, memory {memory}) is {hit_class}"
            )


def _hit_class(
    outcome: str | None, memory: uuid.UUID | None, held: dict, answered: set[uuid.UUID], floor: float
) -> str:
    if outcome in _DECIDED_AWAY:
        return DROPPED
    if memory is None or memory not in held or held[memory] is None:
        return MISSING
    if memory in answered:
        return FOUND
    score = held[memory]
    return LOST if score > floor else DISPLACED


def _decisions(conn: psycopg.Connection, refs: list[str]) -> dict[str, tuple[str | None, uuid.UUID | None]]:
    split = [ref.partition("/") for ref in refs]
    rows = conn.execute(
        f"SELECT collection || '/' || point_id, outcome, memory_id FROM {QDRANT_POINTS.qualified}"
        " JOIN unnest(%s::text[], %s::text[]) AS r(collection, point_id) USING (collection, point_id)",
        ([c for c, _, _ in split], [p for _, _, p in split]),
    ).fetchall()
    return {ref: (outcome, memory) for ref, outcome, memory in rows}


def _memories(
    conn: psycopg.Connection, ids: list[uuid.UUID], query: QueryPoint, cutoff: datetime
) -> dict[uuid.UUID, float | None]:
    """memory id -> its score for the query where it would qualify (NULL embedding: None; created
    after the cutoff: below any floor)."""
    literal = vector_literal(query.vector)
    rows = conn.execute(
        "SELECT id, CASE WHEN embedding IS NULL THEN NULL"
        " WHEN created_at >= %s::timestamptz THEN -1 ELSE 1 - (embedding <=> %s::vector) END"
        " FROM memories WHERE id = ANY(%s)",
        (cutoff, literal, ids),
    ).fetchall()
    return {memory: None if score is None else float(score) for memory, score in rows}
