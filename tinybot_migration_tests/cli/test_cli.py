"""The `tinybot-migration` console script, run as a user runs it (a subprocess, real databases)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tinybot_migration.lib.demo_data import generate_demo_data
from tinybot_migration.lib.embedded_postgres import embedded_database_url
from tinybot_migration.lib.memories.pairing import pair_messages
from tinybot_migration.lib.memories.rebuild import load_messages
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration_tests.helpers.verdict import (
    DEMO_WARNINGS,
    MIGRATION_CHECKS,
    assert_all_checks_passed,
)

pytestmark = pytest.mark.slow  # every test here starts the CLI or a Dagster CLI as a subprocess

CLI = shutil.which("tinybot-migration") or f"{sys.executable} -m tinybot_migration.cli"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    command = [*CLI.split(), *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def cli_env(home: Path, **overrides: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OLD_DATABASE_URL", "DATABASE_URL", "DAGSTER_HOME")
    }
    env.update(TINYBOT_HOME=str(home), DAGSTER_STORAGE_URL="", COLUMNS="160", **overrides)
    return env


@pytest.fixture(scope="module")
def cli_databases(tinybot_home, pg_server, tmp_path_factory):
    old_url = embedded_database_url("cli_old", tinybot_home)
    generate_demo_data(old_url, tmp_path_factory.mktemp("cli_export"), scale=1, seed=7)
    return old_url, embedded_database_url("cli_new", tinybot_home)


def test_run_migrates_and_a_failing_check_exits_non_zero(cli_databases, tinybot_home, tmp_path):
    old_url, new_url = cli_databases
    env = cli_env(tinybot_home, OLD_DATABASE_URL=old_url, DATABASE_URL=new_url)
    first = run_cli("run", "--log-level", "WARNING", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert_all_checks_passed(first.stdout, MIGRATION_CHECKS)
    assert "4,364" in first.stdout
    assert "shapes_memories: nothing to import (no export (SHAPES_EXPORT_DIR unset" in first.stdout

    with psycopg.connect(new_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users VALUES (gen_random_uuid(), '1', 'made by the bot', now(), now())")
    second = run_cli("run", "--log-level", "WARNING", env=env, cwd=tmp_path)
    assert second.returncode == 1
    assert "FAILED users.row_count_parity" in second.stdout
    assert "migration NOT verified" in second.stdout
    # The runs went into the persistent instance under TINYBOT_HOME.
    assert (tinybot_home / "dagster" / "dagster.yaml").exists()


def test_run_shows_progress_and_keeps_dagsters_lines_in_a_log_file(cli_databases, tinybot_home, tmp_path):
    old_url, _ = cli_databases
    new_url = embedded_database_url("cli_quiet", tinybot_home)
    result = run_cli(
        "run", env=cli_env(tinybot_home, OLD_DATABASE_URL=old_url, DATABASE_URL=new_url), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert " - INFO - " not in out and " - DEBUG - " not in out  # no Dagster line on the screen
    assert "migration_stage_1_unpartitioned: 15 asset(s)" in result.stdout
    # Each stage's end is said (the lines between are thinned out so a fast run stays short).
    assert re.search(r"^  15/15 done \(\w+, [\d,]+ rows\)$", result.stdout, re.M), result.stdout
    assert (
        "  3/3 done (qdrant_point_outcomes" in result.stdout and "  3/3 done (cutover_report" in result.stdout
    )
    assert out.count("(read-only) → ") == 1  # the masked URLs once per run, not per table
    [log_path] = re.findall(r"Dagster's log of this run: (\S+\.log)", result.stdout)
    log = Path(log_path).read_text()
    assert Path(log_path).parent == tinybot_home / "logs"
    assert "migration_stage_1_unpartitioned - " in log and "conversation_history: 4,364 read" in log


def test_a_password_never_appears_in_errors(tinybot_home, pg_server, tmp_path):
    socket_dir = pg_server.get_postmaster_info().socket_dir
    secret = "s3cret-Pa55word"
    env = cli_env(
        tinybot_home,
        OLD_DATABASE_URL=f"postgresql://postgres:{secret}@/no_such_database?host={socket_dir}",
        DATABASE_URL=f"postgresql://postgres:{secret}@/no_such_database?host={socket_dir}",
    )
    result = run_cli("run", env=env, cwd=tmp_path)
    assert result.returncode == 2  # found by the checks before the run: nothing started
    output = result.stdout + result.stderr
    assert "no_such_database" in output and "***" in output
    assert secret not in output


def leaks(secret_fragments: list[str], output: str, tinybot_home: Path) -> list[str]:
    """Where any fragment shows: the CLI's output, Dagster's event log, any file of the instance."""
    found = [f"output: {f}" for f in secret_fragments if f in output]
    with psycopg.connect(embedded_database_url("dagster", tinybot_home)) as conn:
        for fragment in secret_fragments:
            rows = conn.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s", (f"%{fragment}%",))
            found += [f"event_logs: {fragment}"] * rows.fetchone()[0]
    for path in (tinybot_home / "dagster").rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")
            found += [f"{path}: {f}" for f in secret_fragments if f in text]
    return found


def test_a_password_with_at_slash_colon_and_percent_never_shows(
    cli_databases, tinybot_home, pg_server, tmp_path
):
    socket_dir = pg_server.get_postmaster_info().socket_dir
    secret = "S3cr@t/Pw:d%9"
    fragments = ["S3cr", "t/Pw", "Pw:d", quote(secret, safe="")]
    encoded = f"postgresql://postgres:{quote(secret, safe='')}@/{{db}}?host={socket_dir}"
    embedded_database_url("cli_new_secret", tinybot_home)
    env = cli_env(
        tinybot_home,
        OLD_DATABASE_URL=encoded.format(db="cli_old"),
        DATABASE_URL=encoded.format(db="cli_new_secret"),
    )
    migrated = run_cli("run", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert_all_checks_passed(migrated.stdout, MIGRATION_CHECKS)
    assert leaks(fragments, migrated.stdout + migrated.stderr, tinybot_home) == []

    env["OLD_DATABASE_URL"] = f"postgresql://postgres:{secret}@/cli_old?host={socket_dir}"
    refused = run_cli("run", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "percent-encode" in refused.stdout and "%40" in refused.stdout
    assert leaks(fragments, refused.stdout + refused.stderr, tinybot_home) == []


def test_configuration_errors_fail_first_each_in_one_line_before_anything_is_written(tinybot_home, tmp_path):
    """The real provider without its key, an export folder that is not there, a new DB whose port
    nothing listens on: all said in the first seconds, naming the setting, nothing started."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        env = cli_env(
            tinybot_home,
            EMBEDDING_PROVIDER="openai",
            OPENAI_API_KEY="",
            SHAPES_EXPORT_DIR=str(tmp_path / "missing_export"),
            DATABASE_URL=f"postgresql://migrator:secret@127.0.0.1:{port}/tinybot",
        )
        started = time.monotonic()
        result = run_cli("run", env=env, cwd=tmp_path)
        seconds = time.monotonic() - started
    lines = [line for line in result.stdout.splitlines() if line.startswith("configuration: ")]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 3, result.stdout
    assert "EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY" in lines[0]
    assert f"SHAPES_EXPORT_DIR is set to {tmp_path / 'missing_export'}, which does not exist" in lines[1]
    assert "cannot connect to the new database at postgresql://migrator:***@127.0.0.1" in lines[2]
    assert "nothing accepts connections there" in lines[2] and "[DATABASE_URL]" in lines[2]
    assert "secret" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert (
        "nothing was started or written" in result.stdout and "asset" not in result.stdout
    )  # no summary table
    assert seconds < 60


