"""The vector index: built after the load with sized memory and used for an unfiltered query,
left in place when valid, rebuilt when invalid, dropped before a large load, and its checks."""

import threading
import time
import uuid
from datetime import datetime

import numpy as np
import psutil
import psycopg
from dagster import materialize
from pgvector.psycopg import register_vector

from tinybot_migration.defs.resources import EmbeddingProviderResource, NewDatabaseResource
from tinybot_migration.defs.search.assets import memory_vector_index
from tinybot_migration.lib.memories import vector_index
from tinybot_migration.lib.memories.bot_query import PERSONA_INDEX as SEARCH_INDEX
from tinybot_migration.lib.memories.bot_query import bot_memory_query
from tinybot_migration.lib.memories.search_checks import (
    EXACT_PATHS,
    every_memory_has_an_embedding,
    search_latency_within_bound,
    search_recall_against_exact,
    search_uses_the_intended_plan,
    vector_index_present_and_valid,
)
from tinybot_migration.lib.memories.search_quality import measure_search, recall_at, search_plans
from tinybot_migration.lib.memories.vector_index import (
    INDEX_NAME,
    build_memory_mb,
    drop_for_bulk_load,
    ensure_persona_indexes,
    ensure_vector_index,
    index_state,
    vacuum_for_search,
)
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration.lib.postgres import VECTOR_INDEX_LOCK
from tinybot_migration.lib.progress import Advanced
from tinybot_migration_tests.helpers.openai_server import offline_client
from tinybot_migration_tests.search.conftest import T0, unit


def plan(conn, query) -> str:
    conn.execute("SET enable_seqscan = off")  # 60 rows: make the planner show what it could use
    rows = conn.execute(
        "EXPLAIN SELECT id FROM memories ORDER BY embedding <=> %s LIMIT 5", (query,)
    ).fetchall()
    conn.execute("RESET enable_seqscan")
    return "\n".join(r[0] for r in rows)


def test_the_index_is_built_once_used_and_left_in_place(world):
    conn = world["conn"]
    assert not index_state(conn).exists and not vector_index_present_and_valid(conn).passed
    before = conn.execute("SHOW maintenance_work_mem").fetchone()[0]
    build = ensure_vector_index(conn, m=8, ef_construction=32)
    assert conn.execute("SHOW maintenance_work_mem").fetchone()[0] == before  # restored after the build
    assert build.action == "built" and build.rows == 60 and build.maintenance_work_mem_mb == 64
    state = index_state(conn)
    assert (
        state.valid
        and "hnsw (embedding vector_cosine_ops)" in state.definition
        and "m='8'" in state.definition
    )
    assert f"Index Scan using {INDEX_NAME}" in plan(conn, world["centre"])
    assert ensure_vector_index(conn).action == "left in place"
    assert vector_index_present_and_valid(conn).passed


def scope_order(conn) -> list[tuple]:
    """(persona, personality, created_at) of every memory, in the table's physical order."""
    return conn.execute(
        "SELECT persona_id, personality_id, created_at FROM memories ORDER BY ctid"
    ).fetchall()


def test_a_fresh_build_first_rewrites_the_table_in_scope_order(world):
    """The bot's query reads a persona's rows exactly: on adjacent pages after the rewrite. The
    rewrite leaves no CLUSTER mark on the bot's table, and is skipped while others use the table."""
    conn = world["conn"]
    loaded = scope_order(conn)
    assert loaded != sorted(loaded)  # the fixture interleaves personas and personalities
    with psycopg.connect(conn.info.dsn):  # someone else on the table: CLUSTER would lock them out
        build = ensure_vector_index(conn)
    assert build.scope_order_seconds is None and build.concurrently and scope_order(conn) == loaded
    conn.execute(f"DROP INDEX {INDEX_NAME}")
    build = ensure_vector_index(conn)
    assert build.scope_order_seconds is not None and not build.concurrently
    assert scope_order(conn) == sorted(loaded) and build.state.valid
    assert not conn.execute(
        "SELECT bool_or(indisclustered) FROM pg_index WHERE indrelid = 'memories'::regclass"
    ).fetchone()[0]
    assert ensure_vector_index(conn).scope_order_seconds is None  # left in place: nothing rewritten


