"""`tinybot-migration`: demo data, the demo, the migration run, and the Dagster UI."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from tinybot_migration.cli.cutover import cutover_report_command
from tinybot_migration.cli.dev import dev_command
from tinybot_migration.cli.search import search_command
from tinybot_migration.cli.summary import (
    console,
    database_gone_message,
    interrupted_advice,
    print_estimate,
    print_summary,
)
from tinybot_migration.cli.sync import sync_command
from tinybot_migration.lib.progress import as_lines
from tinybot_migration.lib.qdrant.source import QdrantLocation
from tinybot_migration.lib.settings import (
    NEW_DATABASE,
    OLD_DATABASE,
    QDRANT_PATH,
    QDRANT_URL,
    SHAPES_EXPORT_SETTING,
    configured_shapes_export,
    qdrant_environment,
    shapes_export_dir,
    tinybot_home,
)


def _demo_data(scale: int, seed: int, replace: bool):
    from tinybot_migration.lib.demo_data import generate_demo_data
    from tinybot_migration.lib.embedded_postgres import embedded_database_url
    from tinybot_migration.lib.settings import OLD_DATABASE_NAME

    summary = generate_demo_data(
        embedded_database_url(OLD_DATABASE_NAME), shapes_export_dir(), scale=scale, seed=seed, replace=replace
    )
    return summary, _demo_qdrant_store(seed, replace=True)  # the store follows the data just written


def _demo_qdrant_store(seed: int, replace: bool):
    """The demo's local-mode Qdrant store, written from the demo old DB and export (lib/demo_data/qdrant_store.py)."""
    from tinybot_migration.lib.demo_data.qdrant_store import write_demo_qdrant_store
    from tinybot_migration.lib.embedded_postgres import embedded_database_url
    from tinybot_migration.lib.settings import OLD_DATABASE_NAME, demo_qdrant_dir

    return write_demo_qdrant_store(
        embedded_database_url(OLD_DATABASE_NAME),
        shapes_export_dir(),
        demo_qdrant_dir(),
        seed=seed,
        replace=replace,
    )


def _store_line(store) -> str:
    scaled = " (its first block only)" if store.scaled_down else ""
    return f"a Qdrant store of {store.points:,} points in {store.collections} collections{scaled}"


INTERRUPTED_EXIT = 130  # the shell's code for a command stopped by Ctrl-C


def _written(summary) -> str:
    return f"demo data (scale {summary.scale}, seed {summary.seed}) written in {summary.seconds:.1f}s"


def _refuse_configured_sources(command: str) -> None:
    """Demo data goes only into the embedded old DB and $TINYBOT_HOME, never over real sources."""
    if OLD_DATABASE.configured_url():
        raise SystemExit(
            f"{command} only writes demo data into the embedded old database, and {OLD_DATABASE.variable} is "
            f"set: the old database is read-only to this project. Unset {OLD_DATABASE.variable} to use the demo."
        )
    if qdrant_environment().keys() & {"url", "path"}:
        raise SystemExit(
            f"{command} writes its Qdrant store under $TINYBOT_HOME, and {QDRANT_URL} or {QDRANT_PATH} is set: "
            f"the store the migration replaces is read-only to this project. Unset them to use the demo."
        )
    if configured_shapes_export():
        raise SystemExit(
            f"{command} writes its shapes.inc export under $TINYBOT_HOME, and {SHAPES_EXPORT_SETTING} is set: "
            f"a real export is never overwritten. Unset {SHAPES_EXPORT_SETTING} to use the demo."
        )


def cmd_demo_data(scale: int, seed: int, replace: bool) -> int:
    _refuse_configured_sources("demo-data")
    summary, store = _demo_data(scale, seed, replace)
    console.print(
        f"{_written(summary)}: "
        + ", ".join(f"{table} {count:,}" for table, count in summary.table_counts.items())
        + f"; {summary.shapes_memories:,} shapes.inc memories in {summary.shapes_folders} folders"
        f" under {shapes_export_dir()}; {_store_line(store)}"
    )
    return 0


def cmd_demo(scale: int, seed: int, replace: bool, log_level: str | None) -> int:
    _refuse_configured_sources("demo")
    if os.environ.pop(NEW_DATABASE.variable, None):
        console.print("[yellow]demo always migrates into the embedded database; ignoring DATABASE_URL[/]")
    from tinybot_migration.lib.demo_data import old_database_has_data
    from tinybot_migration.lib.embedded_postgres import embedded_database_url
    from tinybot_migration.lib.settings import OLD_DATABASE_NAME

    if replace or not old_database_has_data(embedded_database_url(OLD_DATABASE_NAME)):
        # An empty old DB next to a leftover demo export (say the DB was wiped): regenerate both.
        summary, store = _demo_data(scale, seed, replace=replace or shapes_export_dir().exists())
        data = (  # every table's count is in the summary's old rows
            f"{_written(summary)}: {summary.table_counts['conversation_history']:,} messages, "
            f"{summary.shapes_memories:,} shapes.inc memories, {_store_line(store)}"
        )
    else:
        data = "demo data already present (--replace regenerates it)"
        if QdrantLocation.demo() is None:  # data from before the demo had a Qdrant store
            data += f"; {_store_line(_demo_qdrant_store(seed, replace=False))}"
    console.print(f"tinybot demo in {tinybot_home()}: {data}", highlight=False)
    # The bill first, without its own progress: the summary sets it against what was spent.
    bill = _memory_bill(progress=False)
    console.print(f"dry run: the embedding bill estimated in {bill.seconds:.1f}s, nothing written")
    code = _run_and_report(log_level=log_level, bill=bill)
    if code == 0:
        _print_next_steps()
    return code