def test_demo_data_refuses_a_configured_old_database(tinybot_home, tmp_path):
    env = cli_env(tinybot_home, OLD_DATABASE_URL="postgresql://someone@elsewhere/tinybot")
    result = run_cli("demo-data", env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "read-only" in result.stderr


def test_demo_from_scratch_prints_every_check_passing(tmp_path):
    """The README's first command, after installation: a fresh home, nothing configured."""
    home = tmp_path / "home"
    result = run_cli("demo", env=cli_env(home), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # The demo's export has unmapped senders on purpose: a WARN, not a failure.
    assert_all_checks_passed(result.stdout, MIGRATION_CHECKS, DEMO_WARNINGS)
    assert "WARN shapes_memories.senders_mapped_to_personas: 4 of 16 senders" in result.stdout
    assert (
        "shapes_memories: 9,364 shapes.inc records: 9,068 imported, 292 deleted, 2 duplicates, 2 rejected"
        in result.stdout
    )
    # The dry run before the migration announced exactly what was then embedded.
    flat = " ".join(result.stdout.split())
    assert (
        "pending_memories: 7 old pending memories: 4 resolved by the rebuild, 3 copied for the bot's processor,"
        " 0 rejected" in flat
    )  # the summary's lines wrap at the console's width
    bills = re.findall(
        r"(rebuilt_memories|shapes_memories): [\d,]+ memories .*? ([\d,]+) texts embedded offline, ([\d,]+) "
        r"tokens; the dry run estimated ([\d,]+) texts, ([\d,]+) tokens, \$[\d.]+"
        r"( \(as spent\)| \(([\d,]+) of them came from proven Qdrant vectors\))?",
        flat,
    )
    assert [b[0] for b in bills] == ["rebuilt_memories", "shapes_memories"], flat
    [rebuilt, shapes] = bills
    assert (
        rebuilt[1:3] == rebuilt[3:5] and rebuilt[5] == " (as spent)"
    )  # no Qdrant text is a rebuilt memory's
    # The demo store's shapes.inc points agree with their texts: their vectors served the import.
    assert shapes[1] == "0" and shapes[6] == shapes[3], flat
    # The demo's output fits on one screen, even piped. Piped progress adds a line every few seconds on a
    # slow machine (a terminal's bars vanish), so only the lines that are not progress are counted.
    progress = re.compile(r"^  (\d+/\d+ done|\w+: [\d,]+(/[\d,]+)? [^,]+, [\d,]+/s$)")
    assert len([line for line in result.stdout.splitlines() if not progress.match(line)]) <= 54, result.stdout
    assert "conversation_history" in result.stdout and "4,364" in result.stdout
    assert "rebuilt_memories: 2,135 memories (2,135 written, 0 already present)" in result.stdout
    assert "0 cache hits" in result.stdout and "tokens" in result.stdout
    assert (home / "shapes_export" / "uuid-mappings.json").exists()

    # The bot's search, as a person runs it, by discord id (its default persona).
    with psycopg.connect(embedded_database_url("tinybot_new", home)) as conn:
        [(discord_id, persona_id)] = conn.execute(
            "SELECT u.discord_id, d.persona_id FROM user_default_personas d JOIN users u ON u.id = d.user_id"
            " JOIN memories m ON m.persona_id = d.persona_id GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1"
        ).fetchall()
    found = run_cli(
        "search",
        "coffee ☕",
        "--persona",
        discord_id,
        "--limit",
        "3",
        "--min-similarity",
        "0",
        env=cli_env(home),
        cwd=tmp_path,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"memories of persona {persona_id}" in found.stdout and "3 memories in" in found.stdout
    unknown = run_cli("search", "x", "--persona", "12345", env=cli_env(home), cwd=tmp_path)
    assert unknown.returncode != 0 and "no user has the discord id 12345" in unknown.stderr

    # The demo ends with the cutover verdict; the report says the same, then turns when a memory goes.
    assert "cutover_report: GO for cutover, 0 blockers" in result.stdout
    assert "12,543 points: 12,109 matched, 23 imported, 45 duplicate, 356 superseded, 10 rejected" in flat
    go = run_cli("cutover-report", env=cli_env(home), cwd=tmp_path)
    assert go.returncode == 0 and go.stdout.startswith("GO"), go.stdout + go.stderr
    assert "12,543 points of 59 collections landed" in go.stdout and "missing" not in go.stdout
    with psycopg.connect(embedded_database_url("tinybot_new", home), autocommit=True) as conn:
        collection, point_id, memory_id = conn.execute(
            "SELECT collection, point_id, memory_id FROM tinybot_migration.qdrant_points"
            " WHERE outcome = 'imported' ORDER BY collection, point_id LIMIT 1"
        ).fetchone()
        conn.execute("DELETE FROM memories WHERE id = %s", (memory_id,))
    no_go = run_cli("cutover-report", env=cli_env(home), cwd=tmp_path)
    assert no_go.returncode == 1 and no_go.stdout.startswith("NO-GO"), no_go.stdout + no_go.stderr
    assert f"point {collection}/{point_id}: its memory {memory_id} does not exist" in " ".join(
        no_go.stdout.split()
    )


def test_a_dry_run_before_the_first_migration_writes_nothing_and_announces_the_bill(tmp_path):
    home = tmp_path / "home"
    env = cli_env(home)
    assert run_cli("demo-data", env=env, cwd=tmp_path).returncode == 0
    dry = run_cli("run", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    out = " ".join(dry.stdout.split())
    assert (
        "rebuilt_memories (dry run): 2,135 memories to write, 2,134 texts to embed (0 already in the cache)"
        in out
    )
    assert "history paired from the old database" in out
    assert "shapes_memories (dry run): 10,038 memories to write, 9,054 texts to embed" in out
    assert "9,364 records: 9,068 to import, 292 deleted, 2 duplicates, 2 rejected, 4 unmapped senders" in out
    assert "dry run: nothing written, no provider called" in out
    with psycopg.connect(embedded_database_url("tinybot_new", home), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.schema_version')").fetchone()[0] is None


def test_dg_launch_from_the_project(cli_databases, tinybot_home, tmp_path):
    """The other entry point, as the README gives it: `dg launch` from the project root with an
    instance of its own. Relational tables first (they register the partitions), then every
    personality's memories as one run over the partition range."""
    old_url, _ = cli_databases
    new_url = embedded_database_url("cli_new_dagster", tinybot_home)
    env = cli_env(tinybot_home, OLD_DATABASE_URL=old_url, DATABASE_URL=new_url)
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir()
    dg = str(Path(sys.executable).parent / "dg")

    def launch(*args: str) -> None:
        result = subprocess.run(
            [dg, "launch", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    launch("--assets", "group:relational")
    with psycopg.connect(new_url) as conn:
        assert conn.execute("SELECT count(*) FROM conversation_history").fetchone()[0] == 4_364
        first, last = conn.execute("SELECT min(slug), max(slug) FROM personalities").fetchone()
    launch("--job", "memory_bill")  # the UI's dry run
    with psycopg.connect(new_url) as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 0  # the bill wrote nothing
    launch("--assets", "rebuilt_memories", "--partition-range", f"{first}...{last}")
    with psycopg.connect(new_url) as conn:
        [all_ids] = conn.execute("SELECT array_agg(id) FROM personalities").fetchone()
        expected = {e.memory_id for e in pair_messages(load_messages(conn, all_ids)).exchanges}
        stored = {r[0] for r in conn.execute("SELECT id FROM memories").fetchall()}
    assert len(expected) > 2_000 and stored == expected


def test_purge_bad_embeddings_removes_zero_vectors_from_the_configured_database(tinybot_home, tmp_path):
    new_url = embedded_database_url("cli_purge", tinybot_home)
    with psycopg.connect(new_url, autocommit=True) as conn:
        apply_new_schema(conn)
        conn.execute(
            "INSERT INTO tinybot_migration.embedding_cache (model, dimensions, text_hash, embedding) VALUES"
            " ('m', 1536, repeat('0', 32), array_fill(0, ARRAY[1536])::vector),"
            " ('m', 1536, repeat('1', 32), array_fill(0.5, ARRAY[1536])::vector)"
        )
    result = run_cli("purge-bad-embeddings", env=cli_env(tinybot_home, DATABASE_URL=new_url), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed 1 all-zero cache entries and 0 memories" in result.stdout
    with psycopg.connect(new_url) as conn:
        assert conn.execute("SELECT count(*) FROM tinybot_migration.embedding_cache").fetchone()[0] == 1
