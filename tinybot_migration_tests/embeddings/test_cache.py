"""No text is paid for twice: the cache in the new DB, against the local OpenAI-compatible server."""

import numpy as np
import pytest

from tinybot_migration.lib.embeddings.cache import embed_with_cache
from tinybot_migration.lib.embeddings.client import EmbeddingClient, EmbeddingProviderError
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for, offline_client

TEXTS = [f"{{user}}: hello {i} 👋\n{{assistant}}: hi {i}" for i in range(30)]


def openai_provider(server: OpenAITestServer, **overrides) -> EmbeddingClient:
    return client_for(server, **overrides)


def test_a_second_run_makes_no_request_and_duplicates_are_sent_once(new_db):
    with OpenAITestServer() as server:
        provider = openai_provider(server, max_inputs_per_request=8)
        first = embed_with_cache(new_db, provider, TEXTS + TEXTS[:5])
        assert first.provider_inputs == 30 and first.cache_hits == 0 and first.requests == 4
        sent = sum(len(r) for r in server.requests)
        second = embed_with_cache(new_db, provider, TEXTS)
        assert second.provider_inputs == 0 and second.cache_hits == 30 and second.requests == 0
        assert sum(len(r) for r in server.requests) == sent == 30
    assert np.allclose(second.vectors, np.stack([hash_embedding(t, 1536) for t in TEXTS]), atol=1e-6)
    assert np.allclose(first.vectors[30:], first.vectors[:5])


def test_finished_batches_survive_a_failure_and_are_not_paid_again(new_db):
    with OpenAITestServer() as server:
        # One request at a time: two batches of 10 succeed, the one left fails for good (which one
        # is last depends on which waiting batch takes the freed request slot first).
        provider = openai_provider(
            server, max_inputs_per_request=10, max_concurrent_requests=1, max_retries=1
        )
        server.fail_after = 2
        with pytest.raises(EmbeddingProviderError, match=r"batch [123]/3 .* failed after 2 attempt"):
            embed_with_cache(new_db, provider, TEXTS)
        assert new_db.execute("SELECT count(*) FROM tinybot_migration.embedding_cache").fetchone()[0] == 20
        server.fail_after = None
        server.requests.clear()
        result = embed_with_cache(new_db, provider, TEXTS)
    assert result.cache_hits == 20 and result.provider_inputs == 10
    assert [len(r) for r in server.requests] == [10]
    assert np.allclose(result.vectors, np.stack([hash_embedding(t, 1536) for t in TEXTS]), atol=1e-6)


def test_the_offline_provider_is_cached_under_its_own_name(new_db):
    provider = offline_client()
    assert embed_with_cache(new_db, provider, TEXTS[:3]).provider_inputs == 3
    assert embed_with_cache(new_db, provider, TEXTS[:3]).cache_hits == 3
    assert (
        new_db.execute("SELECT DISTINCT model FROM tinybot_migration.embedding_cache").fetchone()[0]
        == "hash-1536"
    )


def test_a_wrong_dimension_caches_nothing(new_db):
    from tinybot_migration.lib.embeddings.client import EmbeddingDimensionError

    with OpenAITestServer(dimensions=512) as server, pytest.raises(EmbeddingDimensionError):
        embed_with_cache(new_db, openai_provider(server, max_inputs_per_request=10), TEXTS)
    assert new_db.execute("SELECT count(*) FROM tinybot_migration.embedding_cache").fetchone()[0] == 0


@pytest.mark.parametrize("fault", ["zero", "nan", "missing"])
def test_a_malformed_batch_is_never_cached_and_the_valid_ones_before_it_are_kept(new_db, fault):
    from tinybot_migration.lib.embeddings.client import EmbeddingResponseError

    with OpenAITestServer() as server:
        server.vector_fault, server.vector_fault_from = fault, 2
        provider = openai_provider(server, max_inputs_per_request=10, max_concurrent_requests=1)
        with pytest.raises(EmbeddingResponseError):
            embed_with_cache(new_db, provider, TEXTS)
    rows = new_db.execute(
        "SELECT count(*), count(*) FILTER (WHERE vector_norm(embedding) < 1e-6) FROM tinybot_migration.embedding_cache"
    ).fetchone()
    assert rows == (10, 0)  # the first batch, valid, kept; the malformed one and the one after not


def test_purge_removes_zero_vectors_left_in_the_cache(new_db):
    from tinybot_migration.lib.embeddings.cache import purge_zero_vectors

    embed_with_cache(new_db, offline_client(), TEXTS[:3])
    new_db.execute(
        "INSERT INTO tinybot_migration.embedding_cache (model, dimensions, text_hash, embedding)"
        " VALUES ('text-embedding-3-small', 1536, repeat('0', 32), array_fill(0, ARRAY[1536])::vector)"
    )
    assert purge_zero_vectors(new_db) == 1
    assert new_db.execute("SELECT count(*) FROM tinybot_migration.embedding_cache").fetchone()[0] == 3
