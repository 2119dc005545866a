"""The Dagster instance can be prepared by several processes at once (PostgreSQL storage)."""

import threading

from dagster import instance_for_test

from tinybot_migration.runtime.dagster_instance import initialize_pool_limits

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
