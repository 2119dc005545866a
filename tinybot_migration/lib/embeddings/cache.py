"""The embedding cache: every text is looked up in the new DB first; only misses are paid for.

Keyed by (model, dimensions, h(text)), so a re-run over unchanged data makes zero provider
requests, and what a failed run already paid for is kept: when the provider fails on one batch,
the batches it finished are stored before the error goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from tinybot_migration.lib.embeddings.batches import estimate_tokens, truncate_for_embedding
from tinybot_migration.lib.embeddings.client import (
    ZERO_NORM,
    EmbeddingClient,
    EmbeddingProviderError,
    EmbeddingResult,
    usd_for_tokens,
)
from tinybot_migration.lib.ids import content_hash
from tinybot_migration.lib.postgres import retry_deadlocks
from tinybot_migration.lib.progress import Progress


@dataclass
class CachedEmbeddings:
    vectors: np.ndarray  # one row per input text, in order
    model: str
    cache_hits: int  # distinct texts found in the cache
    provider_inputs: int  # distinct texts the provider embedded (refused ones not counted)
    requests: int = 0
    retries: int = 0
    tokens: int = 0
    truncated: int = 0
    estimated_cost_usd: float = 0.0
    # Input row -> the provider's reason, for texts it refused; their vector rows stay zero.
    rejected: dict[int, str] = field(default_factory=dict)


@dataclass
class CostEstimate:
    """What embedding some texts would cost: the distinct ones not in the cache, their estimated
    tokens (as they would be sent, truncated to the per-input limit) and USD. Nothing is called."""

    texts: int = 0  # distinct texts the provider would embed
    cache_hits: int = 0  # distinct texts already in the cache
    tokens: int = 0
    estimated_cost_usd: float = 0.0

    def estimate_metadata(self, model: str) -> dict:
        return {
            "dry_run": True,
            "embedding_model": model,
            "texts_to_embed": self.texts,
            "cache_hits": self.cache_hits,
            "estimated_tokens": self.tokens,
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
        }


def estimate_cost(
    conn: psycopg.Connection | None, provider: EmbeddingClient, texts: Sequence[str]
) -> CostEstimate:
    """The bill for embedding `texts` through the cache; `conn` None means an empty cache (a new
    database without its schema yet). Reads only."""
    model, dimensions = cache_model_name(provider), provider.dimensions
    distinct = {content_hash(t): t for t in texts}
    cached: set[str] = set()
    if conn is not None and distinct:
        cached = {
            text_hash
            for (text_hash,) in conn.execute(
                "SELECT text_hash FROM tinybot_migration.embedding_cache WHERE model = %s AND dimensions = %s"
                " AND text_hash = ANY(%s)",
                (model, dimensions, list(distinct)),
            ).fetchall()
        }
    tokens = sum(
        estimate_tokens(truncate_for_embedding(text)[0]) for h, text in distinct.items() if h not in cached
    )
    usd = usd_for_tokens(model, tokens) if provider.effective_provider() == "openai" else 0.0
    return CostEstimate(len(distinct) - len(cached), len(cached), tokens, usd)


def cache_model_name(provider: EmbeddingClient) -> str:
    """The cache key's model: the provider's model, or the offline embedder's own name."""
    return provider.model if provider.effective_provider() == "openai" else f"hash-{provider.dimensions}"


def embed_with_cache(
    conn: psycopg.Connection,
    provider: EmbeddingClient,
    texts: Sequence[str],
    log: Progress | None = None,
) -> CachedEmbeddings:
    register_vector(conn)
    model, dimensions = cache_model_name(provider), provider.dimensions
    hashes = [content_hash(t) for t in texts]
    first_text = {}
    for text, text_hash in zip(texts, hashes, strict=True):
        first_text.setdefault(text_hash, text)
    found = {
        text_hash: _as_array(vector)
        for text_hash, vector in conn.execute(
            "SELECT text_hash, embedding FROM tinybot_migration.embedding_cache"
            " WHERE model = %s AND dimensions = %s AND text_hash = ANY(%s)",
            (model, dimensions, list(first_text)),
        ).fetchall()
    }
    misses = [h for h in first_text if h not in found]
    outcome = CachedEmbeddings(
        np.zeros((len(texts), dimensions), np.float32),
        model,
        cache_hits=len(found),
        provider_inputs=len(misses),
    )
    if misses:
        try:
            result = provider.embed([first_text[h] for h in misses], log)
        except EmbeddingProviderError as error:
            if error.partial is not None:
                _store(conn, model, dimensions, misses, error.partial)
            raise
        _store(conn, model, dimensions, misses, result)
        found.update(
            (text_hash, vector)
            for text_hash, vector, done in zip(misses, result.vectors, result.completed, strict=True)
            if done
        )
        outcome.provider_inputs = int(result.completed.sum())
        outcome.requests, outcome.retries, outcome.tokens = result.requests, result.retries, result.tokens
        outcome.truncated, outcome.estimated_cost_usd = result.truncated, result.estimated_cost_usd
        refused = {misses[position]: reason for position, reason in result.rejected.items()}
    else:
        refused = {}
    for row, text_hash in enumerate(hashes):
        if text_hash in refused:
            outcome.rejected[row] = refused[text_hash]
        else:
            outcome.vectors[row] = found[text_hash]
    return outcome


def _as_array(vector) -> np.ndarray:
    # pgvector loads an untyped `vector` column as its Vector class, a typed one as an array.
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)


def _store(
    conn: psycopg.Connection, model: str, dimensions: int, hashes: list[str], result: EmbeddingResult
) -> int:
    """Insert the completed vectors of `result` (binary COPY into staging, then upsert); one transaction."""
    done = [i for i in range(len(hashes)) if result.completed is None or result.completed[i]]
    if not done:
        return 0

    def transaction() -> None:
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE stage_embedding_cache (text_hash text, embedding vector) ON COMMIT DROP"
            )
            with conn.cursor().copy("COPY stage_embedding_cache FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "vector"])
                for i in done:
                    copy.write_row((hashes[i], result.vectors[i]))
            # Key order: concurrent chunks sharing texts then wait for each other, never deadlock.
            conn.execute(
                "INSERT INTO tinybot_migration.embedding_cache (model, dimensions, text_hash, embedding)"
                " SELECT %s, %s, text_hash, embedding FROM stage_embedding_cache ORDER BY text_hash"
                " ON CONFLICT DO NOTHING",
                (model, dimensions),
            )

    retry_deadlocks(transaction)
    return len(done)


def purge_zero_vectors(conn: psycopg.Connection) -> int:
    """Delete cache entries holding an all-zero vector (from a provider that answered zeros before
    vectors were checked), so those texts are embedded again; returns how many went."""
    return conn.execute(
        "DELETE FROM tinybot_migration.embedding_cache WHERE vector_norm(embedding) < %s", (ZERO_NORM,)
    ).rowcount
