"""A whole sync as the CLI and the db_sync job run it: the precheck, the checks after it, the
cache that arrives with the memories, masked URLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from dagster import instance_for_test

from tinybot_migration.defs.sync.job import SyncDatabasesResource, db_sync
from tinybot_migration.lib.memories.rebuild import rebuild_memories
from tinybot_migration.lib.memories.vector_index import ensure_vector_index, index_state
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration.lib.sync.engine import SyncOptions
from tinybot_migration.lib.sync.precheck import SyncPrecheckError
from tinybot_migration.lib.sync.run import run_sync
from tinybot_migration_tests.helpers.conversations import Conversations
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for
from tinybot_migration_tests.helpers.sync_digests import digests

SECRET = "sync-s3cret"


def with_password(url: str) -> str:
    """The embedded server trusts local sockets, so a password is accepted and ignored: what
    matters is that it never shows."""
    assert url.startswith("postgresql://postgres:@"), url
    return url.replace("postgresql://postgres:@", f"postgresql://postgres:{SECRET}@", 1)


@pytest.fixture
def dev_with_memories(make_database):
    url = make_database("run_dev")
    with psycopg.connect(url, autocommit=True) as conn, OpenAITestServer() as server:
        apply_new_schema(conn)
        talk = Conversations(conn)
        talk.exchanges("alpha", 5)
        talk.exchanges("beta", 4)
        rebuild_memories(conn, client_for(server), ["alpha", "beta"])
    return url


@pytest.fixture
def empty_prod(make_database):
    url = make_database("run_prod")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
    return url


def environment(dev: str, prod: str) -> dict[str, str]:
    return {"DEV_DATABASE_URL": with_password(dev), "PROD_DATABASE_URL": with_password(prod)}


def test_the_cache_arrives_so_a_rebuild_on_the_target_pays_for_nothing(dev_with_memories, empty_prod):
    report = run_sync("dev", "prod", SyncOptions(), environment=environment(dev_with_memories, empty_prod))
    assert report.ok, [(c.name, c.description) for c in report.checks]
    tables = {t.table: t for t in report.tables}
    assert tables["memories"].inserted == 9 and tables["embedding_cache"].inserted == 9
    assert tables["conversation_history"].inserted == 18
    with psycopg.connect(empty_prod, autocommit=True) as conn, OpenAITestServer() as server:
        again = rebuild_memories(conn, client_for(server), ["alpha", "beta"])
        assert again.memories_written == 0 and server.requests == []


def test_a_mismatched_schema_stops_before_anything_is_written(dev_with_memories, empty_prod):
    with psycopg.connect(empty_prod, autocommit=True) as conn:
        conn.execute("INSERT INTO tinybot_migration.schema_steps (version, description) VALUES (99, 'later')")
    with pytest.raises(SyncPrecheckError, match="schema versions differ") as raised:
        run_sync("dev", "prod", SyncOptions(), environment=environment(dev_with_memories, empty_prod))
    assert SECRET not in str(raised.value) and "***" in str(raised.value)
    with psycopg.connect(empty_prod) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_the_db_sync_job_runs_with_its_run_config(dev_with_memories, empty_prod):
    resources = {"sync_databases": SyncDatabasesResource(dev_url=dev_with_memories, prod_url=empty_prod)}
    with instance_for_test() as instance:
        dry = db_sync.execute_in_process(
            run_config={"ops": {"sync_databases": {"config": {"dry_run": True}}}},
            resources=resources,
            instance=instance,
        )
        assert dry.success
        [dry_event] = [e for e in dry.all_events if e.event_type_value == "STEP_OUTPUT"]
        assert dry_event.event_specific_data.metadata["rows_inserted"].value > 0
        with psycopg.connect(empty_prod) as conn:
            assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 0  # dry: nothing written
        result = db_sync.execute_in_process(resources=resources, instance=instance)
        assert result.success
    with psycopg.connect(empty_prod) as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 9


@pytest.mark.slow
def test_the_cli_dry_run_then_the_sync_masks_the_passwords(dev_with_memories, empty_prod, tmp_path):
    cli = Path(sys.executable).parent / "tinybot-migration"
    env = {**os.environ, **environment(dev_with_memories, empty_prod), "COLUMNS": "160"}

    def sync(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(cli), "sync", "--from", "dev", "--to", "prod", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    dry = sync("--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run: nothing written" in dry.stdout and "memories" in dry.stdout
    with psycopg.connect(empty_prod) as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
    done = sync()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sync verified" in done.stdout and "ok sides_agree_where_nothing_conflicted" in done.stdout
    for result in (dry, done):
        assert SECRET not in result.stdout + result.stderr
    refused = subprocess.run(
        [str(cli), "sync", "--from", "dev", "--to", "prod"],
        env={k: v for k, v in env.items() if k != "PROD_DATABASE_URL"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "PROD_DATABASE_URL is not set" in refused.stdout


def dev_with_random_memories(make_database, name: str, count: int) -> str:
    """A DEV holding `count` memories of random 1536-d vectors, made in SQL."""
    url = make_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        talk = Conversations(conn)
        talk.exchanges("alpha", 3)
        conn.execute(
            "INSERT INTO memories (id, persona_id, personality_id, content, embedding, created_at)"
            " SELECT gen_random_uuid(), %s, %s, 'memory ' || i,"
            " (SELECT array_agg(random())::vector(1536) FROM generate_series(1, 1536) WHERE i > 0), now()"
            " FROM generate_series(1, %s) i",
            (talk.persona_id, talk.personality("alpha"), count),
        )
    return url


def test_a_bulk_sync_of_memories_drops_the_vector_index_and_builds_it_again(make_database, empty_prod):
    dev = dev_with_random_memories(make_database, "run_dev_bulk", 1000)
    with psycopg.connect(empty_prod, autocommit=True) as conn:
        ensure_vector_index(conn)
    report = run_sync("dev", "prod", SyncOptions(), environment=environment(dev, empty_prod))
    assert report.ok and report.index is not None and report.index.rows == 1000
    with psycopg.connect(empty_prod) as conn:
        state = index_state(conn)
    assert state.exists and state.valid


def memory_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM memories").fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_the_cli_stopped_in_the_middle_of_a_sync_and_run_again_ends_as_an_uninterrupted_one(
    make_database, empty_prod, tmp_path, signum
):
    dev = dev_with_random_memories(make_database, f"run_dev_stop_{signum}", 3000)
    reference = make_database("run_reference")
    with psycopg.connect(reference, autocommit=True) as conn:
        apply_new_schema(conn)
    assert run_sync("dev", "prod", SyncOptions(), environment=environment(dev, reference)).ok
    with psycopg.connect(empty_prod, autocommit=True) as conn:
        ensure_vector_index(conn)  # PROD has its index: the sync drops it for the bulk load
    cli = Path(sys.executable).parent / "tinybot-migration"
    env = {**os.environ, **environment(dev, empty_prod), "COLUMNS": "160"}
    # About 8 memories a transaction: hundreds of chunks, so the kill lands among them.
    command = [str(cli), "sync", "--from", "dev", "--to", "prod", "--batch-mb", "0.05"]
    said = tmp_path / "stopped.txt"
    with said.open("w") as output:
        doomed = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while memory_count(empty_prod) == 0 and doomed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        doomed.send_signal(signum)
        doomed.wait(timeout=30)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    landed = memory_count(empty_prod)
    expected_code = -signal.SIGKILL if signum == signal.SIGKILL else 130
    assert doomed.returncode == expected_code and 0 < landed < 3000, (
        doomed.returncode,
        landed,
        said.read_text(),
    )
    if signum == signal.SIGINT:  # stopped at a clean point, saying so
        text = " ".join(said.read_text().split())
        assert "interrupted" in text and "run the same `tinybot-migration sync` again" in text, text
        assert "Traceback" not in text
    with psycopg.connect(empty_prod) as conn:
        assert not index_state(conn).exists  # stopped between the drop and the rebuild

    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "sync verified" in again.stdout and "vector index: built" in again.stdout, again.stdout
    with psycopg.connect(empty_prod) as prod_conn, psycopg.connect(reference) as reference_conn:
        assert digests(prod_conn) == digests(reference_conn)
        state = index_state(prod_conn)
    assert state.exists and state.valid


def test_the_terminal_display_draws_a_bar_per_table(dev_with_memories, empty_prod):
    from io import StringIO

    from rich.console import Console

    from tinybot_migration.cli.sync import RichSyncProgress

    screen = StringIO()
    terminal = Console(file=screen, force_terminal=True, width=140)
    with RichSyncProgress(terminal) as progress:
        report = run_sync(
            "dev",
            "prod",
            SyncOptions(),
            environment=environment(dev_with_memories, empty_prod),
            progress=progress,
        )
    assert report.ok
    drawn = screen.getvalue()
    assert "memories" in drawn and "9 inserted, 0 updated" in drawn and "conversation_history" in drawn


def test_two_syncs_into_one_target_take_turns_and_both_succeed(make_database, empty_prod):
    """Side by side they deadlocked on the rows and the index and printed negative counts; now the
    second waits for the first, says so, and finds nothing left to do."""
    dev = dev_with_random_memories(make_database, "run_dev_twice", 1000)
    env = environment(dev, empty_prod)
    reports: dict[str, object] = {}
    said: dict[str, list[str]] = {"first": [], "second": []}

    def sync(name: str) -> None:
        reports[name] = run_sync("dev", "prod", SyncOptions(), log=said[name].append, environment=env)

    threads = [threading.Thread(target=sync, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=240)
    assert set(reports) == {"first", "second"} and all(r.ok for r in reports.values())
    waited = [
        name
        for name, lines in said.items()
        if any("another sync into prod is running" in str(s) for s in lines)
    ]
    assert waited == ["second"], said
    counts = [(t.inserted, t.updated) for r in reports.values() for t in r.tables]
    assert all(n >= 0 for pair in counts for n in pair)
    memories = {name: {t.table: t for t in r.tables}["memories"].inserted for name, r in reports.items()}
    assert memories == {"first": 1000, "second": 0}
    assert memory_count(empty_prod) == 1000
    with psycopg.connect(empty_prod) as conn:
        assert index_state(conn).valid


def test_the_rejects_and_the_coverage_marks_travel_so_the_target_shows_them(dev_with_memories, empty_prod):
    with psycopg.connect(dev_with_memories, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tinybot_migration.shapes_rejects (source_file, record_index, personality_slug, reason,"
            " raw_record) VALUES ('alpha/alpha_memories.json', -1, 'alpha', 'not JSON', '{\"file_size\": 3}')"
        )
        conn.execute(
            "INSERT INTO tinybot_migration.relational_rejects (table_name, row_key, reason, raw_row)"
            " VALUES ('conversation_history', 'x', 'persona_id y is not in personas', '{\"id\": \"x\"}')"
        )
        coverage = conn.execute("SELECT count(*) FROM tinybot_migration.memory_coverage").fetchone()[0]
    assert coverage == 2  # the rebuild marked both personalities
    report = run_sync("dev", "prod", SyncOptions(), environment=environment(dev_with_memories, empty_prod))
    assert report.ok, [(c.name, c.description) for c in report.checks]
    with psycopg.connect(empty_prod) as conn:
        for table, rows in (("shapes_rejects", 1), ("relational_rejects", 1), ("memory_coverage", 2)):
            assert conn.execute(f"SELECT count(*) FROM tinybot_migration.{table}").fetchone() == (rows,), (
                table
            )
    again = run_sync("dev", "prod", SyncOptions(), environment=environment(dev_with_memories, empty_prod))
    assert all(t.inserted == t.updated == 0 for t in again.tables)  # a second sync changes nothing
