"""The Dagster instance can be prepared by several processes at once (PostgreSQL storage)."""

import os
import threading
import time

from dagster import instance_for_test

from tinybot_migration.runtime.dagster_instance import (
    EVENT_BATCH_ENV,
    PLANNED_EVENTS_ENV,
    STORAGE_URL_ENV,
    initialize_pool_limits,
    prepare_instance,
)

POOLS = ["tinybot_new_database", "tinybot_embeddings"]


def test_pool_limits_are_set_up_safely_by_several_processes_at_once(make_database):
    """Dagster's own set-up of a pool aborts the loser's transaction when two start together
    (5 of 6 failed here); every one of these finds the limit in place and goes on."""
    url = make_database("dagster_storage").replace("postgresql://", "postgresql+psycopg2://", 1)
    overrides = {
        "storage": {"postgres": {"postgres_url": url}},
        "concurrency": {"pools": {"default_limit": 2, "granularity": "op"}},
    }
    with instance_for_test(overrides=overrides):
        pass  # creates the storage schema once
    errors: list[str] = []
    start = threading.Barrier(6)

    def prepare() -> None:
        with instance_for_test(overrides=overrides) as instance:
            start.wait()
            try:
                initialize_pool_limits(instance, POOLS)
            except Exception as error:  # noqa: BLE001 - the test reports whatever went wrong
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=prepare) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with instance_for_test(overrides=overrides) as instance:
        assert {
            p: instance.event_log_storage.get_concurrency_info(p).slot_count for p in POOLS
        } == dict.fromkeys(POOLS, 2)


def test_a_step_waiting_inside_a_run_is_reported_and_given_up_on_after_the_bound():
    """Another run took the pool's last slot after the stage's own check: the watcher says which
    run holds it, and after the bound calls give_up (the runner then interrupts the run)."""
    import uuid

    from dagster import Definitions, asset, define_asset_job

    from tinybot_migration.runtime.run_owners import BlockedStepWatcher
    from tinybot_migration_tests.helpers.pools import pool_held_by_a_live_run

    @asset(pool="toy_pool")
    def pooled() -> None:
        return None

    lines: list[str] = []
    gave_up: list[str] = []
    with pool_held_by_a_live_run() as (instance, holder):
        run_id = str(uuid.uuid4())
        watcher = BlockedStepWatcher(instance, run_id, ["toy_pool"], 3, lines.append, gave_up.append)
        watcher.start()
        job = Definitions(assets=[pooled], jobs=[define_asset_job("toy", [pooled])]).resolve_job_def("toy")
        blocked = threading.Thread(target=lambda: job.execute_in_process(instance=instance, run_id=run_id))
        blocked.start()
        deadline = time.monotonic() + 30
        while not gave_up and time.monotonic() < deadline:
            time.sleep(0.2)
        instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)  # let the blocked run end
        blocked.join(timeout=60)
        watcher.stop()
    assert any("waits for pool toy_pool" in line and holder.run_id in line for line in lines), lines
    assert len(gave_up) == 1 and "waited 3s for pool toy_pool" in gave_up[0] and holder.run_id in gave_up[0]


def test_the_instance_records_a_range_runs_events_in_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYBOT_HOME", str(tmp_path))
    monkeypatch.setenv(STORAGE_URL_ENV, "postgresql+psycopg2://unused@localhost/dagster")  # no server
    # prepare_instance writes os.environ itself: set each variable through monkeypatch first, so
    # that it is put back as it was (a delenv of an unset variable would record nothing).
    for name in (PLANNED_EVENTS_ENV, EVENT_BATCH_ENV, "DAGSTER_HOME"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    prepare_instance()
    assert os.environ[PLANNED_EVENTS_ENV] == "true"  # and `dev`'s webserver and daemon inherit it
    assert os.environ[EVENT_BATCH_ENV] == "1000"
    monkeypatch.setenv(PLANNED_EVENTS_ENV, "false")
    prepare_instance()
    assert os.environ[PLANNED_EVENTS_ENV] == "false"  # an operator's own setting stands
