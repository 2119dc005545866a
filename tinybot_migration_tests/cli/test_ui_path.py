"""The Dagster UI path, end to end: the real `tinybot-migration dev` (webserver and daemon) on a
fresh instance with demo data, driven through GraphQL with the requests the UI sends, the
embeddings from a local OpenAI-compatible server through the real client."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tinybot_migration.defs.memories.sensor import INCREMENTAL_MEMORY_JOB, memory_rebuild_sensor
from tinybot_migration.defs.relational.partitions_sensor import personality_partitions_before_first_migration
from tinybot_migration.lib.embedded_postgres import embedded_database_url
from tinybot_migration.lib.memories.pairing import pair_messages
from tinybot_migration.lib.memories.rebuild import load_messages
from tinybot_migration.lib.memories.writer import SOURCE_BOT, SOURCE_SHAPES
from tinybot_migration.lib.settings import NEW_DATABASE_NAME, OLD_DATABASE_NAME
from tinybot_migration_tests.helpers.dagster_ui import DagsterUI, cli_path, start_dev
from tinybot_migration_tests.helpers.environment import fresh_environment
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer
from tinybot_migration_tests.helpers.verdict import LATENCY_WARNING, MIGRATION_CHECKS, PROVIDER_DEMO_WARNINGS

pytestmark = pytest.mark.slow

# Partitioned by personality, sorted: the two memory sources and the Qdrant points' outcomes.
MEMORY_ASSETS = ["qdrant_point_outcomes", "rebuilt_memories", "shapes_memories"]
PARTITION_TAG = "dagster/partition"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
SENSOR_INTERVAL_SECONDS = 30  # the least MEMORY_REBUILD_INTERVAL_SECONDS accepts


@pytest.fixture
def provider():
    with OpenAITestServer() as server:
        yield server


@pytest.fixture
def demo_home(tmp_path, provider) -> tuple[Path, dict[str, str]]:
    """A fresh TINYBOT_HOME holding only demo data (no run, no partition), and the environment a
    person would start `tinybot-migration dev` with."""
    home = tmp_path / "home"
    env = fresh_environment(home, provider, MEMORY_REBUILD_INTERVAL_SECONDS=str(SENSOR_INTERVAL_SECONDS))
    made = subprocess.run(
        [str(cli_path()), "demo-data"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return home, env


@pytest.fixture
def ui(demo_home, tmp_path):
    home, env = demo_home
    started = start_dev(home, tmp_path, env)
    try:
        yield started
    finally:
        left = started.stop()
        assert left == [], f"processes of tinybot-migration dev still running: {left}"


def old_slugs(home: Path) -> list[str]:
    with psycopg.connect(embedded_database_url(OLD_DATABASE_NAME, home)) as conn:
        return [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)


def assert_every_check_passed(ui: DagsterUI) -> None:
    """Every check of every asset ran against its latest materialization and passed; of the WARN
    checks, the demo's planted unmapped senders fail (its store's vectors are not compared: they are
    declared hash-1536, the test provider is text-embedding-3-small), and a p95 may (it measures the
    machine)."""
    results = ui.latest_check_results()
    assert len(results) == MIGRATION_CHECKS, sorted(results)
    assert all(results[warning] == ("FAILED", "WARN") for warning in PROVIDER_DEMO_WARNINGS)
    failed = {
        name: outcome
        for name, outcome in results.items()
        if outcome[0] != "SUCCEEDED"
        and name not in PROVIDER_DEMO_WARNINGS
        and not (name == LATENCY_WARNING and outcome == ("FAILED", "WARN"))
    }
    assert failed == {}


def assert_migrated(home: Path) -> None:
    """The new DB holds the history, one memory per exchange and the shapes.inc memories."""
    with psycopg.connect(embedded_database_url(OLD_DATABASE_NAME, home)) as old:
        history = old.execute("SELECT count(*) FROM conversation_history").fetchone()[0]
    with psycopg.connect(embedded_database_url(NEW_DATABASE_NAME, home)) as conn:
        assert conn.execute("SELECT count(*) FROM conversation_history").fetchone()[0] == history == 4_364
        [all_ids] = conn.execute("SELECT array_agg(id) FROM personalities").fetchone()
        expected = {e.memory_id for e in pair_messages(load_messages(conn, all_ids)).exchanges}
        rebuilt = {
            r[0] for r in conn.execute("SELECT id FROM memories WHERE source_system = %s", (SOURCE_BOT,))
        }
        shapes = conn.execute(
            "SELECT count(*) FROM memories WHERE source_system = %s", (SOURCE_SHAPES,)
        ).fetchone()[0]
    assert len(expected) > 2_000 and rebuilt == expected
    assert shapes > 9_000


def test_materialize_all_on_a_fresh_instance_runs_the_whole_migration(ui, demo_home, provider):
    home, _ = demo_home
    # Before any run, the memory assets offer every personality (no dead end in the dialog).
    slugs = old_slugs(home)
    assert len(slugs) > 50 and ui.partition_keys("rebuilt_memories") == slugs
    assert ui.sensor_state(personality_partitions_before_first_migration.name)["status"] == "RUNNING"

    launched = ui.materialize()  # the asset graph's "Materialize all", the dialog's defaults
    backfill = ui.wait_for_backfill(launched["backfill_id"])
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["numPartitions"] == len(slugs)
    runs = backfill["runs"]
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    # Each memory asset in one run over every personality (its backfill policy), after the tables.
    for asset in MEMORY_ASSETS:
        [run] = [r for r in runs if {"path": [asset]} in r["assetSelection"]]
        assert (tag(run, RANGE_START), tag(run, RANGE_END)) == (slugs[0], slugs[-1])
    assert_every_check_passed(ui)
    assert_migrated(home)
    assert provider.requests  # the memories were embedded through the OpenAI client


def test_the_ui_path_step_by_step_then_the_sensor_rebuilds_the_one_personality_that_changed(
    ui, demo_home, provider
):
    home, _ = demo_home
    # 1. Assets → group relational → Materialize all: one run.
    relational = ui.asset_group("relational")
    assert len(relational) == 12
    run = ui.wait_for_run(ui.materialize(relational)["run_id"])
    assert run["status"] == "SUCCESS", run
    # shapes_export (group shapes) is the other root the memory assets need.
    assert ui.wait_for_run(ui.materialize(["shapes_export"])["run_id"])["status"] == "SUCCESS"
    # The demo's Qdrant store landed and its vectors judged (group qdrant).
    assert (
        ui.wait_for_run(ui.materialize(["qdrant_points", "qdrant_vectors"])["run_id"])["status"] == "SUCCESS"
    )

    # 2. The memory assets over every personality: one backfill, one run per asset.
    slugs = old_slugs(home)
    backfill = ui.wait_for_backfill(ui.materialize(MEMORY_ASSETS)["backfill_id"])
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["numPartitions"] == len(slugs)
    runs = backfill["runs"]
    # One run per asset at most (the daemon may put both in one run: same partitions and policy).
    assert sorted(p["path"][0] for r in runs for p in r["assetSelection"]) == MEMORY_ASSETS
    assert all(
        r["status"] == "SUCCESS" and (tag(r, RANGE_START), tag(r, RANGE_END)) == (slugs[0], slugs[-1])
        for r in runs
    ), runs

    # 3. What is downstream: the vector index and the search checks, and retrieval parity with Qdrant.
    run = ui.wait_for_run(
        ui.materialize(["memory_vector_index", "qdrant_retrieval_parity", "cutover_report"])["run_id"]
    )
    assert run["status"] == "SUCCESS", run
    assert_every_check_passed(ui)
    assert_migrated(home)

    # 4. Cutover: the incremental sensor on, then the bot writes one new exchange.
    assert ui.start_sensor(memory_rebuild_sensor.name) == "RUNNING"
    new_url = embedded_database_url(NEW_DATABASE_NAME, home)
    with psycopg.connect(new_url, autocommit=True) as conn:
        slug, personality_id, persona_id, channel = conn.execute(
            "SELECT p.slug, h.personality_id, h.persona_id, h.channel_id FROM conversation_history h"
            " JOIN personalities p ON p.id = h.personality_id ORDER BY h.created_at DESC, h.id LIMIT 1"
        ).fetchone()
        memories_before = personality_memories(conn, personality_id)
        sent_before = len(provider.requests)
        for role, content, offset in (
            ("user", "what do you remember of the lighthouse?", "1 second"),
            ("assistant", "the lighthouse keeper's green door", "2 seconds"),
        ):
            conn.execute(
                "INSERT INTO conversation_history (id, channel_id, guild_id, personality_id, persona_id,"
                " role, content, created_at) VALUES (gen_random_uuid(), %s, NULL, %s, %s, %s, %s,"
                " now() + %s::interval)",
                (channel, personality_id, persona_id, role, content, offset),
            )

    tick = wait_for_tick_with_runs(ui, timeout=3 * SENSOR_INTERVAL_SECONDS + 60)
    [run_id] = tick["runIds"]
    run = ui.wait_for_run(run_id)
    assert run["status"] == "SUCCESS", run
    assert run["jobName"] == INCREMENTAL_MEMORY_JOB and tag(run, PARTITION_TAG) == slug
    ticks = ui.sensor_state(memory_rebuild_sensor.name)["ticks"]
    assert [t["runIds"] for t in ticks if t["runIds"]] == [[run_id]]  # no other personality's run
    with psycopg.connect(new_url) as conn:
        assert personality_memories(conn, personality_id) == memories_before + 1
    texts = [text for request in provider.requests[sent_before:] for text in request]
    assert len(texts) == 1 and "green door" in texts[0]  # only the new exchange was embedded


def personality_memories(conn: psycopg.Connection, personality_id) -> int:
    return conn.execute(
        "SELECT count(*) FROM memories WHERE personality_id = %s AND source_system = %s",
        (personality_id, SOURCE_BOT),
    ).fetchone()[0]


def wait_for_tick_with_runs(ui: DagsterUI, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tick in ui.sensor_state(memory_rebuild_sensor.name)["ticks"]:
            assert tick["status"] != "FAILURE", tick
            if tick["runIds"]:
                return tick
        time.sleep(2)
    raise AssertionError(f"no tick of {memory_rebuild_sensor.name} requested a run within {timeout:.0f}s")
