"""The persona indexes: a partial HNSW index per large persona, the database settings their scans
need, the bot's own query walking them without losing a row under its filters, and their checks."""

import uuid
from datetime import timedelta

import psycopg
from dagster import RunConfig, materialize
from pgvector.psycopg import register_vector
from psycopg import sql

from tinybot_migration.defs.resources import EmbeddingProviderResource, NewDatabaseResource
from tinybot_migration.defs.search.assets import VectorIndexConfig, memory_vector_index
from tinybot_migration.lib.memories.bot_query import bot_memory_query
from tinybot_migration.lib.memories.search_checks import search_uses_the_intended_plan
from tinybot_migration.lib.memories.search_quality import measure_search, search_plans
from tinybot_migration.lib.memories.vector_index import (
    INDEX_NAME,
    database_settings,
    drop_for_bulk_load,
    ensure_persona_indexes,
    ensure_vector_index,
    persona_index_name,
    persona_indexes,
)
from tinybot_migration.lib.progress import Notice
from tinybot_migration_tests.helpers.openai_server import offline_client
from tinybot_migration_tests.search.conftest import T0

EVERYTHING = -1.0  # a min similarity every memory passes


def new_session(world) -> psycopg.Connection:
    """A connection opened after the settings were made: it has them, as the bot's do."""
    conn = psycopg.connect(world["url"], autocommit=True)
    register_vector(conn)
    return conn


def exact_ids(conn, vector, persona, personality=None, cutoff=None, limit=15) -> list[uuid.UUID]:
    """The bot's filters ranked by `distance + 0`, which no index can serve: every row, exactly."""
    where = [sql.SQL("persona_id = {}").format(sql.Literal(persona))]
    if personality:
        where.append(sql.SQL("personality_id = {}").format(sql.Literal(personality)))
    if cutoff:
        where.append(sql.SQL("created_at < {}").format(sql.Literal(cutoff)))
    statement = sql.SQL("SELECT id FROM memories WHERE {} ORDER BY (embedding <=> %s) + 0 LIMIT %s").format(
        sql.SQL(" AND ").join(where)
    )
    return [row[0] for row in conn.execute(statement, (vector, limit))]


def test_a_large_persona_gets_its_own_index_and_every_new_session_the_settings(world):
    conn, main = world["conn"], world["personas"]["Main"]  # Main holds 40 memories, Alt 20
    report = ensure_persona_indexes(conn, min_rows=30)
    assert (
        report.built == {(main, None): 40} and report.kept == 0 and not report.dropped and not report.refused
    )
    [index] = persona_indexes(conn).values()
    definition = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (index.name,)).fetchone()[0]
    assert index.valid and index.name == persona_index_name(main) and index.size_bytes > 0
    assert (
        "USING hnsw (embedding vector_cosine_ops)" in definition
        and f"persona_id = '{main}'::uuid" in definition
    )
    wanted = {"hnsw.iterative_scan": "strict_order", "hnsw.ef_search": "100", "hnsw.max_scan_tuples": "20000"}
    assert report.settings == wanted == database_settings(conn)
    with new_session(world) as session:
        seen = {name: session.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] for name in wanted}
    assert seen == wanted

    again = ensure_persona_indexes(conn, min_rows=30)
    assert again.built == {} and again.kept == 1 and again.count == 1  # only what is missing is built
    assert ensure_persona_indexes(conn, min_rows=70).kept == 1  # 40 is at least half of 70: kept, none built
    fallen = ensure_persona_indexes(conn, min_rows=100)  # 40 is under half of 100: dropped
    assert fallen.dropped == [index.name] and fallen.count == 0 and persona_indexes(conn) == {}
    assert ensure_persona_indexes(conn, min_rows=0).count == 0


