"""Qdrant vectors reused only when proven (../shared/QDRANT.md §4, "Vectors").

A landed vector may stand in for an embedding of its point's text (seeded into the embedding
cache, so the shapes.inc import and the Qdrant-only memories take it from there like any cached
vector) only when all of these hold:
- the store's declared model (`QDRANT_EMBEDDING_MODEL`; no payload names one) is the model the
  cache is keyed by now;
- the vector is finite, 1536-d and unit length;
- its **class** agrees: points are grouped by where they came from (collection layout, personality,
  text format: the bot's two live formats or anything else, e.g. shapes.inc results), and a few
  points of each class, chosen by a hash of their ids, are embedded again through the provider
  (not the cache, which may hold seeded vectors); every sample must come back at cosine >=
  `MIN_COSINE`. A class re-embedded after a rename (QDRANT.md: newlines replaced by spaces, so its
  vectors are not embeddings of their stored text) fails here as a whole.

Verdicts are kept in `qdrant_vector_classes` with the samples they were made on: a re-run over an
unchanged landing asks the provider nothing. A seeded row never replaces a cached one.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from tinybot_migration.lib.embeddings.batches import estimate_tokens
from tinybot_migration.lib.embeddings.cache import cache_model_name
from tinybot_migration.lib.embeddings.client import EmbeddingClient, usd_for_tokens
from tinybot_migration.lib.ids import content_hash
from tinybot_migration.lib.progress import Progress, quiet
from tinybot_migration.lib.qdrant.points import Layout
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS, QDRANT_POINTS, QDRANT_VECTOR_CLASSES

MIN_COSINE = 0.999
SAMPLES_PER_CLASS = 3
UNIT_TOLERANCE = 1e-3
REUSED, NOT_REUSED = "reused", "not reused"
LIVE_USERNAME, LIVE_PERSONA, OTHER_TEXT = "live: User (name)", "live: persona name", "other"
_FETCH_ROWS = 2_000


@dataclass
class VectorClass:
    key: str
    points: int = 0
    eligible: int = 0  # finite, 1536-d, unit length, with text content
    samples: list[tuple[str, str]] = field(default_factory=list)  # (ref, text), by ref
    sample_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # ref -> landed vector
    min_cosine: float | None = None
    verdict: str = NOT_REUSED
    reason: str = ""


@dataclass
class VectorReuse:
    declared_model: str
    cache_model: str
    classes: dict[str, VectorClass] = field(default_factory=dict)
    sample_inputs: int = 0  # texts sent to the provider to prove classes (0 on a re-run)
    seeded: int = 0  # cache rows written from landed vectors
    already_cached: int = 0  # texts of reused classes the cache held already
    tokens_saved: int = 0  # of the seeded texts, as the provider would count them (estimated)
    usd_saved: float = 0.0
    seconds: float = 0.0

    @property
    def reused_classes(self) -> list[VectorClass]:
        return [c for c in self.classes.values() if c.verdict == REUSED]

    @property
    def points_reused(self) -> int:
        return sum(c.eligible for c in self.reused_classes)


def text_format(content: str, personality_name: str | None) -> str:
    """Which writer's text this is: the bot's two live formats, or anything else (shapes.inc...)."""
    if content.startswith("User ("):
        return LIVE_USERNAME
    if personality_name and f"\n{personality_name}: " in content:
        return LIVE_PERSONA
    return OTHER_TEXT


def class_key(collection: str, personality: str | None, content: str, name: str | None) -> str:
    return f"{Layout.of(collection).kind}|{personality or '-'}|{text_format(content, name)}"


def is_reusable(vector: list[float] | None) -> np.ndarray | None:
    """The vector as float32 when it may stand for an embedding at all (finite, 1536-d, unit length)."""
    if vector is None or len(vector) != EMBEDDING_DIMENSIONS:
        return None
    array = np.asarray(vector, dtype=np.float32)
    if not np.isfinite(array).all() or abs(float(np.linalg.norm(array)) - 1.0) > UNIT_TOLERANCE:
        return None
    return array


def _landed(conn: psycopg.Connection) -> Iterator[tuple[str, str, str, np.ndarray | None]]:
    """(ref, class key, text, reusable vector or None) of every landed point with text content."""
    with conn.transaction(), conn.cursor(name="qdrant_vectors") as cursor:
        cursor.itersize = _FETCH_ROWS
        cursor.execute(
            f"SELECT collection, point_id, payload->>'content', payload->>'personalityId',"
            f" payload->>'personalityName', vector FROM {QDRANT_POINTS.qualified}"
            " WHERE jsonb_typeof(payload->'content') = 'string'"
        )
        for collection, point_id, content, personality, name, vector in cursor:
            yield (
                f"{collection}/{point_id}",
                class_key(collection, personality, content, name),
                content,
                is_reusable(vector),
            )


def survey_classes(conn: psycopg.Connection) -> dict[str, VectorClass]:
    """Every class with its counts and its samples (the eligible points of least id hash)."""
    classes: dict[str, VectorClass] = {}
    heaps: dict[str, list] = {}
    for ref, key, content, vector in _landed(conn):
        found = classes.setdefault(key, VectorClass(key))
        found.points += 1
        if vector is None:
            continue
        found.eligible += 1
        rank = hashlib.sha256(ref.encode()).hexdigest()
        heap = heaps.setdefault(key, [])
        entry = (_negated(rank), ref, content, vector)
        if len(heap) < SAMPLES_PER_CLASS:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)
    for key, heap in heaps.items():
        chosen = sorted(heap, key=lambda e: e[1])
        classes[key].samples = [(ref, text) for _, ref, text, _ in chosen]
        classes[key].sample_vectors = {ref: vector for _, ref, _, vector in chosen}
    return classes


def _negated(rank: str) -> str:
    """A max-heap key on a hex string for heapq's min-heap: keeps the smallest hashes."""
    return rank.translate(str.maketrans("0123456789abcdef", "fedcba9876543210"))


