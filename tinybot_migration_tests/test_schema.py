"""The new database's schema is applied by the pipeline itself: idempotent, concurrent-safe, its
own part versioned by ordered steps; the old one is derived from the same table descriptions."""

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tinybot_migration.defs.resources import NewDatabaseResource
from tinybot_migration.lib import schema
from tinybot_migration.lib.new_database_schema import (
    PROJECT_SCHEMA_VERSION,
    apply_new_schema,
    apply_old_schema,
    project_schema_version,
)
from tinybot_migration.lib.relational.tables import RELATIONAL_TABLES


def test_schema_applies_concurrently_and_repeatedly(make_database):
    url = make_database("schema")

    def apply(_):
        with psycopg.connect(url) as conn:
            return apply_new_schema(conn)

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(apply, range(4))) == {PROJECT_SCHEMA_VERSION}
    with psycopg.connect(url) as conn:
        public = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert public == {t.name for t in schema.BOT_TABLES} | {"_prisma_migrations"}
        assert conn.execute("SELECT count(*) FROM _prisma_migrations").fetchone()[0] == 2
        assert (
            conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            >= "0.8"
        )
        assert project_schema_version(conn) == PROJECT_SCHEMA_VERSION
        timestamp_types = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT format_type(atttypid, atttypmod) FROM pg_attribute a"
                " JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'public'::regnamespace"
                " AND c.relname <> '_prisma_migrations' AND a.attname IN ('created_at', 'updated_at')"
            )
        }
        assert timestamp_types == {"timestamp(3) without time zone"}


def test_a_newer_project_schema_is_refused_with_a_clear_error(make_database):
    url = make_database("schema_newer")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        conn.execute(
            "INSERT INTO tinybot_migration.schema_steps (version, description) VALUES (%s, 'later')",
            (PROJECT_SCHEMA_VERSION + 1,),
        )
    with pytest.raises(RuntimeError, match=f"schema version {PROJECT_SCHEMA_VERSION + 1}, newer"):
        NewDatabaseResource(url=url).ensure_schema()


def test_embeddings_are_stored_inline(make_database):
    with psycopg.connect(make_database("storage"), autocommit=True) as conn:
        apply_new_schema(conn)
        storage = conn.execute(
            "SELECT attrelid::regclass::text, attstorage FROM pg_attribute WHERE attname = 'embedding'"
            " AND attrelid IN ('memories'::regclass, 'tinybot_migration.embedding_cache'::regclass) ORDER BY 1"
        ).fetchall()
    assert storage == [("memories", "p"), ("tinybot_migration.embedding_cache", "p")]


def test_the_old_schema_has_the_old_columns(make_database):
    with psycopg.connect(make_database("old_schema"), autocommit=True) as conn:
        apply_old_schema(conn)
        apply_old_schema(conn)  # idempotent
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'pending_memories'"
            )
        }
        assert "personality_name" in columns
        history = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'conversation_history'"
            )
        }
        assert "discord_message_id" not in history


def test_the_relational_specs_and_the_schema_list_the_same_tables_in_foreign_key_order():
    assert [spec.table for spec in RELATIONAL_TABLES] == list(schema.RELATIONAL_TABLES)
    seen: set[str] = set()
    for table in schema.BOT_TABLES:
        assert all(parent in seen for _, parent in table.foreign_keys), table.name
        seen.add(table.name)