def test_the_bots_query_walks_the_scopes_index_and_misses_nothing_under_its_filters(world):
    conn, main = world["conn"], world["personas"]["Main"]
    luna = world["personalities"]["luna"]
    ensure_vector_index(conn)  # the global index is there too: the scope's own must win
    built = ensure_persona_indexes(
        conn, min_rows=20
    )  # Main (40), Alt (20), Main with luna and with nova (20 each)
    alt, nova = world["personas"]["Alt"], world["personalities"]["nova"]
    assert set(built.built) == {(main, None), (alt, None), (main, luna), (main, nova)}
    assert set(persona_indexes(conn)) == set(built.built)  # each scope read back from its predicate
    vector = world["rows"][1][4]  # one of Main's memories
    with new_session(world) as session:
        session.execute("SET enable_sort = off")  # 40 rows: price the exact sort out to show the index path
        for personality, cutoff in ((None, None), (luna, None), (None, T0 + timedelta(days=30)), (luna, T0)):
            query = bot_memory_query(vector, main, personality, cutoff, min_similarity=EVERYTHING)
            plan = query.explain(session)
            assert persona_index_name(main, personality) in plan and INDEX_NAME not in plan, plan
            assert [m.id for m in query.run(session)] == exact_ids(session, vector, main, personality, cutoff)

        # A walk that starts from one candidate under the cut-off filter: with the database's
        # iterative scan it keeps going until 15 rows qualify; without it, it stops short (the trap).
        session.execute("SET hnsw.ef_search = 1")
        cutoff = T0 + timedelta(days=50)
        filtered = bot_memory_query(vector, main, cutoff=cutoff, min_similarity=EVERYTHING)
        assert len(filtered.run(session)) == len(exact_ids(session, vector, main, cutoff=cutoff)) == 15
        session.execute("SET hnsw.iterative_scan = off")
        assert len(filtered.run(session)) < 15


def test_a_role_that_may_not_set_the_database_settings_gets_no_persona_index(world):
    conn, main = world["conn"], world["personas"]["Main"]
    ensure_persona_indexes(conn, min_rows=30)  # as a superuser: the index and the settings
    database = conn.info.dbname
    conn.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(sql.Identifier(database)))
    role = f"migrator_{uuid.uuid4().hex[:8]}"
    superuser = conn.info.user
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute(
        sql.SQL("ALTER TABLE memories OWNER TO {}").format(sql.Identifier(role))
    )  # owns the table only
    try:
        said: list = []
        with psycopg.connect(
            psycopg.conninfo.make_conninfo(world["url"], user=role), autocommit=True
        ) as migrator:
            report = ensure_persona_indexes(migrator, min_rows=30, log=said.append)
    finally:
        conn.execute(sql.SQL("ALTER TABLE memories OWNER TO {}").format(sql.Identifier(superuser)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    # Without the settings a persona index would lose rows: the one there goes, none is built.
    assert report.count == 0 and report.dropped == [persona_index_name(main)] and persona_indexes(conn) == {}
    assert f"may not set database '{database}'" in report.refused
    assert "ALTER DATABASE" in report.refused and "hnsw.iterative_scan = 'strict_order'" in report.refused
    assert any(isinstance(event, Notice) and "no persona index" in str(event) for event in said)


def test_a_large_load_drops_the_persona_indexes_with_the_global_one(world):
    conn = world["conn"]
    ensure_vector_index(conn)
    ensure_persona_indexes(conn, min_rows=30)
    conn.execute("ANALYZE memories")
    assert drop_for_bulk_load(conn, 60, share=0.5, min_rows=1)
    assert persona_indexes(conn) == {}


def test_the_plan_check_fails_when_new_sessions_lack_the_iterative_scan(world):
    conn = world["conn"]
    ensure_vector_index(conn)
    ensure_persona_indexes(conn, min_rows=30)
    with new_session(world) as session:
        quality = measure_search(session, offline_client(), 1, 2)
        good = search_uses_the_intended_plan(search_plans(session, quality), 60)
    assert (
        good.passed
        and good.metadata["persona_indexes"] == 1
        and good.metadata["iterative_scan"] == "strict_order"
    )

    conn.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(sql.Identifier(conn.info.dbname)))
    with new_session(world) as session:
        bad = search_uses_the_intended_plan(search_plans(session, quality), 60)
    assert not bad.passed and "hnsw.iterative_scan = off" in bad.description


def test_the_asset_builds_the_persona_indexes_once_and_reports_them(world):
    resources = {
        "new_database": NewDatabaseResource(url=world["url"]),
        "embedding_provider": EmbeddingProviderResource(provider="hash"),
    }
    config = RunConfig({"memory_vector_index": VectorIndexConfig(persona_index_min_rows=30)})
    figures = []
    for _ in range(2):
        result = materialize([memory_vector_index], resources=resources, run_config=config)
        assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
        [materialization] = result.asset_materializations_for_node("memory_vector_index")
        figures.append({k: getattr(v, "value", v) for k, v in materialization.metadata.items()})
    first, second = figures
    assert (
        first["persona_indexes"] == 1
        and first["persona_indexes_built"] == 1
        and first["persona_index_bytes"] > 0
    )
    assert first["persona_indexed_memories_built"] == 40
    assert first["database_settings"]["hnsw.iterative_scan"] == "strict_order"
    assert (
        second["persona_indexes"] == 1
        and second["persona_indexes_built"] == 0
        and second["action"] == "left in place"
    )