def prove_and_seed(
    conn: psycopg.Connection, provider: EmbeddingClient, declared_model: str, log: Progress | None = None
) -> VectorReuse:
    """Judge every class (module docstring), record the verdicts, and seed the cache with the
    vectors of the classes that agree. `conn` in autocommit mode."""
    log = log or quiet
    started = time.perf_counter()
    reuse = VectorReuse(declared_model, cache_model_name(provider))
    reuse.classes = survey_classes(conn)
    log(f"qdrant vectors: {len(reuse.classes):,} classes of landed points")
    if declared_model != reuse.cache_model:
        for vector_class in reuse.classes.values():
            vector_class.reason = f"the store's declared model {declared_model} is not the model embedding now ({reuse.cache_model})"
    else:
        _judge(conn, provider, reuse)
    _record_verdicts(conn, reuse)
    if reuse.reused_classes:
        _seed(conn, provider, reuse)
    reuse.seconds = time.perf_counter() - started
    return reuse


def _judge(conn: psycopg.Connection, provider: EmbeddingClient, reuse: VectorReuse) -> None:
    """Each class's verdict: kept from an earlier run on the same samples, else proven now."""
    known = {
        key: (samples, verdict, reason, cosine)
        for key, samples, verdict, reason, cosine in conn.execute(
            f"SELECT class_key, sample_refs, verdict, reason, min_cosine FROM {QDRANT_VECTOR_CLASSES.qualified}"
            " WHERE model = %s",
            (reuse.cache_model,),
        )
    }
    to_prove: list[VectorClass] = []
    for vector_class in reuse.classes.values():
        refs = [ref for ref, _ in vector_class.samples]
        if not refs:
            vector_class.reason = "no finite, 1536-d, unit-length vector with text"
        elif (earlier := known.get(vector_class.key)) is not None and earlier[0] == refs:
            _, vector_class.verdict, vector_class.reason, vector_class.min_cosine = earlier
        else:
            to_prove.append(vector_class)
    texts = [text for c in to_prove for _, text in c.samples]
    if not texts:
        return
    result = provider.embed(texts)
    reuse.sample_inputs = len(texts)
    fresh = iter(result.vectors)
    for vector_class in to_prove:
        cosines = [cosine(vector_class.sample_vectors[ref], next(fresh)) for ref, _ in vector_class.samples]
        vector_class.min_cosine = round(min(cosines), 6)
        agrees = vector_class.min_cosine >= MIN_COSINE
        vector_class.verdict = REUSED if agrees else NOT_REUSED
        vector_class.reason = (
            f"{len(cosines)} sampled re-embeddings agree (cosine >= {MIN_COSINE})"
            if agrees
            else f"a sampled re-embedding disagrees (cosine {vector_class.min_cosine} < {MIN_COSINE}): "
            "these vectors are not embeddings of their text"
        )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _record_verdicts(conn: psycopg.Connection, reuse: VectorReuse) -> None:
    with conn.transaction():
        conn.execute(f"DELETE FROM {QDRANT_VECTOR_CLASSES.qualified} WHERE model = %s", (reuse.cache_model,))
        with conn.cursor().copy(
            f"COPY {QDRANT_VECTOR_CLASSES.qualified} (model, class_key, points, eligible, sample_refs,"
            " min_cosine, verdict, reason) FROM STDIN"
        ) as copy:
            for c in reuse.classes.values():
                refs = [ref for ref, _ in c.samples]
                copy.write_row(
                    (reuse.cache_model, c.key, c.points, c.eligible, refs, c.min_cosine, c.verdict, c.reason)
                )


def _seed(conn: psycopg.Connection, provider: EmbeddingClient, reuse: VectorReuse) -> None:
    """Cache rows for the texts of reused classes that the cache does not hold yet."""
    register_vector(conn)
    reused = {c.key for c in reuse.reused_classes}
    batch: dict[str, tuple[str, np.ndarray]] = {}
    for _, key, content, vector in _landed(conn):
        if key in reused and vector is not None:
            batch.setdefault(content_hash(content), (content, vector))
            if len(batch) >= _FETCH_ROWS:
                _seed_batch(conn, reuse, batch)
                batch = {}
    _seed_batch(conn, reuse, batch)
    if provider.effective_provider() == "openai":
        reuse.usd_saved = usd_for_tokens(provider.model, reuse.tokens_saved)


def _seed_batch(
    conn: psycopg.Connection, reuse: VectorReuse, batch: dict[str, tuple[str, np.ndarray]]
) -> None:
    if not batch:
        return
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_seeded_cache (text_hash text, embedding vector) ON COMMIT DELETE ROWS"
        )
        conn.execute("DELETE FROM stage_seeded_cache")  # inside the read's transaction: no commit empties it
        with conn.cursor().copy("COPY stage_seeded_cache FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector"])
            for text_hash, (_, vector) in batch.items():
                copy.write_row((text_hash, vector))
        inserted = {
            row[0]
            for row in conn.execute(
                "INSERT INTO tinybot_migration.embedding_cache (model, dimensions, text_hash, embedding)"
                " SELECT %s, %s, text_hash, embedding FROM stage_seeded_cache ORDER BY text_hash"
                " ON CONFLICT DO NOTHING RETURNING text_hash",
                (reuse.cache_model, EMBEDDING_DIMENSIONS),
            ).fetchall()
        }
    reuse.seeded += len(inserted)
    reuse.already_cached += len(batch) - len(inserted)
    reuse.tokens_saved += sum(estimate_tokens(batch[h][0]) for h in inserted)
