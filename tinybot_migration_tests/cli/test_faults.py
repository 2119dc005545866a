"""The CLI under faults, as a careful user would meet them: a run killed with SIGKILL while it
holds a pool slot, a pool held by a live run, and the database stopped mid-run. Each runs the real
`tinybot-migration run` on an embedded server of its own, embedding through the local server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from tinybot_migration.lib.embedded_postgres import embedded_database_url, pgdata_dir
from tinybot_migration.runtime.run_owners import LAUNCHED_BY_CLI, LAUNCHED_BY_TAG, OWNER_TAG, owner_tag
from tinybot_migration_tests.helpers.environment import fresh_environment
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer
from tinybot_migration_tests.helpers.servers import stop_servers_under
from tinybot_migration_tests.helpers.verdict import (
    MIGRATION_CHECKS,
    PROVIDER_DEMO_WARNINGS,
    assert_all_checks_passed,
)

pytestmark = pytest.mark.slow

CLI = [str(Path(sys.executable).parent / "tinybot-migration")]
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def provider_server():
    with OpenAITestServer() as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory, provider_server):
    """A home with its own embedded server, demo data, and one complete migration."""
    home = tmp_path_factory.mktemp("faults")
    env = fault_env(home, provider_server)
    subprocess.run([*CLI, "demo-data"], env=env, check=True, capture_output=True, timeout=RUN_TIMEOUT)
    first = subprocess.run([*CLI, "run"], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert first.returncode == 0, first.stdout + first.stderr
    yield home
    stop_servers_under(home)
    shutil.rmtree(home, ignore_errors=True)


def fault_env(home: Path, server: OpenAITestServer) -> dict[str, str]:
    return fresh_environment(home, server, COLUMNS="160")


def run_to_end(home: Path, server: OpenAITestServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "run", *args], env=fault_env(home, server), capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def forget_memories(home: Path) -> None:
    """So the next run's memory step has work to do (and holds its slot while doing it)."""
    with psycopg.connect(embedded_database_url("tinybot_new", home), autocommit=True) as conn:
        conn.execute("TRUNCATE memories, tinybot_migration.embedding_cache")


# The test follows the run through Dagster's own lines, which a quiet CLI keeps in its log file.
DAGSTER_LINES = ("--log-level", "INFO")


def start_run(home: Path, server: OpenAITestServer, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "run", *args],
        env=fault_env(home, server),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_line(process: subprocess.Popen, needle: str) -> list[str]:
    seen = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never printed:\n{''.join(seen)[-3000:]}")


def instance_of(home: Path, monkeypatch) -> DagsterInstance:
    storage = embedded_database_url("dagster", home).replace("postgresql://", "postgresql+psycopg2://", 1)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("DAGSTER_STORAGE_URL", storage)
    return DagsterInstance.get()


def test_a_run_killed_while_holding_a_slot_does_not_block_the_next(home, provider_server, monkeypatch):
    with instance_of(home, monkeypatch) as instance:
        instance.event_log_storage.set_concurrency_slots("tinybot_embeddings", 1)
    forget_memories(home)
    provider_server.latency_seconds = 5
    try:
        killed = start_run(home, provider_server, *DAGSTER_LINES)
        wait_for_line(killed, "rebuilding memories")
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        provider_server.latency_seconds = 0
    with instance_of(home, monkeypatch) as instance:
        assert instance.event_log_storage.get_concurrency_info("tinybot_embeddings").active_slot_count == 1

    after = run_to_end(home, provider_server)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "was left STARTED by a process that is gone" in after.stdout and "marked failed" in after.stdout
    assert_all_checks_passed(after.stdout, MIGRATION_CHECKS, PROVIDER_DEMO_WARNINGS)


