"""`rebuilt_memories` as Dagster runs it (range run, single partition) and the incremental sensor."""

import psycopg
import pytest
from dagster import DagsterEventType, DagsterInstance, build_sensor_context, instance_for_test, materialize

from tinybot_migration.defs.memories import sensor as sensor_module
from tinybot_migration.defs.memories.assets import rebuilt_memories
from tinybot_migration.defs.memories.sensor import memory_rebuild_sensor
from tinybot_migration.defs.partitions import personality_partitions
from tinybot_migration.defs.resources import (
    EmbeddingProviderResource,
    NewDatabaseResource,
    OldDatabaseResource,
)
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration.lib.settings import (
    SettingWarning,
    memory_rebuild_interval_seconds,
    memory_reconcile_interval_seconds,
)
from tinybot_migration.runtime.dagster_instance import PLANNED_EVENTS_ENV
from tinybot_migration_tests.helpers.conversations import Conversations
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer


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


def run(
    instance: DagsterInstance, new_url: str, server: OpenAITestServer, provider: dict | None = None, **kwargs
):
    return materialize(
        [rebuilt_memories],
        instance=instance,
        resources={
            "new_database": NewDatabaseResource(url=new_url),
            # Read only by a dry run before the first migration (no history in the new DB).
            "old_database": OldDatabaseResource(url=new_url),
            "embedding_provider": EmbeddingProviderResource(
                provider="openai", api_key="sk-test", base_url=server.base_url, **(provider or {})
            ),
        },
        raise_on_error=False,
        **kwargs,
    )


def metadata(result) -> dict:
    materializations = result.asset_materializations_for_node("rebuilt_memories")
    return {k: getattr(v, "value", v) for k, v in materializations[-1].metadata.items()}


def test_one_range_run_covers_every_registered_personality(instance, new_url, monkeypatch):
    monkeypatch.setenv(PLANNED_EVENTS_ENV, "true")  # as the CLI's and the UI's instance has it
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta", "alpha"])  # registration order
    tags = {"dagster/asset_partition_range_start": "zeta", "dagster/asset_partition_range_end": "alpha"}
    with OpenAITestServer() as server:
        result = run(instance, new_url, server, tags=tags)
        assert result.success
        assert len(server.requests) == 1  # both personalities' exchanges in one request
    assert len(result.asset_materializations_for_node("rebuilt_memories")) == 2
    planned = instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    assert len(planned) == 1  # one for the range, not one per partition
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


def test_the_sensor_interval_setting_falls_back_to_the_default_with_a_warning(monkeypatch):
    monkeypatch.setenv("MEMORY_REBUILD_INTERVAL_SECONDS", "600")
    assert memory_rebuild_interval_seconds() == 600
    monkeypatch.setenv("MEMORY_REBUILD_INTERVAL_SECONDS", "30")
    assert memory_rebuild_interval_seconds() == 30
    for bad in ("29", "10", "soon", "-5"):
        monkeypatch.setenv("MEMORY_REBUILD_INTERVAL_SECONDS", bad)
        with pytest.warns(
            SettingWarning, match=r"MEMORY_REBUILD_INTERVAL_SECONDS .*>= 30.*using the default 3600"
        ):
            assert memory_rebuild_interval_seconds() == 3600


def test_the_reconcile_interval_setting_falls_back_to_the_default_with_a_warning(monkeypatch):
    monkeypatch.setenv("MEMORY_RECONCILE_INTERVAL_SECONDS", "3600")
    assert memory_reconcile_interval_seconds() == 3600
    for bad in ("59", "daily"):
        monkeypatch.setenv("MEMORY_RECONCILE_INTERVAL_SECONDS", bad)
        with pytest.warns(
            SettingWarning, match=r"MEMORY_RECONCILE_INTERVAL_SECONDS .*>= 60.*using the default 86400"
        ):
            assert memory_reconcile_interval_seconds() == 86400


def sensor_tick(instance, new_url):
    resources = {"new_database": NewDatabaseResource(url=new_url)}
    with build_sensor_context(instance=instance, resources=resources) as context:
        return memory_rebuild_sensor(context)


def run_as_requested(instance, new_url, server, request):
    """Materialize what a RunRequest asks for, with its run key and tags, as the daemon would."""
    tags = {**request.tags, "dagster/run_key": request.run_key}
    return run(
        instance,
        new_url,
        server,
        partition_key=request.partition_key,
        tags=tags,
        run_config=request.run_config,
    )


