"""Landed Qdrant vectors are reused only when proven: per class, sampled re-embeddings through the
real client must agree; agreeing classes seed the embedding cache (never over a cached row), a
class re-embedded after a rename is not reused and named, a model other than the declared one
reuses nothing, and a re-run asks the provider nothing."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from tinybot_migration.lib.embeddings.cache import embed_with_cache
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.ids import content_hash
from tinybot_migration.lib.qdrant.checks import qdrant_vector_classes_agree
from tinybot_migration.lib.qdrant.landing import land_qdrant
from tinybot_migration.lib.qdrant.vectors import NOT_REUSED, REUSED, prove_and_seed
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for

PERSONA = f"persona-{uuid.uuid4()}"
LUNA, SOL = str(uuid.uuid4()), str(uuid.uuid4())
MODEL = "text-embedding-3-small"  # the test server's model and the declared default


def unit(vector: np.ndarray) -> list[float]:
    return (vector / np.linalg.norm(vector)).astype(np.float32).tolist()


def true_vector(text: str, noise: float = 0.0, seed: int = 0) -> list[float]:
    """The embedding of `text`, nudged by a little noise (still agreeing at cosine >= 0.999)."""
    rng = np.random.default_rng(seed)
    return unit(hash_embedding(text, 1536) + noise * rng.normal(size=1536) / np.sqrt(1536))


def renamed_vector(text: str) -> list[float]:
    """What a rename script re-embedded: another text's vector (newlines gone, another name)."""
    return unit(hash_embedding(text.replace("\n", " ").replace("Sol", "Helios"), 1536))


def point(number: int, text: str, personality: str, name: str, vector: list[float]) -> models.PointStruct:
    payload = {
        "content": text,
        "personalityId": personality,
        "personalityName": name,
        "createdAt": 1_750_000_000_000,
    }
    return models.PointStruct(id=str(uuid.UUID(int=number, version=4)), vector=vector, payload=payload)


LUNA_TEXTS = [f"Ali: question {i}\nLuna: answer {i} about the sea" for i in range(5)]
SOL_TEXTS = [f"Bob: question {i}\nSol: the sun says {i}" for i in range(4)]
SHAPES_TEXTS = [f"a shapes.inc memory about day {i}" for i in range(3)]


@pytest.fixture
def landed(new_db, tmp_path):
    client = QdrantClient(path=str(tmp_path / "store"))
    client.create_collection(
        PERSONA, vectors_config=models.VectorParams(size=1536, distance=models.Distance.COSINE)
    )
    points = [point(i, t, LUNA, "Luna", true_vector(t, 0.01, i)) for i, t in enumerate(LUNA_TEXTS)]
    points += [point(10 + i, t, SOL, "Sol", renamed_vector(t)) for i, t in enumerate(SOL_TEXTS)]
    points += [point(20 + i, t, LUNA, "Luna", true_vector(t)) for i, t in enumerate(SHAPES_TEXTS)]
    points.append(point(30, "Ali: zero\nLuna: zero", LUNA, "Luna", [0.0] * 1536))
    client.upsert(PERSONA, points)
    land_qdrant(client, new_db)
    client.close()
    # A local store returns a cosine collection's vectors as upserted: make one of them not unit length.
    new_db.execute(
        "UPDATE tinybot_migration.qdrant_points SET vector = (SELECT array_agg(x * 2) FROM unnest(vector) x)"
        " WHERE point_id = %s",
        (str(uuid.UUID(int=4, version=4)),),
    )
    return new_db


@pytest.fixture
def server():
    with OpenAITestServer() as test_server:
        yield test_server


def cached(conn, text: str) -> np.ndarray | None:
    row = conn.execute(
        "SELECT embedding::text FROM tinybot_migration.embedding_cache WHERE text_hash = %s",
        (content_hash(text),),
    ).fetchone()
    return None if row is None else np.array(json.loads(row[0]), dtype=np.float32)


def test_agreeing_classes_seed_the_cache_and_a_renamed_class_is_named_and_not_reused(landed, server):
    reuse = prove_and_seed(landed, client_for(server), MODEL)
    verdicts = {key.split("|")[1] + "|" + key.split("|")[2]: c.verdict for key, c in reuse.classes.items()}
    assert verdicts == {
        f"{LUNA}|live: persona name": REUSED,
        f"{SOL}|live: persona name": NOT_REUSED,
        f"{LUNA}|other": REUSED,
    }
    sol = next(c for c in reuse.classes.values() if SOL in c.key)
    assert sol.min_cosine < 0.99 and "not embeddings of their text" in sol.reason
    assert reuse.sample_inputs == 9 and len(server.requests) == 1  # three samples a class, one request
    # Seeded: the eligible texts of reused classes (the zero and the doubled vector are not eligible).
    assert reuse.seeded == 4 + 3 and reuse.points_reused == 7 and reuse.tokens_saved > 0
    assert np.allclose(cached(landed, LUNA_TEXTS[0]), true_vector(LUNA_TEXTS[0], 0.01, 0), atol=1e-6)
    assert cached(landed, LUNA_TEXTS[4]) is None and cached(landed, "Ali: zero\nLuna: zero") is None
    assert all(cached(landed, t) is None for t in SOL_TEXTS)
    check = qdrant_vector_classes_agree(reuse)
    assert not check.passed and SOL in check.description and check.severity == "WARN"


def test_a_seeded_vector_serves_the_writer_without_the_provider(landed, server):
    prove_and_seed(landed, client_for(server), MODEL)
    sent = len(server.requests)
    result = embed_with_cache(landed, client_for(server), [LUNA_TEXTS[1]])
    assert result.cache_hits == 1 and result.provider_inputs == 0 and len(server.requests) == sent
    assert np.allclose(result.vectors[0], true_vector(LUNA_TEXTS[1], 0.01, 1), atol=1e-6)
    assert not np.allclose(result.vectors[0], hash_embedding(LUNA_TEXTS[1], 1536), atol=1e-4)


def test_a_rerun_asks_the_provider_nothing_and_never_replaces_a_cached_row(landed, server):
    provider_vector = embed_with_cache(landed, client_for(server), [SHAPES_TEXTS[0]]).vectors[0]
    first = prove_and_seed(landed, client_for(server), MODEL)
    assert first.already_cached == 1 and np.allclose(cached(landed, SHAPES_TEXTS[0]), provider_vector)
    sent = len(server.requests)
    again = prove_and_seed(landed, client_for(server), MODEL)
    assert len(server.requests) == sent and again.sample_inputs == 0
    assert again.seeded == 0 and again.already_cached == 7
    assert {k: c.verdict for k, c in again.classes.items()} == {
        k: c.verdict for k, c in first.classes.items()
    }


def test_another_model_than_the_declared_one_reuses_nothing_and_asks_nothing(landed, server):
    reuse = prove_and_seed(landed, client_for(server), "text-embedding-ada-002")
    assert reuse.reused_classes == [] and reuse.seeded == 0 and server.requests == []
    assert all("declared model text-embedding-ada-002" in c.reason for c in reuse.classes.values())
    assert qdrant_vector_classes_agree(reuse).passed  # nothing disagreed: nothing was compared
