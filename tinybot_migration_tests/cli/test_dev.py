"""`tinybot-migration dev` as a service manager runs it: by its full path, with no virtualenv on
PATH, stopped with SIGTERM. The webserver and daemon must stop with it."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from tinybot_migration_tests.helpers.dagster_ui import children_of, processes_in_group, start_dev
from tinybot_migration_tests.helpers.environment import fresh_environment

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "loaded"])
def test_sigterm_stops_the_webserver_and_daemon_and_no_virtualenv_is_needed(tmp_path, loaded):
    """Also with every core busy (two spinning processes on this 2-core machine) while it stops:
    slow children must still be gone before it exits."""
    home = tmp_path / "home"
    ui = start_dev(home, tmp_path, fresh_environment(home))
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range((os.cpu_count() or 2) if loaded else 0)
    ]
    try:
        [dagster_dev] = children_of(ui.parent.pid)
        assert ui.process_group != os.getpgid(ui.parent.pid)  # its own group, so the signal reaches all of it
        assert ui.process_group == os.getpgid(dagster_dev)
        assert len(processes_in_group(ui.process_group)) >= 3  # dagster dev, the webserver, the daemon
        # Nothing noisy from the interpreters it starts (a bad warning filter prints in each one).
        assert "Invalid -W option" not in (tmp_path / "dev.log").read_text()
        started = psutil.Process(ui.parent.pid).children(recursive=True)
    finally:
        try:
            left = ui.stop(grace_seconds=0)  # gone when it exits, not seconds later
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    assert ui.parent.returncode is not None
    assert left == []
    assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
