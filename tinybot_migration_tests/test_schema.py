"""Both schemas come from one description of each table; the new one is applied by the pipeline
itself: idempotent, concurrent-safe, versioned."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tinybot_migration import schema
from tinybot_migration.relational.tables import RELATIONAL_TABLES
from tinybot_migration.resources import NewDatabaseResource
from tinybot_migration.schema import SCHEMA_VERSION, apply_new_schema, apply_old_schema

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


CATALOGUE_SQL = {
    "columns": "SELECT table_name, column_name, ordinal_position, data_type, udt_name, character_maximum_length,"
    " numeric_precision, numeric_scale, datetime_precision, is_nullable, column_default"
    " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "storage": "SELECT c.relname, a.attname, a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0"
    " AND NOT a.attisdropped ORDER BY 1, 2",
}


# What the schema gained after schema_catalogue.json was taken (version 3): whole tables, and
# (table, column or index) pairs.
ADDED_AFTER_THE_CATALOGUE = {
    "shapes_rejects",
    ("memories", "embedding_bits"),
    ("memories", "idx_memories_search"),
    "memory_coverage",
    ("conversation_history", "idx_conversation_history_personality_time"),
    ("conversation_history", "idx_conversation_history_created_at"),
    ("memories", "answer_id"),
    ("memories", "idx_memories_answer_id"),
}


def catalogue(url: str, leave_out: set[str] = frozenset()) -> dict[str, list[list]]:
    with psycopg.connect(url) as conn:
        return {
            part: [
                [value if value is None or isinstance(value, int | str) else str(value) for value in row]
                for row in conn.execute(query).fetchall()
                if row[0] not in leave_out and tuple(row[:2]) not in leave_out
            ]
            for part, query in CATALOGUE_SQL.items()
        }


def test_both_ddls_derived_from_one_description_match_the_schemas_they_replaced(make_database):
    """schema_catalogue.json was read off both databases when each DDL was still written out by hand
    (schema version 3): every column, type, default, constraint, index and storage setting."""
    old_url, new_url = make_database("catalogue_old"), make_database("catalogue_new")
    with psycopg.connect(old_url, autocommit=True) as conn:
        apply_old_schema(conn)
    with psycopg.connect(new_url, autocommit=True) as conn:
        apply_new_schema(conn)
    expected = json.loads((Path(__file__).parent / "schema_catalogue.json").read_text())
    assert catalogue(old_url) == expected["old"]
    assert catalogue(new_url, leave_out=ADDED_AFTER_THE_CATALOGUE) == expected["new"]


def test_the_rejects_table_of_schema_version_4_keys_each_record_by_file_and_position(make_database):
    url = make_database("rejects_table")
    with psycopg.connect(url, autocommit=True) as conn:
        assert apply_new_schema(conn) == schema.SCHEMA_VERSION
        conn.execute(
            "INSERT INTO shapes_rejects (source_file, record_index, personality_slug, reason, raw_record)"
            " VALUES ('a/a_memories.json', 0, 'a', 'result is missing', '{}')"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO shapes_rejects (source_file, record_index, personality_slug, reason, raw_record)"
                " VALUES ('a/a_memories.json', 0, 'a', 'again', '{}')"
            )
    columns = [row[1:4] for row in catalogue(url)["columns"] if row[0] == "shapes_rejects"]
    assert [c[0] for c in columns] == [c.name for c in schema.SHAPES_REJECTS.columns]
    assert dict((c[0], c[2]) for c in columns)["raw_record"] == "jsonb"


def test_a_version_5_database_gains_the_search_column_its_index_and_the_new_function(make_database):
    url = make_database("schema_upgrade")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        conn.execute("DROP INDEX idx_memories_search")
        conn.execute("ALTER TABLE memories DROP COLUMN embedding_bits")
        conn.execute(
            "DROP FUNCTION search_memories(vector, uuid, uuid, integer, double precision, timestamptz, integer)"
        )
        conn.execute(
            "CREATE FUNCTION search_memories(query vector, persona uuid, personality uuid, max_rows integer,"
            " min_similarity double precision, exclude_newer_than timestamptz) RETURNS SETOF uuid"
            " LANGUAGE sql AS 'SELECT id FROM memories'"
        )  # version 5's signature
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (5)")
        conn.execute("SET session_replication_role = replica")  # no parents needed for this row
        conn.execute(
            "INSERT INTO memories (id, personality_id, content, embedding, created_at)"
            " SELECT gen_random_uuid(), gen_random_uuid(), 'x', ('[' || repeat('-1,', 1535) || '1]')::vector, now()"
        )  # written before the upgrade
    with psycopg.connect(url, autocommit=True) as conn:
        assert apply_new_schema(conn) == schema.SCHEMA_VERSION
        bits = conn.execute("SELECT embedding_bits::text FROM memories").fetchone()[0]
        assert bits == "0" * 1535 + "1"  # computed for the row already there
        assert conn.execute("SELECT to_regclass('idx_memories_search')").fetchone()[0] is not None
        signatures = conn.execute(
            "SELECT pg_get_function_identity_arguments(oid) FROM pg_proc WHERE proname = 'search_memories'"
        ).fetchall()
        assert len(signatures) == 1 and signatures[0][0].endswith("candidates integer")


def test_the_relational_specs_and_the_schema_list_the_same_tables_in_foreign_key_order():
    assert [spec.table for spec in RELATIONAL_TABLES] == list(schema.RELATIONAL_TABLES)
    seen: set[str] = set()
    for table in (*schema.RELATIONAL_TABLES, *schema.NEW_ONLY_TABLES):
        assert all(parent in seen for _, parent in table.foreign_keys), table.name
        seen.add(table.name)


def test_a_version_6_database_gains_the_coverage_table_the_history_index_and_the_answer_column(
    make_database,
):
    url = make_database("schema_upgrade_7")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        conn.execute("DROP TABLE memory_coverage")
        conn.execute("DROP INDEX idx_conversation_history_personality_time")
        conn.execute("DROP INDEX idx_conversation_history_created_at")
        conn.execute("ALTER TABLE memories DROP COLUMN answer_id")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (6)")
        assert apply_new_schema(conn) == schema.SCHEMA_VERSION == 7
        assert conn.execute("SELECT to_regclass('memory_coverage')").fetchone()[0] is not None
        assert conn.execute("SELECT to_regclass('idx_conversation_history_personality_time')").fetchone()[0]
        assert conn.execute("SELECT to_regclass('idx_memories_answer_id')").fetchone()[0]
