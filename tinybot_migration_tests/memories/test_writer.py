"""The one memory writer takes every column of `memories`, so every source can use it unchanged."""

import uuid
from datetime import datetime

import numpy as np
import psycopg

from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.memories.writer import SOURCE_SHAPES, NewMemory, embed_and_write, write_memories
from tinybot_migration.lib.schema import MEMORIES
from tinybot_migration_tests.helpers.conversations import Conversations
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for


def legacy_memory(personality_id: uuid.UUID, text: str) -> NewMemory:
    return NewMemory(
        id=uuid.uuid5(uuid.NAMESPACE_DNS, text),
        persona_id=None,
        personality_id=personality_id,
        content=text,
        is_summarized=True,
        created_at=datetime(2024, 5, 1, 12, 30),
        source_system=SOURCE_SHAPES,
        original_message_count=7,
        summarized_at=datetime(2024, 5, 2),
        session_id="session-1",
        canon_scope="session",
        summary_type="automatic",
        channel_id=None,
        guild_id="123456789012345678",
        message_ids=["msgA", "msgB"],
        senders=["0f8f1c44-1111-4a2b-9c3d-000000000001", "0f8f1c44-1111-4a2b-9c3d-000000000002"],
        legacy_shapes_user_id=uuid.UUID("0f8f1c44-1111-4a2b-9c3d-000000000001"),
    )


def test_every_column_is_written_as_given_and_a_rewrite_inserts_nothing(new_db):
    personality = Conversations(new_db).personality("legacy")
    memory = legacy_memory(personality, "they like lighthouses")
    vector = hash_embedding(memory.content, 1536)
    assert write_memories(new_db, [memory], [vector]) == {personality: 1}
    columns = [name for name in MEMORIES.column_names if name != "embedding"]
    stored = new_db.execute(f"SELECT {', '.join(columns)} FROM memories").fetchone()
    expected = {name: getattr(memory, name) for name in columns}
    assert dict(zip(columns, stored, strict=True)) == expected
    stored_vector = new_db.execute("SELECT embedding::text FROM memories").fetchone()[0]
    stored_floats = np.array(stored_vector.strip("[]").split(","), dtype=np.float32)
    assert np.array_equal(stored_floats, np.asarray(vector, dtype=np.float32))  # float4, as written
    assert write_memories(new_db, [memory], [vector]) == {}
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 1


def test_embed_and_write_serves_any_source_through_the_cache(new_db):
    personality = Conversations(new_db).personality("legacy")
    memories = [legacy_memory(personality, f"legacy memory {i}") for i in range(5)]
    with OpenAITestServer() as server:
        outcomes = list(embed_and_write(new_db, None, client_for(server), memories, chunk_size=2))
    assert [o.size for o in outcomes] == [2, 2, 1]
    assert sum(sum(o.written.values()) for o in outcomes) == 5
    stored = new_db.execute(
        "SELECT embedding::text FROM memories WHERE content = 'legacy memory 3'"
    ).fetchone()[0]
    assert np.allclose(
        np.array(stored.strip("[]").split(","), dtype=np.float32),
        hash_embedding("legacy memory 3", 1536),
        atol=1e-6,
    )


def test_chunks_side_by_side_never_send_one_text_twice(new_db):
    """The same text in memories of two personalities lands in one chunk (five memories, three
    texts, two texts a chunk, two chunks at once)."""
    talk = Conversations(new_db)
    first, second = talk.personality("first"), talk.personality("second")
    memories = [
        legacy_memory(personality, text) for personality, text in ((first, "a"), (first, "b"), (first, "c"))
    ] + [legacy_memory(second, text) for text in ("a", "b")]
    memories = [NewMemory(**{**m.__dict__, "id": uuid.uuid4()}) for m in memories]
    url = new_db.info.dsn
    with OpenAITestServer(latency_seconds=0.2) as server:
        provider = client_for(server, max_concurrent_requests=2)
        outcomes = list(
            embed_and_write(
                new_db, lambda: psycopg.connect(url, autocommit=True), provider, memories, chunk_size=2
            )
        )
        sent = [text for request in server.requests for text in request]
    assert sorted(sent) == ["a", "b", "c"]
    assert sum(sum(o.written.values()) for o in outcomes) == 5


def test_two_runs_at_once_send_each_text_once(new_db):
    """Two writers of the same memories at the same time: the second waits for the first, then
    finds every text in the cache and every memory present."""
    from concurrent.futures import ThreadPoolExecutor

    personality = Conversations(new_db).personality("shared")
    memories = [legacy_memory(personality, f"shared memory {i}") for i in range(12)]
    url = new_db.info.dsn

    def write_all(_run: int) -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            outcomes = embed_and_write(conn, None, provider, memories, chunk_size=4)
            return sum(sum(o.written.values()) for o in outcomes)

    with OpenAITestServer(latency_seconds=0.1) as server:
        provider = client_for(server)
        with ThreadPoolExecutor(2) as pool:
            written = list(pool.map(write_all, [1, 2]))
        sent = [text for request in server.requests for text in request]
    assert sorted(sent) == sorted(m.content for m in memories)
    assert sorted(written) == [0, 12]
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 12
