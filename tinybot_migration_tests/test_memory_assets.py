"""`rebuilt_memories` as Dagster runs it (range run, single partition) and the incremental sensor."""

import psycopg
import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, materialize

from tinybot_migration.assets.memories import rebuilt_memories
from tinybot_migration.automation import memory_rebuild_sensor
from tinybot_migration.partitions import personality_partitions
from tinybot_migration.resources import EmbeddingProviderResource, NewDatabaseResource
from tinybot_migration.schema import apply_new_schema
from tinybot_migration.settings import memory_rebuild_interval_seconds
from tinybot_migration_tests.conversations import Conversations
from tinybot_migration_tests.openai_server import OpenAITestServer


@pytest.fixture
def new_url(make_database) -> str:
    url = make_database("memory_assets")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        talk = Conversations(conn)
        talk.exchanges("zeta", 4)
        talk.exchanges("alpha", 2)
        talk.say("alpha", "user", "anyone?", 100)  # waits for its answer
    return url


@pytest.fixture
def instance():
    with instance_for_test() as test_instance:
        yield test_instance


def run(instance: DagsterInstance, new_url: str, server: OpenAITestServer, **kwargs):
    return materialize(
        [rebuilt_memories],
        instance=instance,
        resources={
            "new_database": NewDatabaseResource(url=new_url),
            "embedding_provider": EmbeddingProviderResource(
                provider="openai", api_key="sk-test", base_url=server.base_url
            ),
        },
        raise_on_error=False,
        **kwargs,
    )


def metadata(result) -> dict:
    materializations = result.asset_materializations_for_node("rebuilt_memories")
    return {k: getattr(v, "value", v) for k, v in materializations[-1].metadata.items()}


def test_one_range_run_covers_every_registered_personality(instance, new_url):
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta", "alpha"])  # registration order
    tags = {"dagster/asset_partition_range_start": "zeta", "dagster/asset_partition_range_end": "alpha"}
    with OpenAITestServer() as server:
        result = run(instance, new_url, server, tags=tags)
        assert result.success
        assert len(server.requests) == 1  # both personalities' exchanges in one request
    assert len(result.asset_materializations_for_node("rebuilt_memories")) == 2
    figures = metadata(result)
    assert figures["memories_written"] == 6 and figures["exchanges"] == 6 and figures["contexts"] == 2
    assert figures["provider_inputs"] == 6 and figures["tokens"] > 0 and figures["estimated_cost_usd"] > 0
    assert (
        figures["unanswered_user_messages"] == 1 and "| zeta | 1 | 4 | 0 | 4 |" in figures["per_personality"]
    )
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 3 and all(e.passed for e in evaluations)

    with OpenAITestServer() as server:
        again = run(instance, new_url, server, partition_key="alpha")
        assert again.success and server.requests == []
    assert metadata(again)["memories_written"] == 0 and metadata(again)["cache_hits"] == 0


def test_a_failing_check_is_reported_without_failing_the_run(instance, new_url):
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta", "alpha"])
    with OpenAITestServer() as server:
        server.reject_marker = "zeta question 2"
        result = run(instance, new_url, server, partition_key="zeta")
    assert result.success
    assert metadata(result)["exchanges_rejected"] == 1
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["every_exchange_has_one_memory"]


def test_the_sensor_registers_new_personalities_and_requests_only_changed_ones(instance, new_url):
    resources = {"new_database": NewDatabaseResource(url=new_url)}
    with build_sensor_context(instance=instance, resources=resources) as context:
        first = memory_rebuild_sensor(context)
    [add] = first.dynamic_partitions_requests
    assert sorted(add.partition_keys) == ["alpha", "zeta"]
    assert sorted(r.partition_key for r in first.run_requests) == ["alpha", "zeta"]
    instance.add_dynamic_partitions(personality_partitions.name, add.partition_keys)

    with OpenAITestServer() as server:
        assert run(instance, new_url, server, partition_key="zeta").success
        assert run(instance, new_url, server, partition_key="alpha").success
    with build_sensor_context(instance=instance, resources=resources) as context:
        quiet = memory_rebuild_sensor(context)
    assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []

    with psycopg.connect(new_url, autocommit=True) as conn:
        talk = Conversations(conn)
        talk.say("alpha", "user", "another one waiting", 200)  # a user message alone starts nothing
        with build_sensor_context(instance=instance, resources=resources) as context:
            assert memory_rebuild_sensor(context).run_requests == []
        talk.say("alpha", "assistant", "answered at last", 201)
        talk.say("newcomer", "user", "hello", 300)
        talk.say("newcomer", "assistant", "welcome", 301)
    with build_sensor_context(instance=instance, resources=resources) as context:
        changed = memory_rebuild_sensor(context)
    assert sorted(r.partition_key for r in changed.run_requests) == ["alpha", "newcomer"]
    assert changed.dynamic_partitions_requests[0].partition_keys == ["newcomer"]
    alpha = next(r for r in changed.run_requests if r.partition_key == "alpha")
    assert alpha.tags["tinybot/uncovered_answers"] == "1"  # both waiting messages, one answer


def test_the_sensor_interval_setting_is_validated(monkeypatch):
    monkeypatch.setenv("MEMORY_REBUILD_INTERVAL_SECONDS", "600")
    assert memory_rebuild_interval_seconds() == 600
    monkeypatch.setenv("MEMORY_REBUILD_INTERVAL_SECONDS", "soon")
    with pytest.raises(ValueError, match="MEMORY_REBUILD_INTERVAL_SECONDS"):
        memory_rebuild_interval_seconds()


def test_errors_that_a_retry_cannot_fix_fail_at_once(instance, new_url):
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta", "gone"])
    with OpenAITestServer() as server:
        stale = run(instance, new_url, server, partition_key="gone")
    with OpenAITestServer(dimensions=768) as wrong:
        misconfigured = run(instance, new_url, wrong, partition_key="zeta")
    for result, message in ((stale, "'gone'"), (misconfigured, "768-dimensional")):
        assert not result.success
        events = [e.event_type_value for e in result.all_events]
        assert "STEP_UP_FOR_RETRY" not in events
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert message in str(failure.event_specific_data.error)