def test_a_failed_run_is_requested_again_after_a_backoff(instance, new_url, monkeypatch):
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta", "alpha"])
    [request] = [r for r in sensor_tick(instance, new_url).run_requests if r.partition_key == "zeta"]
    with OpenAITestServer() as server:
        server.fail_always = 401  # not retryable: the run fails at once
        failed = run_as_requested(instance, new_url, server, request)
    assert not failed.success
    failed_at = instance.get_run_record_by_id(failed.run_id).end_time

    monkeypatch.setattr(sensor_module, "_now", lambda: failed_at + 10)
    assert [r.partition_key for r in sensor_tick(instance, new_url).run_requests] == ["alpha"]  # zeta waits

    monkeypatch.setattr(sensor_module, "_now", lambda: failed_at + sensor_module.retry_delay_seconds(1) + 1)
    [retry] = [r for r in sensor_tick(instance, new_url).run_requests if r.partition_key == "zeta"]
    assert retry.run_key != request.run_key and retry.tags["tinybot/retry_of"] == failed.run_id
    with OpenAITestServer() as server:
        fixed = run_as_requested(instance, new_url, server, retry)
    assert fixed.success
    assert [r.partition_key for r in sensor_tick(instance, new_url).run_requests] == ["alpha"]


def test_the_retry_backoff_doubles_up_to_a_bound():
    delays = [sensor_module.retry_delay_seconds(n) for n in range(1, 12)]
    assert delays[:3] == [300, 600, 1200]
    assert max(delays) == delays[-1] == sensor_module.MAX_RETRY_DELAY_SECONDS


def test_rebuilt_memories_row_count_counts_only_rebuilt_memories(instance, new_url):
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta", "alpha"])
    with psycopg.connect(new_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memories (id, personality_id, content, created_at, source_system)"
            " SELECT gen_random_uuid(), id, 'legacy', now(), 'shapes-inc' FROM personalities WHERE slug = 'zeta'"
        )
    with OpenAITestServer() as server:
        result = run(instance, new_url, server, partition_key="zeta")
    assert result.success and metadata(result)["dagster/row_count"] == 4


def test_dimensions_that_do_not_fit_the_column_fail_the_run_before_any_request(instance, new_url):
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta"])
    with OpenAITestServer(dimensions=768) as server:
        result = run(instance, new_url, server, {"dimensions": 768}, partition_key="zeta")
        assert server.requests == []
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "768 dimensions" in str(failure.event_specific_data.error) and "vector(1536)" in str(
        failure.event_specific_data.error
    )


def test_a_failure_after_the_providers_retries_fails_once_and_a_rerun_pays_only_the_rest(instance, new_url):
    """The provider fails (retryably) after the first chunk and its own retries are spent: the step
    fails at once, without a Dagster retry (which would also retry Ctrl-C), saying a re-run resumes;
    the re-run embeds only what the first did not."""
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta", "alpha"])
    tags = {"dagster/asset_partition_range_start": "zeta", "dagster/asset_partition_range_end": "alpha"}
    config = {"max_inputs_per_request": 4, "max_retries": 0, "max_concurrent_requests": 1}
    with OpenAITestServer() as server:
        server.fail_requests = {2}  # the first answered, the second refused (HTTP 500), the rest answered
        failed = run(instance, new_url, server, config, tags=tags)
        assert not failed.success
        events = [e.event_type_value for e in failed.all_events]
        assert "STEP_UP_FOR_RETRY" not in events
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        assert "HTTP 500" in str(failure.event_specific_data.error)
        assert "a re-run resumes" in str(failure.event_specific_data.error)
        result = run(instance, new_url, server, config, tags=tags)
    assert result.success
    answered = [text for n, request in enumerate(server.requests, 1) if n != 2 for text in request]
    assert len(answered) == 6 and len(set(answered)) == 6  # every text paid for once
    last = metadata(result)
    assert last["memories_written"] == len(server.requests[1]) and last["cache_hits"] == 0
    assert last["memories_written"] + last["memories_already_present"] == 6


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


def test_a_malformed_answer_fails_the_step_at_once_without_paying_again(instance, new_url):
    instance.add_dynamic_partitions(personality_partitions.name, ["zeta"])
    with OpenAITestServer() as server:
        server.vector_fault = "missing"
        result = run(instance, new_url, server, partition_key="zeta")
        assert len(server.requests) == 1
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "answered 3 vectors for 4 inputs" in str(failure.event_specific_data.error)
