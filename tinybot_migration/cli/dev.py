"""`tinybot-migration dev`: the Dagster UI and daemon on the project's persistent instance.

`dagster dev` is started from this interpreter's own environment (so a bare
`/path/to/venv/bin/tinybot-migration dev`, as a systemd unit or supervisor runs it, needs no
activated virtualenv) in a process group of its own, and SIGINT/SIGTERM are forwarded to that whole
group; this process exits only after every process it started has (psutil finds them, in the group
or not), so the webserver and daemon never outlive it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import click
import psutil

from tinybot_migration.cli.summary import console
from tinybot_migration.lib.settings import OLD_DATABASE

# How long the webserver and daemon get to stop after the signal before they are killed.
STOP_GRACE_SECONDS = 20
DESCENDANT_POLL_SECONDS = 1.0  # how often the processes it started are noted while it runs
SUPERSEDED_NOTICE_FILTER = "ignore:Function `dev_command` is superseded"


def dagster_dev_command(extra_args: list[str]) -> list[str]:
    # `dagster dev -m` works from any folder (`dg dev` needs the project's pyproject.toml).
    return [sys.executable, "-m", "dagster", "dev", "-m", "tinybot_migration.definitions", *extra_args]


@click.command(
    "dev",
    help="serve the Dagster UI on the project's persistent instance (other options go to `dagster dev`)",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev_command(dagster_args: tuple[str, ...]) -> int:
    """Start the embedded server, prepare the instance, and serve the Dagster UI until stopped."""
    from dagster import DagsterInstance

    from tinybot_migration.definitions import ALL_ASSETS
    from tinybot_migration.defs.stages import declared_pools
    from tinybot_migration.runtime.dagster_instance import initialize_pool_limits, prepare_instance

    home = prepare_instance()
    with DagsterInstance.get() as instance:
        # Before any run can race another to set the pools up.
        initialize_pool_limits(instance, declared_pools(ALL_ASSETS))
        _offer_partitions_before_first_migration(instance)
    console.print(f"Dagster instance: {home}")
    env = dict(os.environ)
    # Its "superseded" notice is noise here. By message: a category named by module path makes every
    # child interpreter print "Invalid -W option ignored" (the module is not importable that early).
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), SUPERSEDED_NOTICE_FILTER]))
    process = subprocess.Popen(dagster_dev_command(list(dagster_args)), env=env, start_new_session=True)
    return serve_until_stopped(process)


def register_partitions_from_old_database(instance) -> int:
    """Before the first migration, the old DB's personality slugs as partitions (see
    `register_partitions_before_first_migration`); how many were added."""
    from tinybot_migration.defs.partitions import register_partitions_before_first_migration
    from tinybot_migration.defs.resources import OldDatabaseResource

    old_database = OldDatabaseResource(url=OLD_DATABASE.configured_url())
    return register_partitions_before_first_migration(instance, old_database.connect)


def _offer_partitions_before_first_migration(instance) -> None:
    """So that "Materialize all" on a fresh instance offers every personality from the first page
    load (the sensor `personality_partitions_before_first_migration` does the same once running)."""
    from tinybot_migration.lib.database import DatabaseConnectionError

    try:
        added = register_partitions_from_old_database(instance)
    except DatabaseConnectionError as exc:
        console.print(f"[yellow]{exc}; the memory partitions are registered once it answers[/]")
        return
    if added:
        console.print(f"{added:,} personality partitions registered from the old database (first migration)")


def serve_until_stopped(process: subprocess.Popen) -> int:
    """Wait for `process`; on SIGINT or SIGTERM, pass the signal to its whole group, and return only
    once it and every process it started have exited (killed after STOP_GRACE_SECONDS)."""
    received: list[int] = []
    descendants: dict[int, psutil.Process] = {}

    def forward(signum: int, _frame) -> None:
        received.append(signum)
        _remember_descendants(process, descendants)
        _signal_group(process, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = _wait_remembering(process, descendants, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(process, descendants)
    return 128 + received[0] if received and code < 0 else code


def _wait_remembering(
    process: subprocess.Popen, descendants: dict[int, psutil.Process], received: list[int]
) -> int:
    """The leader's exit code, noting its descendants as they come (an orphan cannot be found from
    it once it is gone), and killing the group when it outstays the grace period after a signal."""
    signalled_at: float | None = None
    while True:
        _remember_descendants(process, descendants)
        if received and signalled_at is None:
            signalled_at = time.monotonic()
        try:
            return process.wait(timeout=DESCENDANT_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            if signalled_at is not None and time.monotonic() - signalled_at > STOP_GRACE_SECONDS:
                _signal_group(process, signal.SIGKILL)


def _remember_descendants(process: subprocess.Popen, descendants: dict[int, psutil.Process]) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(process.pid).children(recursive=True):
            descendants.setdefault(child.pid, child)


def _stop_all(process: subprocess.Popen, descendants: dict[int, psutil.Process]) -> None:
    """Whatever the leader left behind (in its group or not) gets the grace period, then SIGKILL,
    and is waited for: a service manager that sees this process exit may start the next one."""
    _signal_group(process, signal.SIGKILL)
    left = [p for p in descendants.values() if p.is_running()]
    _, alive = psutil.wait_procs(left, timeout=STOP_GRACE_SECONDS)
    for survivor in alive:
        with contextlib.suppress(psutil.Error):
            survivor.kill()
    psutil.wait_procs(alive, timeout=5)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
