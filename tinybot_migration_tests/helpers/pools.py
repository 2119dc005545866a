"""A Dagster instance whose one pool slot another run holds: for the pool-wait tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, instance_for_test
from dagster._core.test_utils import create_run_for_test

from tinybot_migration.runtime.dagster_instance import initialize_pool_limits
from tinybot_migration.runtime.run_owners import OWNER_TAG, owner_tag

POOL = "toy_pool"


@contextmanager
def pool_held_by_a_live_run() -> Iterator[tuple[DagsterInstance, DagsterRun]]:
    """An instance with one slot per pool (op granularity) and a STARTED run of this process
    holding POOL's; yields the instance and that run."""
    overrides = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}
    with instance_for_test(overrides=overrides) as instance:
        initialize_pool_limits(instance, [POOL])
        holder = create_run_for_test(
            instance, job_name="holder", status=DagsterRunStatus.STARTED, tags={OWNER_TAG: owner_tag()}
        )
        instance.event_log_storage.claim_concurrency_slot(POOL, holder.run_id, "its_step")
        yield instance, holder
