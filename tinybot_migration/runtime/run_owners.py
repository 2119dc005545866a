"""Runs the CLI executes in process record the process that owns them, so a run whose process was
killed or crashed can be told from one still working: it is marked failed and its pool slots are
freed before the next `tinybot-migration run` starts. Otherwise it would stay STARTED and hold its
slots for good (Dagster frees them only when the run ends, or through a daemon the CLI has not).

Before each stage, pools with no free slot are waited for, saying which runs hold them, up to a
bound; then the migration stops with a message instead of hanging. A step that still ends up
waiting inside a run (another run took the last slot in between) is watched the same way.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._utils.interrupts import check_captured_interrupt

from tinybot_migration.lib.progress import Notice, Progress

OWNER_TAG = "tinybot/owner"
LAUNCHED_BY_TAG = "tinybot/launched_by"
LAUNCHED_BY_CLI = "tinybot-migration run"
_UNFINISHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
POOL_POLL_SECONDS = 2.0


class PoolWaitTimeout(RuntimeError):
    """A pool had no free slot for longer than the bounded wait."""


def _process_start(pid: int) -> str | None:
    """When the process started (a reused pid does not share it), or None when there is none."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def owner_tag() -> str:
    """host:pid:start of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or '-'}"


def owner_is_gone(tag: str) -> bool:
    """True only when the owner surely no longer runs: on this host, and its pid is dead or reused."""
    host, _, rest = tag.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's process, or a tag of another form: cannot tell
    current = _process_start(int(pid_text))
    return current is None or (start not in ("", "-") and current != start)


def interrupt_main_thread() -> None:
    """Raise KeyboardInterrupt in the main thread at its next bytecode. A signal cannot do it while
    an in-process run executes: Dagster turns SIGINT and SIGTERM into a flag that its in-process
    executor never reads while a step waits for a pool slot. Dagster then fails the run as
    interrupted and frees its slots, as it does on Ctrl-C inside a step (CPython's async exception)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(threading.main_thread().ident), ctypes.py_object(KeyboardInterrupt)
    )


@dataclass(frozen=True)
class AbandonedRun:
    run_id: str
    owner: str


def fail_abandoned_runs(instance: DagsterInstance, log: Progress) -> list[AbandonedRun]:
    """Mark failed every unfinished CLI run whose owning process is gone, and free its slots."""
    records = instance.get_run_records(
        filters=RunsFilter(statuses=_UNFINISHED, tags={LAUNCHED_BY_TAG: LAUNCHED_BY_CLI})
    )
    abandoned = []
    for record in records:
        run = record.dagster_run
        owner = run.tags.get(OWNER_TAG)
        if owner is None or not owner_is_gone(owner):
            continue
        instance.report_run_failed(
            run, message=f"the process that ran it ({owner}) is gone: killed or crashed; marked failed"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        abandoned.append(AbandonedRun(run.run_id, owner))
        log(
            f"run {run.run_id} ({run.job_name}) was left STARTED by a process that is gone: marked failed, slots freed"
        )
    return abandoned


def wait_for_pools(
    instance: DagsterInstance, pools: Iterable[str], timeout_seconds: float, log: Progress
) -> None:
    """Wait until every pool has a free slot, saying who holds them; raise after `timeout_seconds`."""
    deadline = time.monotonic() + timeout_seconds
    announced: set[str] = set()
    for pool in sorted(set(pools)):
        while True:
            info = instance.event_log_storage.get_concurrency_info(pool)
            if info.slot_count == 0 or info.active_slot_count < info.slot_count:
                break
            holders = _describe_runs(instance, info.active_run_ids)
            if time.monotonic() >= deadline:
                raise PoolWaitTimeout(
                    f"pool {pool} has had no free slot for {timeout_seconds:g}s: its {info.slot_count} slot(s) are "
                    f"held by {holders}. If those runs are dead, terminate them (Dagster UI → Runs → Terminate) "
                    f"or free the slots (`dagster instance concurrency set {pool} N`); then run again"
                )
            if pool not in announced:
                log(Notice(f"waiting for pool {pool}: its {info.slot_count} slot(s) are held by {holders}"))
                announced.add(pool)
            time.sleep(POOL_POLL_SECONDS)


def _describe_runs(instance: DagsterInstance, run_ids: Iterable[str]) -> str:
    described = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        status = run.status.value if run is not None else "unknown"
        owner = run.tags.get(OWNER_TAG, "owner not recorded") if run is not None else "no such run"
        described.append(f"run {run_id} ({status}, {owner})")
    return ", ".join(described) or "no run"


class BlockedStepWatcher(threading.Thread):
    """Watches a run executing in process: when one of its steps waits for a pool, it says so at the
    default log level (naming the runs holding the pool), frees the slots of runs whose process is
    gone, and after `timeout_seconds` of waiting calls `give_up` with a message. Ctrl-C (or SIGTERM)
    while a step waits is passed on the same way (`interrupted`): Dagster's in-process executor does
    not look at interrupts while it waits for a slot."""

    def __init__(
        self,
        instance: DagsterInstance,
        run_id: str,
        pools: Iterable[str],
        timeout_seconds: float,
        log: Progress,
        give_up: Callable[[str], None],
        interrupted: Callable[[], None] = interrupt_main_thread,
    ) -> None:
        super().__init__(name=f"pool-watch-{run_id[:8]}", daemon=True)
        self._instance, self._run_id, self._pools = instance, run_id, sorted(set(pools))
        self._timeout, self._log, self._give_up, self._interrupted = (
            timeout_seconds,
            log,
            give_up,
            interrupted,
        )
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=POOL_POLL_SECONDS * 2)

    def run(self) -> None:
        waiting_since: dict[tuple[str, str], float] = {}
        while not self._done.wait(POOL_POLL_SECONDS):
            try:
                if self._watch_once(waiting_since):
                    return
            except Exception:  # noqa: BLE001 - storage unreachable: the run itself reports that
                continue

    def _watch_once(self, waiting_since: dict[tuple[str, str], float]) -> bool:
        """One look at the pools; True once it has given up."""
        for pool in self._pools:
            info = self._instance.event_log_storage.get_concurrency_info(pool)
            for step in info.pending_steps:
                if step.run_id != self._run_id or step.assigned_timestamp is not None:
                    continue
                key = (pool, step.step_key)
                if check_captured_interrupt():  # Ctrl-C or SIGTERM while waiting
                    self._interrupted()
                    return True
                if key not in waiting_since:
                    waiting_since[key] = time.monotonic()
                    holders = _describe_runs(self._instance, info.active_run_ids)
                    self._log(
                        f"step {step.step_key} waits for pool {pool}: its slot(s) are held by {holders}"
                    )
                    fail_abandoned_runs(self._instance, self._log)
                elif time.monotonic() - waiting_since[key] >= self._timeout:
                    holders = _describe_runs(self._instance, info.active_run_ids)
                    self._give_up(
                        f"step {step.step_key} of run {self._run_id} waited {self._timeout:g}s for pool {pool}, "
                        f"held by {holders}: giving up. Run `tinybot-migration run` again once they are done"
                    )
                    return True
        return False
