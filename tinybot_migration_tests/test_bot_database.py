"""The delivered database is the bot's own: its catalog, its `_prisma_migrations`, and the bot's own
statements (its memory insert, its pending-memory insert, its memory query — the core's
`bot_query.py` — a cascading delete), run verbatim as the bot runs them after cutover.

`bot_catalog.json` was read off a database built by the bot's two Prisma migrations (not by this
project), so the comparison is against the bot, not against our own description of it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tinybot_migration.lib import ids
from tinybot_migration.lib.demo_data import generate_demo_data
from tinybot_migration.lib.embedded_postgres import embedded_database_url
from tinybot_migration.lib.memories.bot_query import bot_memory_query, vector_literal
from tinybot_migration.lib.new_database_schema import (
    BOT_MIGRATIONS,
    PRISMA_MIGRATIONS_SQL,
    NewDatabaseSchemaError,
    apply_new_schema,
)
from tinybot_migration.lib.relational.pending import pending_memory_id
from tinybot_migration_tests.cli.test_cli import cli_env, run_cli
from tinybot_migration_tests.helpers.bot_catalog import catalog_differences, prisma_migrations, read_catalog
from tinybot_migration_tests.helpers.servers import stop_servers_under

BOT_CATALOG = json.loads((Path(__file__).parent / "bot_catalog.json").read_text())

# The bot's memory insert (PgvectorMemoryAdapter.addMemory), with Prisma's parameters as psycopg's.
BOT_MEMORY_INSERT = """
INSERT INTO memories (
  id, persona_id, personality_id, source_system, content, embedding, session_id, canon_scope,
  summary_type, channel_id, guild_id, message_ids, senders, is_summarized, created_at
) VALUES (
  %(id)s::uuid, %(persona)s::uuid, %(personality)s::uuid, 'tzurot-v3', %(text)s,
  %(embedding)s::vector(1536), NULL, 'personal', 'conversation', %(channel)s, NULL,
  %(message_ids)s::text[], %(senders)s::text[], false, %(created_at)s::timestamptz
)
ON CONFLICT (id) DO NOTHING
"""


def test_an_empty_database_gets_the_bots_schema_exactly(make_database):
    with psycopg.connect(make_database("bot_schema"), autocommit=True) as conn:
        apply_new_schema(conn)
        assert catalog_differences(BOT_CATALOG, read_catalog(conn)) == []
        assert prisma_migrations(conn) == [(m.name, m.checksum) for m in BOT_MIGRATIONS]
        # Nothing of ours in public but the added indexes: our tables live in their own schema.
        ours = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'tinybot_migration'")
        }
        assert {"embedding_cache", "shapes_rejects", "memory_coverage", "pending_memory_outcomes"} <= ours


def test_a_target_prepared_by_the_bots_migrations_is_filled_as_it_is(make_database):
    """Simulate `prisma migrate deploy` with the catalog's DDL of ours, then check the precheck
    accepts it, refuses a later version, and names a difference that matters."""
    url = make_database("bot_prepared")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        conn.execute("DROP SCHEMA tinybot_migration CASCADE")
        apply_new_schema(conn)  # prepared (has _prisma_migrations): prechecked, then our schema added
        assert catalog_differences(BOT_CATALOG, read_catalog(conn)) == []

        conn.execute("DROP SCHEMA tinybot_migration CASCADE")
        conn.execute("ALTER TABLE memories ALTER COLUMN source_system TYPE text")
        with pytest.raises(
            NewDatabaseSchemaError, match=r"memories\.source_system is text NOT NULL, expected"
        ):
            apply_new_schema(conn)
        conn.execute("ALTER TABLE memories ALTER COLUMN source_system TYPE varchar(50)")
        conn.execute(
            "INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at, applied_steps_count)"
            " VALUES ('x', 'y', '20251107130153_convert_discord_message_id_to_array', now(), 1)"
        )
        with pytest.raises(NewDatabaseSchemaError, match="1 later migration"):
            apply_new_schema(conn)


def test_a_database_that_is_neither_empty_nor_the_bots_is_refused(make_database):
    with psycopg.connect(make_database("bot_foreign"), autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int)")
        with pytest.raises(NewDatabaseSchemaError, match="neither empty nor prepared"):
            apply_new_schema(conn)
    with psycopg.connect(make_database("bot_legacy"), autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version int)")
        with pytest.raises(NewDatabaseSchemaError, match="Rebuild it"):
            apply_new_schema(conn)


def test_prisma_migrations_is_prismas_table(make_database):
    """Our `_prisma_migrations` has Prisma's own columns, so `migrate deploy` reads it."""
    with (
        psycopg.connect(make_database("prisma_a"), autocommit=True) as ours,
        psycopg.connect(make_database("prisma_b"), autocommit=True) as theirs,
    ):
        apply_new_schema(ours)
        theirs.execute(PRISMA_MIGRATIONS_SQL)
        query = (
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
            " WHERE attrelid = 'public._prisma_migrations'::regclass AND attnum > 0 ORDER BY attnum"
        )
        assert ours.execute(query).fetchall() == theirs.execute(query).fetchall()


