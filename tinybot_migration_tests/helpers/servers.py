"""Stopping the embedded servers a test started, so a long suite does not pile up postmasters and
gigabytes of data directories (a CI machine's disk may be small: every test home holds a server,
demo data, Dagster's storage and up to 1 GB of WAL)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tinybot_migration.lib import embedded_postgres

STOP_WAIT_SECONDS = 15
# Where a test keeps a home: the tmp dir itself, `home/`, or one level further down.
PGDATA_PATTERNS = ("pgdata", "*/pgdata", "*/*/pgdata")


def stop_servers_under(root: Path) -> None:
    """Release this process's handles on every embedded server under `root`, then stop any of them
    still running: a CLI killed with -9 leaves its pid among the handles, and the server would
    otherwise wait for it forever."""
    root = root.resolve()
    for pgdata in [p for p in list(embedded_postgres._servers) if p.resolve().is_relative_to(root)]:
        server = embedded_postgres._servers.pop(pgdata)
        with contextlib.suppress(Exception):
            server.cleanup()
    for pattern in PGDATA_PATTERNS:
        for pgdata in root.glob(pattern):
            _stop_postmaster(pgdata)


def _stop_postmaster(pgdata: Path) -> None:
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the test is over, nothing needs to be kept
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid in `postmaster.pid`, if that process is still this directory's postmaster (a file
    left by a killed server may name a pid the system has since given to another process)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    is_ours = command[0].endswith(b"/postgres") and str(pgdata.resolve()).encode() in command
    return pid if is_ours else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A stopped postmaster whose parent has not reaped it yet is a zombie: gone for our purpose.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return False
