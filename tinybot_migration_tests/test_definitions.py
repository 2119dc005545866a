"""The definitions load (as every Dagster CLI loads them) and an asset runs when called directly."""

import subprocess
import sys

import psycopg
from dagster import AssetKey, build_asset_context

from tinybot_migration.assets.relational import relational_assets
from tinybot_migration.checks.relational import checks_for
from tinybot_migration.definitions import defs
from tinybot_migration.demo_data import generate_demo_data
from tinybot_migration.jobs import UNPARTITIONED_MIGRATION_JOB
from tinybot_migration.resources import NewDatabaseResource, OldDatabaseResource
from tinybot_migration.tables import RELATIONAL_TABLES


def test_definitions_validate_with_the_dagster_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "tinybot_migration.definitions"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_every_table_is_an_asset_with_its_checks_in_the_migration_job():
    job = defs.resolve_job_def(UNPARTITIONED_MIGRATION_JOB)
    graph = defs.resolve_asset_graph()
    for spec in RELATIONAL_TABLES:
        key = AssetKey(spec.name)
        assert key in job.asset_layer.asset_graph.get_all_asset_keys()
        checks = {c.name for c in graph.asset_check_keys if c.asset_key == key}
        assert checks == set(checks_for(spec))
        parents = {AssetKey(fk.parent) for fk in spec.foreign_keys}
        assert graph.get(key).parent_keys == parents


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


def test_memories_are_partitioned_by_personality_with_their_job_and_sensor():
    from dagster import DefaultSensorStatus

    from tinybot_migration.automation import INCREMENTAL_MEMORY_JOB
    from tinybot_migration.checks.memories import MEMORY_CHECK_DESCRIPTIONS

    graph = defs.resolve_asset_graph()
    memories = graph.get(AssetKey("rebuilt_memories"))
    assert memories.partitions_def.name == "personality"
    assert memories.backfill_policy is not None and memories.backfill_policy.max_partitions_per_run is None
    assert AssetKey("conversation_history") in memories.parent_keys
    checks = {c.name for c in graph.asset_check_keys if c.asset_key == AssetKey("rebuilt_memories")}
    assert checks == set(MEMORY_CHECK_DESCRIPTIONS)
    sensor = defs.resolve_sensor_def("memory_rebuild_sensor")
    assert sensor.job_name == INCREMENTAL_MEMORY_JOB
    assert sensor.minimum_interval_seconds == 3600
    assert sensor.default_status == DefaultSensorStatus.STOPPED
    assert defs.resolve_job_def("migration_partitioned_personality") is not None
