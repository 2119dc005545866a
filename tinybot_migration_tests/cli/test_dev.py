"""`tinybot-migration dev` as a service manager runs it: by its full path, with no virtualenv on
PATH, stopped with SIGTERM. The webserver and daemon must stop with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SERVE_TIMEOUT_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        # fields: state, ppid, pgrp, …; a zombie has already exited
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_until_serving(port: int, parent: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert parent.poll() is None, parent.stdout.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"dagster dev did not serve on port {port} within {SERVE_TIMEOUT_SECONDS}s")


def test_sigterm_stops_the_webserver_and_daemon_and_no_virtualenv_is_needed(tmp_path):
    cli = Path(sys.executable).parent / "tinybot-migration"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "OLD_DATABASE_URL", "DATABASE_URL", "DAGSTER_HOME", "DAGSTER_STORAGE_URL")
    }
    env.update(PATH="/usr/bin:/bin", TINYBOT_HOME=str(tmp_path / "home"))
    parent = subprocess.Popen(
        [str(cli), "dev", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(port, parent)
        [dagster_dev] = children_of(parent.pid)
        group = os.getpgid(dagster_dev)
        assert group != os.getpgid(parent.pid)  # its own group, so the signal reaches all of it
        assert len(processes_in_group(group)) >= 3  # dagster dev, the webserver, the daemon

        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
        deadline = time.monotonic() + 10
        while processes_in_group(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_in_group(group) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