def test_memory_ids_follow_the_bots_rule():
    assert str(ids.MEMORY_NAMESPACE) == "2f36c705-1427-5548-ac1c-5a3db8f633be"


@dataclass(frozen=True)
class Delivered:
    old_url: str
    new_url: str


@pytest.fixture(scope="module")
def delivered(tmp_path_factory) -> Iterator[Delivered]:
    """The whole migration at scale 1 (demo data with its shapes.inc export), run by the CLI as a
    user runs it, in a home of its own: the session's Dagster instance holds the personality
    partitions of other tests' demo data (another seed), which this source does not have."""
    home = tmp_path_factory.mktemp("bot_home")
    try:
        old_url = embedded_database_url("bot_old", home)
        new_url = embedded_database_url("bot_new", home)
        export = tmp_path_factory.mktemp("bot_export")
        generate_demo_data(old_url, export, scale=1, seed=11)
        env = cli_env(home, OLD_DATABASE_URL=old_url, DATABASE_URL=new_url, SHAPES_EXPORT_DIR=str(export))
        result = run_cli("run", "--log-level", "WARNING", env=env, cwd=tmp_path_factory.mktemp("bot_cwd"))
        assert result.returncode == 0, result.stdout + result.stderr
        yield Delivered(old_url, new_url)
    finally:
        stop_servers_under(home)