def cmd_run(log_level: str | None, pool_wait_seconds: float | None, dry_run: bool) -> int:
    if dry_run:
        print_estimate(_memory_bill())
        return 0
    return _run_and_report(log_level=log_level, pool_wait_seconds=pool_wait_seconds)


def _memory_bill(progress: bool = True):
    """What the memory assets would embed and what it would cost (`lib/memory_bill.py`): read from
    the configured databases and export, nothing written, no provider called, no Dagster run."""
    from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource
    from tinybot_migration.lib.embeddings.client import EmbeddingClient
    from tinybot_migration.lib.memory_bill import estimate_memory_bill
    from tinybot_migration.lib.shapes.export import export_folder

    _require_configuration()
    if progress:
        console.print("dry run: what the memory assets would embed, and what it would cost")
        _print_databases()
    client = EmbeddingClient.from_environment()
    try:
        with NewDatabaseResource(url=NEW_DATABASE.configured_url()).connect_read_only() as conn:
            return estimate_memory_bill(
                conn,
                OldDatabaseResource(url=OLD_DATABASE.configured_url()).connect,
                client,
                export_folder(configured_shapes_export()),
                as_lines(console.print) if progress else None,
            )
    finally:
        client.close()


@functools.cache
def _log_file() -> Path:
    """Where this command's Dagster log lines go (one file for every run it starts)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return (
        tinybot_home() / "logs" / f"{sys.argv[1] if len(sys.argv) > 1 else 'run'}-{stamp}-{os.getpid()}.log"
    )


def _print_databases() -> None:
    """The two databases, masked, once per run (the assets no longer say it per table)."""
    from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource

    old = OldDatabaseResource(url=OLD_DATABASE.configured_url()).display_url()
    new = NewDatabaseResource(url=NEW_DATABASE.configured_url()).display_url()
    console.print(f"{old} (read-only) → {new}", highlight=False)


@contextlib.contextmanager
def _progress_display():
    """Bars on a terminal, lines otherwise, fed by the runs' events while the block runs."""
    from tinybot_migration.cli.run_progress import progress_for
    from tinybot_migration.defs.cli_logger import show_progress

    with progress_for(console) as display, show_progress(display):
        yield


CONFIGURATION_EXIT = 2  # a setting is wrong: nothing was started


class ConfigurationError(SystemExit):
    """The settings keep a run from working; each problem was said."""


def _require_configuration() -> None:
    """Stop before any write when a setting the run needs is wrong, each problem one line."""
    from tinybot_migration.runtime.preflight import configuration_problems

    problems = configuration_problems()
    for problem in problems:
        console.print(f"[red]configuration[/]: {problem}", highlight=False, soft_wrap=True)
    if problems:
        console.print("nothing was started or written; fix the settings above and run again")
        raise ConfigurationError(CONFIGURATION_EXIT)


def _migration_report(
    log_level: str | None = None, pool_wait_seconds: float | None = None, progress: bool = True, **options
):
    """`run_migration` with the CLI's logging, or None when Dagster's storage went away (said).

    Without `log_level`, Dagster's lines go to `_log_file()` and the CLI shows progress (unless
    `progress` is off: then nothing); with it, they go to the console at that level, as Dagster
    prints them."""
    from tinybot_migration.runtime.runner import DEFAULT_POOL_WAIT_SECONDS, run_migration

    logging.getLogger().addFilter(_STORAGE_RETRIES_ONCE)  # the same filter object is added once
    _require_configuration()
    quiet = log_level is None
    if progress:
        _print_databases()
    try:
        with _progress_display() if quiet and progress else contextlib.nullcontext():
            return run_migration(
                log_level=log_level or "INFO",
                log_file=_log_file() if quiet else None,
                pool_wait_seconds=DEFAULT_POOL_WAIT_SECONDS
                if pool_wait_seconds is None
                else pool_wait_seconds,
                log=as_lines(console.print),
                **options,
            )
    except Exception as error:
        gone = database_gone_message(error)
        if gone is None:
            raise
        console.print(f"[red]{gone}[/]")
        return None