def global_index_plans(url: str, persona, vectors) -> int:
    """How many of the bot's queries for `persona`, planned in a new session (the database's
    settings, as the bot's sessions have them), walk the global index."""
    with psycopg.connect(url, autocommit=True) as session:
        plans = [bot_memory_query(vector, persona).explain(session) for vector in vectors]
    return sum(INDEX_NAME in plan for plan in plans)


def test_the_delivery_keeps_the_bots_query_off_the_global_index_for_a_persona_holding_most_rows(world):
    """A persona with nearly every memory: without settings the planner walks the global HNSW index
    for it (approximate); the delivered database settings price that walk out, and the bot's query
    returns the exact answer."""
    conn, main = world["conn"], world["personas"]["Main"]
    rng = np.random.default_rng(11)
    with conn.cursor().copy(
        "COPY memories (id, persona_id, personality_id, content, embedding, created_at) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["uuid", "uuid", "uuid", "text", "vector", "timestamp"])
        for i in range(1_940):
            copy.write_row((uuid.uuid4(), main, world["personalities"]["luna"], f"bulk {i}", unit(rng), T0))
    ensure_vector_index(conn)
    vacuum_for_search(conn)
    queries = [unit(rng) for _ in range(5)]
    assert global_index_plans(world["url"], main, queries) == 5  # the trap, on pgvector's defaults

    settings = ensure_persona_indexes(conn).settings  # the default: no persona index, EXACT_SETTINGS
    assert settings["hnsw.ef_search"] == "1000" and settings["hnsw.iterative_scan"] == "strict_order"
    assert global_index_plans(world["url"], main, queries) == 0
    with psycopg.connect(world["url"], autocommit=True) as session:
        quality = measure_search(session, offline_client(), personas_per_bucket=1, queries_per_persona=3)
        assert search_uses_the_intended_plan(search_plans(session, quality), 2_000).passed
    assert search_recall_against_exact(quality, 1.0).passed and quality.fewer == 0


def test_the_build_memory_is_sized_from_the_table_and_capped(world):
    assert build_memory_mb(60, 16, 2048) == 64  # the floor
    assert 700 <= build_memory_mb(100_000, 16, 2048) <= 800  # ~6.4 KB a row, with a margin
    assert build_memory_mb(1_000_000, 16, 2048) == 2048
    # Auto: the embedded server runs here (a unix socket), so half of what this machine has free.
    local = vector_index.build_memory_cap_mb(world["conn"], vector_index.AUTO_BUILD_MEMORY)
    assert abs(local - psutil.virtual_memory().available * 0.5 / 2**20) < 1024  # free memory moves a little
    assert vector_index.build_memory_cap_mb(world["conn"], 300) == 300


def test_a_graph_that_outgrows_the_build_memory_is_said_and_reported(make_database, monkeypatch):
    """PostgreSQL's NOTICE that the graph no longer fits is caught: the build says it finished on
    disk, and a warning said beforehand that the memory was short."""
    monkeypatch.setattr(vector_index, "MIN_BUILD_MEMORY_MB", 1)
    with psycopg.connect(make_database("outgrown"), autocommit=True) as conn:
        apply_new_schema(conn)
        rng = np.random.default_rng(5)
        personality = uuid.uuid4()
        conn.execute(
            "INSERT INTO personalities (id, name, slug, character_info, personality_traits, created_at, updated_at)"
            " VALUES (%s, 'P', 'p', 'c', 't', now(), now())",
            (personality,),
        )
        register_vector(conn)
        with conn.cursor().copy(
            "COPY memories (id, personality_id, content, embedding, created_at) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "uuid", "text", "vector", "timestamp"])
            for i, vector in enumerate(rng.standard_normal((1_500, 1536), dtype=np.float32)):
                copy.write_row(
                    (
                        uuid.uuid4(),
                        personality,
                        f"m{i}",
                        vector / np.linalg.norm(vector),
                        datetime(2025, 1, 1),
                    )
                )
        said: list = []
        build = ensure_vector_index(conn, max_build_memory_mb=1, log=said.append)
    assert build.maintenance_work_mem_mb == 1 and build.wanted_memory_mb > 10
    assert not build.graph_fit_in_memory and build.state.valid
    assert any("the graph needs about" in str(line) for line in said)


def test_an_invalid_index_is_dropped_and_built_again(world):
    conn = world["conn"]
    ensure_vector_index(conn)
    conn.execute(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (INDEX_NAME,)
    )  # what an interrupted CREATE INDEX CONCURRENTLY leaves
    outcome = vector_index_present_and_valid(conn)
    assert not outcome.passed and "invalid" in outcome.description
    assert ensure_vector_index(conn).action == "rebuilt (was invalid)" and index_state(conn).valid


def test_a_large_load_drops_the_index_and_a_small_one_keeps_it(world, monkeypatch):
    conn = world["conn"]
    ensure_vector_index(conn)
    conn.execute("ANALYZE memories")  # reltuples = 60
    monkeypatch.setattr(vector_index, "BULK_LOAD_MIN_ROWS", 1)
    assert not drop_for_bulk_load(conn, 29) and index_state(conn).exists  # under half the table
    assert not drop_for_bulk_load(conn, 5, share=0.1, min_rows=1) and index_state(conn).exists
    assert drop_for_bulk_load(conn, 6, share=0.1, min_rows=1) and not index_state(conn).exists  # the sync's
    ensure_vector_index(conn)
    assert drop_for_bulk_load(conn, 30) and not index_state(conn).exists


def test_the_asset_builds_the_index_and_its_checks_fail_on_a_memory_without_embedding(world):
    resources = {
        "new_database": NewDatabaseResource(url=world["url"]),
        "embedding_provider": EmbeddingProviderResource(provider="hash"),
    }
    result = materialize([memory_vector_index], resources=resources)
    assert result.success
    [materialization] = result.asset_materializations_for_node("memory_vector_index")
    figures = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert (
        figures["action"] == "built"
        and figures["dagster/row_count"] == 60
        and figures["index_size_bytes"] > 0
    )
    assert all(e.passed for e in result.get_asset_check_evaluations())

    world["conn"].execute("UPDATE memories SET embedding = NULL WHERE id = %s", (world["rows"][0][0],))
    outcome = every_memory_has_an_embedding(world["conn"])
    assert not outcome.passed and outcome.description == "1 of 60 memories have no embedding"


def test_an_empty_table_gets_its_index_too(make_database):
    with psycopg.connect(make_database("empty_index"), autocommit=True) as conn:
        apply_new_schema(conn)
        build = ensure_vector_index(conn)
        assert build.rows == 0 and build.action == "built" and index_state(conn).valid


def test_the_recall_and_plan_checks_fail_when_the_search_walks_the_hnsw_index(world):
    conn = world["conn"]
    provider = offline_client()
    ensure_vector_index(conn)
    good = measure_search(conn, provider, personas_per_bucket=1, queries_per_persona=3)
    assert search_uses_the_intended_plan(search_plans(conn, good), 60).passed

    # The bot's statement walking the HNSW index one candidate deep under the persona filter (its
    # B-tree gone, sequential scans and sorts priced out): the trap the checks are there to catch.
    conn.execute(f"DROP INDEX {SEARCH_INDEX}")
    for setting in ("hnsw.ef_search = 1", "enable_seqscan = off", "enable_sort = off"):
        conn.execute(f"SET {setting}")
    bad = measure_search(conn, provider, personas_per_bucket=1, queries_per_persona=3)
    outcome = search_recall_against_exact(bad, 0.99)
    assert not outcome.passed and "recall@15 below 0.99" in outcome.description
    assert bad.fewer > 0 and "fewer rows than qualify" in outcome.description
    plan = search_uses_the_intended_plan(search_plans(conn, bad), 60)
    assert not plan.passed and INDEX_NAME in plan.description


def test_the_shipped_search_reads_the_persona_rows_through_the_bots_persona_index(world):
    conn = world["conn"]
    ensure_vector_index(conn)
    vacuum_for_search(conn)
    conn.execute("SET enable_seqscan = off")  # on 60 rows, push the planner towards any index
    quality = measure_search(conn, offline_client(), 1, 1)
    plans = search_plans(conn, quality)
    assert INDEX_NAME not in plans.largest.plan, plans.largest.plan
    assert any(path in plans.largest.plan for path in EXACT_PATHS), (
        plans.largest.plan
    )  # exact, through a B-tree
    assert plans.largest.index is None and plans.indexed == []
    assert search_uses_the_intended_plan(plans, 60).passed


def test_the_latency_check_warns_when_its_bound_is_below_what_is_measured(world):
    quality = measure_search(world["conn"], offline_client(), 1, 3)
    assert quality.worst_p95_ms > 0 and quality.queries == 9
    assert all(len(b.latencies_ms) == 6 for b in quality.buckets.values())  # with and without the threshold
    relaxed = search_latency_within_bound(quality, 10_000)
    assert relaxed.passed and relaxed.severity == "WARN"
    strict = search_latency_within_bound(quality, quality.worst_p95_ms / 2)
    assert not strict.passed and "p95 above" in strict.description
    assert strict.metadata["worst_p95_ms"] == round(quality.worst_p95_ms, 3)


def test_recall_counts_a_tie_at_the_cut_as_a_match():
    a, b, c = (uuid.uuid4() for _ in range(3))
    assert recall_at([(a, 0.9), (c, 0.5)], [(a, 0.9), (b, 0.5)], k=2) == 1.0  # c ties b at the cut
    assert recall_at([(a, 0.9)], [(a, 0.9), (b, 0.5)], k=2) == 0.5
    assert recall_at([], []) == 1.0 and recall_at([(a, 0.2)], []) == 0.0


def test_two_builds_at_once_take_turns_the_second_finds_the_index_built(world):
    """Two runs reaching the index at once: side by side, CREATE INDEX CONCURRENTLY against the
    other's deadlocked. The advisory lock makes the second wait, say so, and leave the index in place."""
    url = world["conn"].info.dsn
    said: list = []
    builds: list = []

    def build() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            builds.append(ensure_vector_index(conn, log=said.append))

    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", VECTOR_INDEX_LOCK)  # a build in progress
        second = threading.Thread(target=build)
        second.start()
        time.sleep(1.5)
        assert builds == [] and any(
            "another run is building, dropping or measuring" in str(line) for line in said
        )
        assert ensure_vector_index(holder).action == "built"  # the holder's own build (its lock nests)
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", VECTOR_INDEX_LOCK)
        second.join(timeout=30)
    assert [b.action for b in builds] == ["left in place"] and index_state(world["conn"]).valid


def test_a_watched_build_reports_the_memories_it_has_loaded(world, monkeypatch):
    """The build's progress comes from pg_stat_progress_create_index, read on a second connection,
    as typed events; an unwatched build says nothing more than it did."""
    conn, url = world["conn"], world["conn"].info.dsn
    columns = [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'memories' ORDER BY ordinal_position"
        )
    ]
    copies = ", ".join("gen_random_uuid()" if c == "id" else c for c in columns)
    conn.execute(
        f"INSERT INTO memories ({', '.join(columns)}) SELECT {copies} FROM memories, generate_series(1, 60)"
    )
    monkeypatch.setattr(vector_index, "BUILD_PROGRESS_SECONDS", 0.002)
    said: list = []
    build = ensure_vector_index(conn, log=said.append, watch=lambda: psycopg.connect(url))
    loaded = [e for e in said if isinstance(e, Advanced)]
    assert build.action == "built" and build.rows == 3660
    assert loaded and all(e.stage == "vector index" and 0 < e.done <= e.total == 3660 for e in loaded)
    conn.execute(f"DROP INDEX {INDEX_NAME}")
    quiet_build: list = []
    ensure_vector_index(conn, log=quiet_build.append)
    assert not [e for e in quiet_build if isinstance(e, Advanced)]
