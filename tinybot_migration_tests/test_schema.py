"""The new schema is applied by the pipeline itself: idempotent, concurrent-safe, versioned."""

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tinybot_migration.resources import NewDatabaseResource
from tinybot_migration.schema import SCHEMA_VERSION, apply_new_schema

NEW_TABLES = {
    "users",
    "personas",
    "user_default_personas",
    "system_prompts",
    "llm_configs",
    "personalities",
    "personality_default_configs",
    "personality_owners",
    "user_personality_configs",
    "activated_channels",
    "conversation_history",
    "memories",
    "shapes_persona_mappings",
    "schema_version",
}


def test_schema_applies_concurrently_and_repeatedly(make_database):
    url = make_database("schema")

    def apply(_):
        with psycopg.connect(url) as conn:
            return apply_new_schema(conn)

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(apply, range(4))) == {SCHEMA_VERSION}
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables >= NEW_TABLES
        assert (
            conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            >= "0.8"
        )
        assert conn.execute("SELECT array_agg(version) FROM schema_version").fetchone()[0] == [SCHEMA_VERSION]
        embedding_type = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'memories'::regclass AND attname = 'embedding'"
        ).fetchone()[0]
        assert embedding_type == "vector(1536)"
        timestamp_types = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name IN ('created_at', 'updated_at')"
            )
        }
        assert timestamp_types == {"timestamp with time zone"}


def test_a_newer_schema_is_refused_with_a_clear_error(make_database):
    url = make_database("schema_newer")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        NewDatabaseResource(url=url).ensure_schema()


def test_embeddings_are_stored_inline(make_database):
    with psycopg.connect(make_database("storage"), autocommit=True) as conn:
        apply_new_schema(conn)
        storage = conn.execute(
            "SELECT attrelid::regclass::text, attstorage FROM pg_attribute"
            " WHERE attname = 'embedding' AND attrelid IN ('memories'::regclass, 'embedding_cache'::regclass)"
            " ORDER BY 1"
        ).fetchall()
    assert storage == [("embedding_cache", "p"), ("memories", "p")]