def cmd_purge_bad_embeddings() -> int:
    """Delete all-zero vectors from the cache and the memories holding them, in one transaction."""
    from tinybot_migration.defs.resources import NewDatabaseResource
    from tinybot_migration.lib.embeddings.cache import purge_zero_vectors
    from tinybot_migration.lib.memories.writer import delete_memories_with_zero_vectors

    database = NewDatabaseResource(url=NEW_DATABASE.configured_url())
    with database.connect() as conn, conn.transaction():
        cached = purge_zero_vectors(conn)
        memories = delete_memories_with_zero_vectors(conn)
    console.print(
        f"{database.display_url()}: removed {cached:,} all-zero cache entries and "
        f"{sum(memories.values()):,} memories with an all-zero embedding"
        + (f" ({', '.join(f'{source} {n:,}' for source, n in sorted(memories.items()))})" if memories else "")
        + "; `tinybot-migration run` embeds them again"
    )
    return 0


class _StorageRetriesOnce(logging.Filter):
    """Dagster's storage logs a warning (with a long SQLAlchemy message) on every retry of a lost
    connection; one line saying so is enough."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Retrying failed database connection"):
            return True
        if not self.said:
            self.said = True
            console.print("[yellow]Dagster's run storage is not answering; retrying for a while…[/]")
        return False


_STORAGE_RETRIES_ONCE = _StorageRetriesOnce()


def _run_and_report(log_level: str | None = None, pool_wait_seconds: float | None = None, bill=None) -> int:
    report = _migration_report(log_level, pool_wait_seconds)
    if report is None:
        return 1
    print_summary(report, bill)
    if log_level is None:
        _say_log_file()
    if report.interrupted:
        return INTERRUPTED_EXIT
    return 0 if report.ok else 1


def _say_log_file() -> None:
    console.print(f"Dagster's log of this run: {_log_file()} (--log-level INFO shows it here)")


def _print_next_steps() -> None:
    console.print(
        "next: `tinybot-migration dev` for the UI, "
        '`tinybot-migration search "<words>" --persona <persona or discord id>` for the bot\'s search',
        highlight=False,
    )


LOG_LEVEL = click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default=None,
    help="print Dagster's log lines at this level (default: progress here, the lines in a log file under "
    "$TINYBOT_HOME/logs)",
)


def demo_options(command):
    for option in reversed(
        [
            click.option(
                "--scale",
                type=click.IntRange(min=1),
                default=1,
                help="1 = production's shape (4,364 messages)",
            ),
            click.option("--seed", type=int, default=42, help="same seed, same data"),
            click.option("--replace", is_flag=True, help="replace existing demo data"),
        ]
    ):
        command = option(command)
    return command


@click.group(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    pass


@cli.command("demo-data", help="fill the embedded old DB and write a shapes.inc export")
@demo_options
def demo_data_command(scale: int, seed: int, replace: bool) -> int:
    return cmd_demo_data(scale, seed, replace)


@cli.command("demo", help="embedded DB + demo data + the whole migration + a summary")
@demo_options
@LOG_LEVEL
def demo_command(scale: int, seed: int, replace: bool, log_level: str | None) -> int:
    return cmd_demo(scale, seed, replace, log_level)


@cli.command("run", help="the whole migration against the configured databases")
@LOG_LEVEL
@click.option(
    "--pool-wait-seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="how long a stage waits for a pool with no free slot before the run gives up (default 600)",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="estimate what the memory assets would embed and cost; write nothing, call no provider",
)
def run_command(log_level: str | None, pool_wait_seconds: float | None, dry_run: bool) -> int:
    return cmd_run(log_level, pool_wait_seconds, dry_run)


@cli.command(
    "purge-bad-embeddings",
    help="delete all-zero vectors from the embedding cache and the memories holding them (DATABASE_URL)",
)
def purge_command() -> int:
    return cmd_purge_bad_embeddings()


cli.add_command(search_command)
cli.add_command(cutover_report_command)
cli.add_command(sync_command)
cli.add_command(dev_command)


def main(argv: list[str] | None = None) -> int:
    """Run a command; its exit code. A bad argument is exit 2 with click's message; Ctrl-C or
    SIGTERM (a container stopping) stops it as an interruption: the step in flight fails, no retry,
    nothing more is started, exit 130 with what to do next."""
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), "")
    if command != "dev":  # `dev` passes signals on to its children itself
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = cli.main(args=args, prog_name="tinybot-migration", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:  # click's form of KeyboardInterrupt
        return _interrupted(command)
    except Exception as error:
        if not _raised_while_interrupted(error):
            raise
        # Ctrl-C landed mid-statement (say, inside a COPY) and cleaning up on that connection failed
        # in turn: the interruption is what happened.
        return _interrupted(command)
    return code if isinstance(code, int) else 0


def _interrupted(command: str) -> int:
    console.print(f"[yellow]interrupted[/]. {interrupted_advice(command)}")
    return INTERRUPTED_EXIT


def _raised_while_interrupted(error: BaseException) -> bool:
    """Whether `error` was raised while a KeyboardInterrupt was being handled (its context chain)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
