"""`tinybot-migration dev` as a service manager runs it: by its full path, with no virtualenv on
PATH, stopped with SIGTERM. The webserver and daemon must stop with it."""

from __future__ import annotations

import os

import psutil
import pytest

from tinybot_migration_tests.helpers.dagster_ui import children_of, processes_in_group, start_dev
from tinybot_migration_tests.helpers.environment import fresh_environment

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_webserver_and_daemon_and_no_virtualenv_is_needed(tmp_path):
    home = tmp_path / "home"
    ui = start_dev(home, tmp_path, fresh_environment(home))
    try:
        [dagster_dev] = children_of(ui.parent.pid)
        assert ui.process_group != os.getpgid(ui.parent.pid)  # its own group, so the signal reaches all of it
        assert ui.process_group == os.getpgid(dagster_dev)
        assert len(processes_in_group(ui.process_group)) >= 3  # dagster dev, the webserver, the daemon
        # Nothing noisy from the interpreters it starts (a bad warning filter prints in each one).
        assert "Invalid -W option" not in (tmp_path / "dev.log").read_text()
        started = psutil.Process(ui.parent.pid).children(recursive=True)
    finally:
        left = ui.stop(grace_seconds=0)  # gone when it exits, not seconds later
    assert ui.parent.returncode is not None
    assert left == []
    assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
