"""The sensor that offers the memory partitions on a fresh instance, before the first migration."""

import pytest
from dagster import DefaultSensorStatus, SkipReason, build_sensor_context, instance_for_test

from tinybot_migration.definitions import defs
from tinybot_migration.defs.partitions import personality_partitions
from tinybot_migration.defs.relational.partitions_sensor import personality_partitions_before_first_migration
from tinybot_migration.defs.resources import OldDatabaseResource

sensor = personality_partitions_before_first_migration


@pytest.fixture
def instance():
    with instance_for_test() as test_instance:
        yield test_instance


def evaluate(instance, old_url: str):
    resources = {"old_database": OldDatabaseResource(url=old_url)}
    with build_sensor_context(instance=instance, resources=resources) as context:
        return sensor(context)


def test_it_runs_by_default_in_the_definitions():
    assert defs.resolve_sensor_def(sensor.name).default_status == DefaultSensorStatus.RUNNING


def test_a_fresh_instance_gets_the_old_databases_slugs_and_then_the_sensor_reads_nothing(
    instance, make_database, admin_connect
):
    old_url = make_database("partitions_old")
    old = admin_connect(old_url)
    empty = evaluate(instance, old_url)  # an old DB without its tables yet
    assert isinstance(empty, SkipReason) and "has no personality yet" in empty.skip_message

    old.execute("CREATE TABLE personalities (id uuid PRIMARY KEY, slug text UNIQUE)")
    old.execute("INSERT INTO personalities VALUES (gen_random_uuid(), 'zed'), (gen_random_uuid(), 'amy')")
    result = evaluate(instance, old_url)
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == personality_partitions.name and add.partition_keys == ["amy", "zed"]
    assert result.run_requests == []

    instance.add_dynamic_partitions(personality_partitions.name, add.partition_keys)
    # Registered: the old DB is not even opened (an unreachable one would not matter).
    registered = evaluate(instance, "postgresql://nobody:secret@127.0.0.1:1/none")
    assert isinstance(registered, SkipReason) and "registered already" in registered.skip_message


def test_an_unreachable_old_database_skips_with_a_masked_url(instance):
    result = evaluate(instance, "postgresql://reader:hunter2@127.0.0.1:1/tinybot")
    assert isinstance(result, SkipReason)
    assert "cannot connect to the old database" in result.skip_message
    assert "hunter2" not in result.skip_message