def test_a_pool_held_by_a_live_run_is_waited_for_then_given_up_on_clearly(home, provider_server, monkeypatch):
    with instance_of(home, monkeypatch) as instance:
        instance.event_log_storage.set_concurrency_slots("tinybot_embeddings", 1)
        holder = create_run_for_test(
            instance,
            job_name="held_elsewhere",
            run_id=str(uuid.uuid4()),
            status=DagsterRunStatus.STARTED,
            tags={LAUNCHED_BY_TAG: LAUNCHED_BY_CLI, OWNER_TAG: owner_tag()},  # this test process: alive
        )
        instance.event_log_storage.claim_concurrency_slot("tinybot_embeddings", holder.run_id, "some_step")
        try:
            started = time.monotonic()
            gave_up = run_to_end(home, provider_server, "--pool-wait-seconds", "4")
            waited = time.monotonic() - started
        finally:
            instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)
            instance.report_run_failed(holder, message="test over")
    output = gave_up.stdout
    assert gave_up.returncode == 1, output + gave_up.stderr
    assert "waiting for pool tinybot_embeddings" in output and holder.run_id in output
    assert "pool tinybot_embeddings has had no free slot for 4s" in output
    assert waited < RUN_TIMEOUT / 2


def test_the_database_stopped_mid_run_is_said_plainly_and_running_again_resumes(home, provider_server):
    forget_memories(home)
    provider_server.latency_seconds = 3
    try:
        stopped = start_run(home, provider_server, *DAGSTER_LINES)
        wait_for_line(stopped, "rebuilding memories")
        # An immediate shutdown (pg_ctl -m immediate) of the postmaster, as an operator or a crash would.
        postmaster = int((pgdata_dir(home) / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGQUIT)
        rest, _ = stopped.communicate(timeout=RUN_TIMEOUT)
    finally:
        provider_server.latency_seconds = 0
    said = " ".join(rest.split())  # rich wraps long lines
    assert stopped.returncode == 1, rest
    assert "the database went away during the run" in said, rest
    assert "Nothing committed is lost" in said and "run `tinybot-migration run` again to resume" in said
    assert "Traceback" not in rest and rest.count("Retrying failed database connection") == 0

    again = run_to_end(home, provider_server)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_all_checks_passed(again.stdout, MIGRATION_CHECKS, PROVIDER_DEMO_WARNINGS)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_a_paying_run_within_seconds_and_a_rerun_pays_nothing_twice(
    home, provider_server, signum
):
    """Ctrl-C (to the whole group, as a terminal sends it) or SIGTERM (a container stopping) two seconds
    into the memory stage: the step in flight ends, nothing more is requested, no Dagster retry."""
    forget_memories(home)
    provider_server.requests.clear()
    provider_server.latency_seconds = 0.5
    try:
        stopped = start_run(home, provider_server, *DAGSTER_LINES)
        wait_for_line(stopped, "rebuilding memories")
        time.sleep(2)
        os.killpg(stopped.pid, signum)
        signalled = time.monotonic()
        sent_before = len(provider_server.requests)
        rest, _ = stopped.communicate(timeout=RUN_TIMEOUT)
        seconds_to_stop = time.monotonic() - signalled
    finally:
        provider_server.latency_seconds = 0
    said = " ".join(rest.split())
    assert stopped.returncode == 130, rest
    assert seconds_to_stop < 15, (seconds_to_stop, rest)
    # Only requests already in flight (one per slot) may still arrive after the signal.
    assert len(provider_server.requests) - sent_before <= 4, rest
    assert "interrupted" in said and "run `tinybot-migration run` again to resume" in said, rest
    assert "STEP_UP_FOR_RETRY" not in rest and "Traceback" not in rest, rest

    again = run_to_end(home, provider_server)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_all_checks_passed(again.stdout, MIGRATION_CHECKS, PROVIDER_DEMO_WARNINGS)
    paid = [text for request in provider_server.requests for text in request]
    assert len(paid) == len(set(paid))  # what was paid before the signal was cached, not paid again


def test_a_truncated_export_file_and_a_record_without_text_never_cost_the_index(home, provider_server):
    """The export's defects are rejects and WARNs; the memories, the vector index (dropped for the bulk
    load) and the search checks all still run; fixing the file and running again imports it."""
    export = home / "shapes_export"
    truncated, emptied = sorted(export.glob("*/*_memories.json"))[:2]
    originals = {path: path.read_bytes() for path in (truncated, emptied)}
    records = json.loads(originals[emptied])
    del records[0]["result"]
    try:
        truncated.write_bytes(originals[truncated][: len(originals[truncated]) // 2])
        emptied.write_text(json.dumps(records))
        forget_memories(home)
        broken = run_to_end(home, provider_server)
        said = " ".join(broken.stdout.split())
        assert broken.returncode == 0, broken.stdout + broken.stderr
        unreadable = f"{truncated.parent.name}/{truncated.name}: not JSON"
        assert f"WARN shapes_export.every_file_parses: {unreadable}" in said, broken.stdout
        assert "1 unreadable file(s)" in said and "memory_vector_index" in said
        # Every index and search check ran (a busy machine may push the latency one to a WARN).
        assert re.search(r"memory_vector_index .* [45]/5 passed", broken.stdout), broken.stdout
        assert not re.search(
            r"^WARN memory_vector_index\.(?!search_latency_within_bound)", broken.stdout, re.M
        )
        with psycopg.connect(embedded_database_url("tinybot_new", home), autocommit=True) as conn:
            rejects = dict(
                conn.execute(
                    "SELECT record_index, reason FROM tinybot_migration.shapes_rejects WHERE source_file = %s",
                    (f"{truncated.parent.name}/{truncated.name}",),
                ).fetchall()
            )
            assert list(rejects) == [-1] and "not JSON" in rejects[-1]
            reason = conn.execute(
                "SELECT reason FROM tinybot_migration.shapes_rejects WHERE source_file = %s AND record_index = 0",
                (f"{emptied.parent.name}/{emptied.name}",),
            ).fetchone()
            assert reason == ("result is missing",)
            assert index_is_valid(conn)
    finally:
        for path, data in originals.items():
            path.write_bytes(data)
    fixed = run_to_end(home, provider_server)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert_all_checks_passed(fixed.stdout, MIGRATION_CHECKS, PROVIDER_DEMO_WARNINGS)
    assert "unreadable" not in fixed.stdout
    with psycopg.connect(embedded_database_url("tinybot_new", home), autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM tinybot_migration.shapes_rejects WHERE source_file = %s",
            (f"{truncated.parent.name}/{truncated.name}",),
        ).fetchone() == (0,)


def index_is_valid(conn) -> bool:
    return conn.execute(
        "SELECT coalesce(bool_and(i.indisvalid), false) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'idx_memories_embedding'"
    ).fetchone()[0]


def test_two_runs_at_once_both_succeed_and_pay_each_text_once(tmp_path, provider_server):
    """Side by side from the start: the index build deadlocked one of them before; now the memory
    writers, the index and its measurement take turns, and every text is paid for once."""
    home = tmp_path / "twice"
    env = fault_env(home, provider_server)
    subprocess.run([*CLI, "demo-data"], env=env, check=True, capture_output=True, timeout=RUN_TIMEOUT)
    provider_server.requests.clear()
    try:
        runs = []
        for _ in range(2):
            runs.append(
                subprocess.Popen(
                    [*CLI, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
            )
            time.sleep(1)
        outputs = [run.communicate(timeout=RUN_TIMEOUT * 2)[0] for run in runs]
    finally:
        stop_servers_under(home)
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
        assert_all_checks_passed(output, MIGRATION_CHECKS, PROVIDER_DEMO_WARNINGS)
        assert "Deadlock" not in output and "Traceback" not in output
    paid = [text for request in provider_server.requests for text in request]
    assert paid and len(paid) == len(set(paid))


def test_the_providers_retries_show_on_the_terminal_as_they_happen(home, provider_server):
    """Dagster's own lines go to the log file; a retry is something to see at once."""
    forget_memories(home)
    provider_server.script(429, {"Retry-After": "1"}, times=2)
    result = run_to_end(home, provider_server)
    assert result.returncode == 0, result.stdout + result.stderr
    retries = [line for line in result.stdout.splitlines() if ", retry " in line]
    assert len(retries) == 2, result.stdout
    assert all(
        re.search(r"^  rebuilt_memories: embedding batch \d+/\d+ .*HTTP 429, retry \d of 6 in 1\.0s", r)
        for r in retries
    )
    assert_all_checks_passed(result.stdout, MIGRATION_CHECKS, PROVIDER_DEMO_WARNINGS)