def test_the_bots_statements_run_on_the_delivered_database(delivered, admin_connect):
    conn = admin_connect(delivered.new_url)
    from pgvector.psycopg import register_vector

    register_vector(conn)
    memory = conn.execute(
        "SELECT id, persona_id, personality_id, content, embedding, channel_id, message_ids, senders, created_at"
        " FROM memories WHERE source_system = 'tzurot-v3' ORDER BY id LIMIT 1"
    ).fetchone()
    memory_id, persona, personality, text, embedding, channel, message_ids, senders, created_at = memory
    # The bot's id rule gives the migrated memory's id.
    assert memory_id == ids.memory_id(persona, personality, text)
    before = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    params = {
        "id": str(ids.memory_id(persona, personality, text)),
        "persona": str(persona),
        "personality": str(personality),
        "text": text,
        "embedding": vector_literal(embedding.to_list()),
        "channel": channel,
        "message_ids": message_ids,
        "senders": senders,
        "created_at": created_at.isoformat() + "Z",
    }
    # Re-adding a migrated memory inserts nothing; a new one inserts.
    assert conn.execute(BOT_MEMORY_INSERT, params).rowcount == 0
    new_text = text + "\n(said again later)"
    params |= {"id": str(ids.memory_id(persona, personality, new_text)), "text": new_text}
    assert conn.execute(BOT_MEMORY_INSERT, params).rowcount == 1
    assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == before + 1

    # The bot's memory query: the memory itself ranks first.
    rows = bot_memory_query(
        embedding.to_list(), persona, personality, cutoff=datetime(2100, 1, 1), min_similarity=0.15
    ).run(conn)
    # (the memory just added shares its vector, so the two tie at distance 0)
    assert rows[0].distance < 1e-6 and memory_id in {r.id for r in rows[:2]}

    # The bot's pending-memory insert (Prisma's create) for a new reply.
    history_id = conn.execute(
        "INSERT INTO conversation_history (id, channel_id, personality_id, persona_id, role, content)"
        " VALUES (gen_random_uuid(), %s, %s, %s, 'assistant', 'a new reply') RETURNING id",
        (channel, personality, persona),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO pending_memories (id, conversation_history_id, persona_id, personality_id, text, metadata,"
        " attempts) VALUES (gen_random_uuid(), %s, %s, %s, 'x', '{}'::jsonb, 0)",
        (history_id, persona, personality),
    )


def test_deleting_a_persona_cascades_as_in_the_bots_schema(delivered, admin_connect):
    conn = admin_connect(delivered.new_url)
    with conn.transaction(force_rollback=True):
        persona = conn.execute(
            "SELECT persona_id FROM memories WHERE persona_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        conn.execute("DELETE FROM personas WHERE id = %s", (persona,))
        assert (
            conn.execute("SELECT count(*) FROM memories WHERE persona_id = %s", (persona,)).fetchone()[0] == 0
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM conversation_history WHERE persona_id = %s", (persona,)
            ).fetchone()[0]
            == 0
        )


def test_old_pending_memories_are_resolved_or_copied_with_their_ids_rekeyed(delivered, admin_connect):
    old, new = admin_connect(delivered.old_url), admin_connect(delivered.new_url)
    old_rows = old.execute("SELECT count(*) FROM pending_memories").fetchone()[0]
    outcomes = dict(
        new.execute(
            "SELECT outcome, count(*) FROM tinybot_migration.pending_memory_outcomes GROUP BY 1"
        ).fetchall()
    )
    assert old_rows > 0 and sum(outcomes.values()) == old_rows
    assert outcomes.get("resolved", 0) > 0 and outcomes.get("copied", 0) > 0
    # A resolved one's answer is the last message of a rebuilt memory; a copied one's is no memory's.
    for outcome, covered in (("resolved", True), ("copied", False)):
        rows = new.execute(
            "SELECT o.conversation_history_id, EXISTS (SELECT 1 FROM memories m"
            "  WHERE m.message_ids[cardinality(m.message_ids)] = o.conversation_history_id::text)"
            " FROM tinybot_migration.pending_memory_outcomes o WHERE o.outcome = %s",
            (outcome,),
        ).fetchall()
        assert rows and all(found is covered for _, found in rows)
    copied = new.execute(
        "SELECT p.id, p.conversation_history_id, p.persona_id, p.personality_id, p.metadata, p.attempts"
        " FROM pending_memories p WHERE p.id IN (SELECT new_id FROM tinybot_migration.pending_memory_outcomes)"
    ).fetchall()
    assert len(copied) == outcomes["copied"]
    for row_id, history_id, persona, personality, metadata, attempts in copied:
        assert row_id == pending_memory_id(history_id)
        assert metadata["personaId"] == str(persona) and metadata["personalityId"] == str(personality)
        assert attempts == 0
        assert new.execute("SELECT EXISTS (SELECT 1 FROM personas WHERE id = %s)", (persona,)).fetchone()[0]


def test_every_memory_id_is_the_bots(delivered, admin_connect):
    conn = admin_connect(delivered.new_url)
    rows = conn.execute(
        "SELECT id, coalesce(persona_id, legacy_shapes_user_id), personality_id, content, source_system"
        " FROM memories"
    ).fetchall()
    assert {r[4] for r in rows} == {"tzurot-v3", "shapes-inc"}
    # A legacy memory's id is its shapes user's, also when its sender was mapped to a persona.
    legacy = conn.execute(
        "SELECT id, legacy_shapes_user_id, personality_id, content FROM memories WHERE legacy_shapes_user_id IS NOT NULL"
    ).fetchall()
    by_legacy_rule = {r[0] for r in legacy if r[0] == ids.legacy_memory_id(r[1], r[2], r[3])}
    wrong = [r[0] for r in rows if r[0] != ids.memory_id(r[1], r[2], r[3]) and r[0] not in by_legacy_rule]
    assert wrong == []
    assert isinstance(rows[0][0], uuid.UUID)
