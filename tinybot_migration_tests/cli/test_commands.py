"""The command line's branches, in process (quick): usage errors, refusals, the checks before a
run, an interruption. The commands' real work is in test_cli.py (slow: subprocesses)."""

import signal

import pytest

from tinybot_migration.cli import main as cli_main
from tinybot_migration.cli.dev import dev_command


@pytest.fixture(autouse=True)
def keep_sigterm():
    """`main` makes SIGTERM an interruption for the command it runs; the test process keeps its own."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli_main.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_help_lists_every_command(capsys):
    code, out = run(capsys, "--help")
    assert code == 0
    for command in ("demo", "demo-data", "run", "search", "sync", "dev", "purge-bad-embeddings"):
        assert f"  {command} " in out


@pytest.mark.parametrize(
    "args, says",
    [
        (("demo-data", "--scale", "0"), "Invalid value for '--scale': 0 is not in the range x>=1"),
        (("run", "--pool-wait-seconds", "-1"), "'--pool-wait-seconds': -1.0 is not in the range x>=0"),
        (("run", "--log-level", "LOUD"), "'LOUD' is not one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        (("run", "--fast"), "No such option '--fast'"),
        (("sync", "--from", "dev", "--to", "staging"), "'staging' is not one of 'dev', 'prod'"),
        (("sync", "--from", "dev"), "Missing option '--to'"),
        (
            ("sync", "--from", "dev", "--to", "prod", "--batch-mb", "0"),
            "'--batch-mb': 0.0 is not in the range",
        ),
        (
            ("search", "cats", "--persona", "1", "--before", "yesterday"),
            "'yesterday' is not an ISO 8601 time",
        ),
        (("search", "cats"), "Missing option '--persona'"),
        (("bogus",), "No such command 'bogus'"),
    ],
)
def test_a_bad_argument_is_a_usage_error_that_names_it(capsys, args, says):
    code, out = run(capsys, *args)
    assert code == 2 and says in out and "Usage: tinybot-migration" in out


def test_dev_passes_the_options_it_does_not_know_to_dagster_dev():
    context = dev_command.make_context("dev", ["--port", "3001", "--host", "0.0.0.0"])
    assert context.params["dagster_args"] == ("--port", "3001", "--host", "0.0.0.0")


def test_demo_data_refuses_a_configured_old_database_or_export(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TINYBOT_HOME", str(tmp_path))
    monkeypatch.setenv("OLD_DATABASE_URL", "postgresql://someone@elsewhere/tinybot")
    with pytest.raises(SystemExit, match="OLD_DATABASE_URL is set: the old database is read-only"):
        cli_main.main(["demo-data"])
    monkeypatch.delenv("OLD_DATABASE_URL")
    monkeypatch.setenv("SHAPES_EXPORT_DIR", str(tmp_path / "real_export"))
    with pytest.raises(SystemExit, match="SHAPES_EXPORT_DIR is set: a real export is never overwritten"):
        cli_main.main(["demo"])


def test_run_stops_before_anything_starts_naming_each_bad_setting(capsys, monkeypatch, tmp_path):
    refused = "postgresql://tinybot:secret-pw@127.0.0.1:9/{}"  # the discard port: nothing listens
    monkeypatch.setenv("TINYBOT_HOME", str(tmp_path))
    monkeypatch.setenv("OLD_DATABASE_URL", refused.format("old"))
    monkeypatch.setenv("DATABASE_URL", refused.format("new"))
    monkeypatch.setenv("DAGSTER_STORAGE_URL", refused.format("dagster").replace("://", "+psycopg2://", 1))
    monkeypatch.setenv("EMBEDDING_PROVIDER", "openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("SHAPES_EXPORT_DIR", str(tmp_path / "missing"))
    with pytest.raises(SystemExit) as stopped:
        cli_main.main(["run"])
    out = capsys.readouterr().out
    assert stopped.value.code == cli_main.CONFIGURATION_EXIT
    lines = [line for line in out.splitlines() if line.startswith("configuration: ")]
    assert len(lines) == 5, out  # the key, the export folder, and each of the three databases
    assert any("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY" in line for line in lines)
    assert any("SHAPES_EXPORT_DIR is set to" in line for line in lines)
    for role in ("old database", "new database", "Dagster run storage"):
        assert any(f"cannot connect to the {role}" in line for line in lines), role
    assert "secret-pw" not in out and "nothing was started or written" in out


def test_an_interrupted_command_says_how_to_resume_and_exits_130(capsys, monkeypatch):
    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "cmd_run", interrupted)
    code, out = run(capsys, "run")
    assert code == cli_main.INTERRUPTED_EXIT == 130
    assert "interrupted" in out and "tinybot-migration run" in out
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler  # SIGTERM stops it the same way


def test_an_error_raised_while_cleaning_up_after_ctrl_c_is_still_an_interruption(capsys, monkeypatch):
    """Ctrl-C inside a COPY leaves the connection busy; the cleanup's own error (psycopg's "another
    command is already in progress") must not turn the interruption into a traceback and exit 1."""
    import psycopg

    def interrupted_mid_copy(*_args):
        try:
            raise KeyboardInterrupt
        finally:
            raise psycopg.OperationalError("sending query failed: another command is already in progress")

    monkeypatch.setattr(cli_main, "cmd_run", interrupted_mid_copy)
    code, out = run(capsys, "run")
    assert code == 130 and "interrupted" in out

    def plainly_broken(*_args):
        raise psycopg.OperationalError("the server said no")

    monkeypatch.setattr(cli_main, "cmd_run", plainly_broken)
    with pytest.raises(psycopg.OperationalError):
        cli_main.main(["run"])
