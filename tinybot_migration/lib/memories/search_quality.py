"""How good and how fast the bot's search is on the data actually migrated.

Personas are sampled by size (the smallest, the median and the largest), each queried with the
text of some of its own memories cut in half (a paraphrase by truncation, embedded through the
cache so a re-run pays nothing). Every query runs the bot's own statement (`bot_query.py`) with
whatever indexes and settings the database has, timed, with and without the threshold, and again
as `EXACT_QUERY` (exact distance over every row of the persona, an order no vector index can
serve); recall@15 (the bot's k) counts a returned memory as right when its score reaches the exact
15th score (ties at the cut are not errors), and a query that returns fewer rows than the exact
answer has is counted apart: the trap of a filtered HNSW scan.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector

from tinybot_migration.lib.embeddings.cache import embed_with_cache
from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.memories.bot_query import DEFAULT_LIMIT, DEFAULT_MIN_SIMILARITY, bot_memory_query
from tinybot_migration.lib.memories.vector_index import PersonaIndex, Scope, persona_indexes

RECALL_AT = DEFAULT_LIMIT  # the bot's k
NO_THRESHOLD = -1.0
THRESHOLDS = {"threshold": DEFAULT_MIN_SIMILARITY, "no_threshold": NO_THRESHOLD}
SCORE_TOLERANCE = 1e-6
# The bot's filters and threshold, ranked by `distance + 0`: no vector index can serve that order,
# so the persona's rows are all read and ranked exactly (the reference, not the bot's statement).
EXACT_QUERY = """
SELECT id, 1 - (embedding <=> %(q)s) FROM memories
WHERE persona_id = %(persona)s AND embedding <=> %(q)s < %(max_distance)s
ORDER BY (embedding <=> %(q)s) + 0, id
LIMIT %(limit)s
"""


@dataclass
class BucketFigures:
    personas: int = 0
    rows: int = 0  # memories of the largest persona sampled in the bucket
    latencies_ms: list[float] = field(default_factory=list)  # with and without the threshold
    recalls: dict[str, list[float]] = field(default_factory=lambda: {which: [] for which in THRESHOLDS})
    fewer: int = 0  # searches that returned fewer rows than the exact answer has

    def p(self, percent: float) -> float:
        return float(np.percentile(self.latencies_ms, percent)) if self.latencies_ms else 0.0

    def recall(self, which: str) -> float:
        """recall@k of the bucket: the mean over its queries (the usual definition)."""
        return float(np.mean(self.recalls[which])) if self.recalls[which] else 1.0

    def worst_query_recall(self, which: str) -> float:
        return min(self.recalls[which], default=1.0)


@dataclass
class SearchQuality:
    buckets: dict[str, BucketFigures] = field(default_factory=dict)
    queries: int = 0
    example: str = ""  # one search, for people to read
    # (persona, query vector) of the largest persona's first query: the plan check EXPLAINs it.
    largest_query: tuple[uuid.UUID, np.ndarray] | None = None

    @property
    def min_recall(self) -> float:
        return min((b.recall(w) for b in self.buckets.values() for w in THRESHOLDS), default=1.0)

    @property
    def fewer(self) -> int:
        return sum(b.fewer for b in self.buckets.values())

    @property
    def worst_p95_ms(self) -> float:
        return max((b.p(95) for b in self.buckets.values()), default=0.0)


def sample_personas(conn: psycopg.Connection, per_bucket: int) -> dict[str, list[tuple[uuid.UUID, int]]]:
    """(persona, memories) for the smallest, the median and the largest personas with memories."""
    sizes = conn.execute(
        "SELECT persona_id, count(*) FROM memories WHERE persona_id IS NOT NULL AND embedding IS NOT NULL"
        " GROUP BY persona_id ORDER BY count(*), persona_id"
    ).fetchall()
    if not sizes:
        return {}
    middle = max(0, len(sizes) // 2 - per_bucket // 2)
    return {
        "smallest": sizes[:per_bucket],
        "median": sizes[middle : middle + per_bucket],
        "largest": sizes[-per_bucket:],
    }


def query_texts(conn: psycopg.Connection, persona_id: uuid.UUID, count: int) -> list[str]:
    """Some of the persona's own memories, each cut to its first half of words."""
    rows = conn.execute(
        "SELECT content FROM memories WHERE persona_id = %s ORDER BY id LIMIT %s", (persona_id, count)
    ).fetchall()
    texts = []
    for (content,) in rows:
        words = content.split()
        texts.append(" ".join(words[: max(1, len(words) // 2)]))
    return texts


@dataclass
class QuerySample:
    """One query of the measurement: a persona of a size bucket and a vector, with the exact
    answers (computed once, whatever the plan measured against them)."""

    bucket: str
    persona_id: uuid.UUID
    persona_rows: int
    text: str
    vector: np.ndarray
    exact: dict[float, list[tuple[uuid.UUID, float]]] = field(default_factory=dict)


def sample_queries(
    conn: psycopg.Connection,
    provider: EmbeddingClient,
    personas_per_bucket: int = 3,
    queries_per_persona: int = 5,
) -> list[QuerySample]:
    """The queries `measure_search` runs, smallest bucket first (the largest persona last), each
    with its exact answers with and without the threshold."""
    register_vector(conn)
    samples = []
    for bucket, personas in sample_personas(conn, personas_per_bucket).items():
        for persona_id, rows in personas:
            texts = query_texts(conn, persona_id, queries_per_persona)
            vectors = embed_with_cache(conn, provider, texts).vectors if texts else []
            for text, vector in zip(texts, vectors, strict=True):
                sample = QuerySample(bucket, persona_id, rows, text, vector)
                for threshold in THRESHOLDS.values():
                    sample.exact[threshold] = exact_search(conn, vector, persona_id, threshold)
                samples.append(sample)
    return samples


def measure_search(
    conn: psycopg.Connection,
    provider_or_samples: EmbeddingClient | list[QuerySample],
    personas_per_bucket: int = 3,
    queries_per_persona: int = 5,
    repeats: int = 3,
) -> SearchQuality:
    """Latency and recall of the bot's query over sampled personas; see the module docstring. Each search runs
    `repeats` times and counts with its median time, so that one stall of a busy machine is not
    taken for the plan's tail."""
    samples = (
        provider_or_samples
        if isinstance(provider_or_samples, list)
        else sample_queries(conn, provider_or_samples, personas_per_bucket, queries_per_persona)
    )
    register_vector(conn)
    quality = SearchQuality()
    for sample in samples:
        figures = quality.buckets.setdefault(sample.bucket, BucketFigures())
        figures.rows = max(figures.rows, sample.persona_rows)
        for which, threshold in THRESHOLDS.items():
            query = bot_memory_query(sample.vector, sample.persona_id, min_similarity=threshold)
            timings = []
            for _ in range(max(1, repeats)):
                started = time.perf_counter()
                found = [(memory.id, memory.score) for memory in query.run(conn)]
                timings.append((time.perf_counter() - started) * 1000)
            figures.latencies_ms.append(float(np.median(timings)))
            figures.recalls[which].append(recall_at(found, sample.exact[threshold]))
            figures.fewer += len(found) < len(sample.exact[threshold])
        quality.queries += 1
    for bucket, figures in quality.buckets.items():
        figures.personas = len({s.persona_id for s in samples if s.bucket == bucket})
    largest = [s for s in samples if s.bucket == "largest"]
    if largest:
        biggest = max(largest, key=lambda s: s.persona_rows)
        quality.largest_query = (biggest.persona_id, biggest.vector)
        quality.example = _example(conn, biggest.persona_id, largest[0].text, largest[0].vector)
    return quality


def exact_search(
    conn: psycopg.Connection, vector, persona_id: uuid.UUID, threshold: float
) -> list[tuple[uuid.UUID, float]]:
    """(id, score) of the bot's search done exactly: every row of the persona, by exact distance."""
    params = {"q": vector, "persona": persona_id, "max_distance": 1 - threshold, "limit": DEFAULT_LIMIT}
    return conn.execute(EXACT_QUERY, params).fetchall()


def recall_at(
    found: list[tuple[uuid.UUID, float]], exact: list[tuple[uuid.UUID, float]], k: int = RECALL_AT
) -> float:
    """Share of the exact top k that the search matched, a tie at the k-th score counting as a match."""
    wanted = exact[:k]
    if not wanted:
        return 1.0 if not found[:k] else 0.0
    cut = wanted[-1][1] - SCORE_TOLERANCE
    return min(1.0, sum(1 for _, score in found[:k] if score >= cut) / len(wanted))


def _example(conn: psycopg.Connection, persona_id: uuid.UUID, text: str, vector) -> str:
    found = bot_memory_query(vector, persona_id, limit=1).run(conn)
    if not found:
        return f"persona {persona_id}, query {text[:60]!r}: nothing above the threshold"
    return (
        f"persona {persona_id}, query {text[:60]!r} → {found[0].readable_content()[:80]!r} "
        f"(score {found[0].score:.3f})"
    )


def search_plan(
    conn: psycopg.Connection, persona_id: uuid.UUID, vector, personality_id: uuid.UUID | None = None
) -> str:
    """EXPLAIN of the bot's statement for one persona (and personality), with the bot's defaults."""
    return bot_memory_query(vector, persona_id, personality_id).explain(conn)


@dataclass(frozen=True)
class PersonaPlan:
    persona_id: uuid.UUID
    personality_id: uuid.UUID | None  # the query's personality filter, when it has one
    index: str | None  # the index of that scope, when it has one
    plan: str


@dataclass
class SearchPlans:
    """What the plan check judges, read in a session like the bot's (a new one, with the
    database's settings): the plan of the bot's query for the largest persona sampled and for every
    scope with its own index, the persona indexes, and the session's iterative scan setting."""

    largest: PersonaPlan | None
    indexed: list[PersonaPlan]
    indexes: dict[Scope, PersonaIndex]
    iterative_scan: str


def search_plans(conn: psycopg.Connection, quality: SearchQuality) -> SearchPlans:
    """EXPLAIN the bot's query (the bot's defaults, no cutoff) for the largest persona
    `measure_search` sampled (no personality) and, with one of its own memories as the query, for
    each scope with its own index (with the personality when the scope has one)."""
    register_vector(conn)
    indexes = persona_indexes(conn)
    largest = None
    if quality.largest_query is not None:
        persona, vector = quality.largest_query
        own = indexes.get((persona, None))
        largest = PersonaPlan(persona, None, own.name if own else None, search_plan(conn, persona, vector))
    indexed = []
    for (persona, personality), index in sorted(indexes.items(), key=lambda item: item[1].name):
        row = conn.execute(
            "SELECT embedding FROM memories WHERE persona_id = %s AND (%s::uuid IS NULL OR personality_id = %s)"
            " AND embedding IS NOT NULL ORDER BY id LIMIT 1",
            (persona, personality, personality),
        ).fetchone()
        if row is not None:
            vector = row[0].to_numpy() if isinstance(row[0], Vector) else row[0]  # binary results are Vector
            plan = search_plan(conn, persona, vector, personality)
            indexed.append(PersonaPlan(persona, personality, index.name, plan))
    iterative_scan = conn.execute("SELECT current_setting('hnsw.iterative_scan', true)").fetchone()[0]
    return SearchPlans(largest, indexed, indexes, iterative_scan or "off")
