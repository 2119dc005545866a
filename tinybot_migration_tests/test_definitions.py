"""The definitions load (as every Dagster CLI loads them), the stages follow the graph, the pools the
assets declare are the ones dagster.yaml limits, and an asset runs when called directly."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml
from dagster import AssetKey, DefaultSensorStatus, build_asset_context, instance_for_test

import tinybot_migration
from tinybot_migration.definitions import ALL_ASSETS, defs
from tinybot_migration.defs.memories.sensor import INCREMENTAL_MEMORY_JOB
from tinybot_migration.defs.pools import EMBEDDING_POOL, NEW_DATABASE_POOL
from tinybot_migration.defs.relational.assets import relational_assets
from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource
from tinybot_migration.defs.stages import migration_stages
from tinybot_migration.lib.demo_data import generate_demo_data
from tinybot_migration.lib.memories.checks import MEMORY_CHECK_DESCRIPTIONS
from tinybot_migration.lib.relational.checks import checks_for
from tinybot_migration.lib.relational.tables import RELATIONAL_TABLES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).parent / "dg"


@pytest.mark.slow
def test_dg_check_defs_validates_the_project():
    result = subprocess.run(
        [str(DG), "check", "defs"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("value", ["10", "soon"])
def test_a_bad_interval_setting_never_takes_the_code_location_down(value):
    env = dict(os.environ, MEMORY_REBUILD_INTERVAL_SECONDS=value)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tinybot_migration.definitions import defs;"
            "print(defs.resolve_sensor_def('memory_rebuild_sensor').minimum_interval_seconds)",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3600"
    assert "MEMORY_REBUILD_INTERVAL_SECONDS" in result.stderr and ">= 30" in result.stderr
    assert repr(value) in result.stderr


def test_the_migration_stages_follow_the_graph_and_cover_every_asset():
    stages = migration_stages(ALL_ASSETS)
    assert [s.job_name for s in stages] == [
        "migration_stage_1_unpartitioned",
        "migration_stage_2_personality",
        "migration_stage_3_unpartitioned",
    ]
    assert set(stages[0].asset_keys) == {AssetKey(spec.name) for spec in RELATIONAL_TABLES} | {
        AssetKey("shapes_export"),
        AssetKey("pending_memories"),
        AssetKey("qdrant_points"),  # the landing needs nothing but the store and the new DB
        AssetKey("qdrant_vectors"),  # before the memory sources: it seeds the cache they read
    }
    # The import follows the rebuild in the same run (the in-process executor keeps this order).
    assert stages[1].asset_keys == (
        AssetKey("rebuilt_memories"),
        AssetKey("shapes_memories"),
        AssetKey("qdrant_point_outcomes"),  # after both sources: a point is matched to their memories
    )
    # After both memory sources; parity compares Qdrant's answers with the indexed bot query.
    assert stages[2].asset_keys == (
        AssetKey("memory_vector_index"),
        AssetKey("qdrant_retrieval_parity"),
        AssetKey("cutover_report"),  # last: it weighs everything else
    )
    for stage in stages:
        job_keys = defs.resolve_job_def(stage.job_name).asset_layer.selected_asset_keys
        assert set(job_keys) == set(stage.asset_keys)


def test_every_table_is_an_asset_with_its_checks():
    graph = defs.resolve_asset_graph()
    for spec in RELATIONAL_TABLES:
        key = AssetKey(spec.name)
        checks = {c.name for c in graph.asset_check_keys if c.asset_key == key}
        assert checks == set(checks_for(spec))
        parents = {AssetKey(fk.parent) for fk in spec.foreign_keys}
        assert graph.get(key).parent_keys == parents


def test_memories_are_partitioned_by_personality_with_their_job_and_sensor():
    graph = defs.resolve_asset_graph()
    memories = graph.get(AssetKey("rebuilt_memories"))
    assert memories.partitions_def.name == "personality"
    assert memories.backfill_policy is not None and memories.backfill_policy.max_partitions_per_run is None
    assert AssetKey("conversation_history") in memories.parent_keys
    checks = {c.name for c in graph.asset_check_keys if c.asset_key == AssetKey("rebuilt_memories")}
    assert checks == set(MEMORY_CHECK_DESCRIPTIONS)
    sensor = defs.resolve_sensor_def("memory_rebuild_sensor")
    assert sensor.job_name == INCREMENTAL_MEMORY_JOB
    assert defs.resolve_job_def(INCREMENTAL_MEMORY_JOB).asset_layer.selected_asset_keys == {
        AssetKey("rebuilt_memories")
    }
    assert sensor.minimum_interval_seconds == 3600
    assert sensor.default_status == DefaultSensorStatus.STOPPED


def test_the_pools_the_assets_declare_are_limited_by_the_shipped_dagster_yaml():
    """README: relational assets share `tinybot_new_database`, the memory assets
    `tinybot_embeddings`; 2 slots a pool, op granularity, 4 concurrent runs."""
    pools = {asset.key.to_user_string(): asset.op.pool for asset in ALL_ASSETS}
    assert {pools[spec.name] for spec in RELATIONAL_TABLES} == {NEW_DATABASE_POOL}
    assert (
        pools["rebuilt_memories"]
        == pools["shapes_memories"]
        == pools["qdrant_point_outcomes"]
        == EMBEDDING_POOL
    )
    assert pools["shapes_export"] is None  # it reads files and writes nothing
    assert pools["qdrant_vectors"] == EMBEDDING_POOL  # it asks the provider for its samples
    assert pools["memory_vector_index"] == NEW_DATABASE_POOL
    assert set(pools.values()) == {NEW_DATABASE_POOL, EMBEDDING_POOL, None}

    shipped = yaml.safe_load((Path(tinybot_migration.__file__).parent / "dagster.yaml").read_text())
    overrides = {key: shipped[key] for key in ("concurrency", "run_monitoring")}
    with instance_for_test(overrides=overrides) as instance:
        assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 2
        assert config.pool_config.pool_granularity.value == "op"
        assert config.run_queue_config.max_concurrent_runs == 4
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert all(f"`{pool}`" in readme for pool in (NEW_DATABASE_POOL, EMBEDDING_POOL))


def test_an_asset_called_directly(make_database, tmp_path):
    old_url, new_url = make_database("direct_old"), make_database("direct_new")
    generate_demo_data(old_url, tmp_path / "export", scale=1, seed=11)
    users = next(a for a in relational_assets if a.key == AssetKey("users"))
    result = users(
        context=build_asset_context(),
        old_database=OldDatabaseResource(url=old_url),
        new_database=NewDatabaseResource(url=new_url),
    )
    assert result.metadata["dagster/row_count"] == 14
    assert {c.check_name for c in result.check_results} == set(checks_for(RELATIONAL_TABLES[0]))
    assert all(c.passed for c in result.check_results)
    with psycopg.connect(new_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 14
