"""The run manager's own parts (quick): who owns a run (psutil, any OS), and a step that waits too
long for a pool ending its run through Dagster, with no process exit."""

import os
import socket
import subprocess
import sys
import time

import pytest
from dagster import DagsterRunStatus, Definitions, MaterializeResult, RunsFilter, asset

from tinybot_migration.defs.stages import build_migration_jobs
from tinybot_migration.runtime import run_owners, runner
from tinybot_migration.runtime.run_owners import owner_is_gone, owner_tag
from tinybot_migration_tests.helpers.pools import pool_held_by_a_live_run


def test_a_run_owner_is_gone_only_when_its_process_surely_is():
    assert not owner_is_gone(owner_tag())  # this process
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert owner_is_gone(f"{host}:{child.pid}:123.45")  # exited
    assert owner_is_gone(f"{host}:{os.getpid()}:123.45")  # the pid now belongs to another start
    assert not owner_is_gone(f"elsewhere:{child.pid}:123.45")  # another machine's: cannot tell
    assert not owner_is_gone("not a tag")


@pytest.fixture
def pooled_project():
    @asset(pool="toy_pool")
    def pooled() -> MaterializeResult:
        return MaterializeResult(metadata={"dagster/row_count": 1})

    return Definitions(assets=[pooled], jobs=build_migration_jobs([pooled])), [pooled]


def test_a_step_waiting_too_long_for_a_pool_fails_its_run_and_the_process_goes_on(
    pooled_project, monkeypatch
):
    """Another run takes the slot after the stage's own wait: the step waits inside the run, the
    watcher gives up after the bound, Dagster fails the run and frees its slots, and run_migration
    returns the reason (it used to end the process)."""
    defs, assets = pooled_project
    monkeypatch.setattr(runner, "wait_for_pools", lambda *args: None)  # the slot went in between
    monkeypatch.setattr(run_owners, "POOL_POLL_SECONDS", 0.2)
    said: list = []
    with pool_held_by_a_live_run() as (instance, holder):
        started = time.monotonic()
        report = runner.run_migration(
            defs=defs, assets=assets, instance=instance, pool_wait_seconds=1, log=said.append
        )
        waited = time.monotonic() - started
        ours = instance.get_runs(filters=RunsFilter(job_name="migration_stage_1_unpartitioned"))
        info = instance.event_log_storage.get_concurrency_info("toy_pool")
    assert not report.success and not report.interrupted and waited < 20
    assert "waited 1s for pool toy_pool" in report.failure and holder.run_id in report.failure
    assert any("waits for pool toy_pool" in str(line) for line in said)
    assert len(ours) == 1 and ours[0].status == DagsterRunStatus.FAILURE
    assert not [step for step in info.pending_steps if step.run_id == ours[0].run_id]
    assert info.active_run_ids == {holder.run_id}  # only the holder's slot is taken
