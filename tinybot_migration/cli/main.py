"""`tinybot-migration`: demo data, the demo, the migration run, and the Dagster UI."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from tinybot_migration.cli.dev import cmd_dev, register_partitions_from_old_database
from tinybot_migration.cli.search import add_search_command
from tinybot_migration.cli.summary import (
    console,
    database_gone_message,
    interrupted_advice,
    print_estimate,
    print_summary,
)
from tinybot_migration.cli.sync import add_sync_command
from tinybot_migration.lib.progress import as_lines
from tinybot_migration.lib.settings import shapes_export_dir, tinybot_home


def _demo_data(scale: int, seed: int, replace: bool):
    from tinybot_migration.lib.demo_data import generate_demo_data
    from tinybot_migration.lib.embedded_postgres import embedded_database_url
    from tinybot_migration.lib.settings import OLD_DATABASE_NAME

    return generate_demo_data(
        embedded_database_url(OLD_DATABASE_NAME), shapes_export_dir(), scale=scale, seed=seed, replace=replace
    )


INTERRUPTED_EXIT = 130  # the shell's code for a command stopped by Ctrl-C


def _written(summary) -> str:
    return f"demo data (scale {summary.scale}, seed {summary.seed}) written in {summary.seconds:.1f}s"


def _refuse_configured_sources(command: str) -> None:
    """Demo data goes only into the embedded old DB and $TINYBOT_HOME, never over real sources."""
    if os.environ.get("OLD_DATABASE_URL"):
        raise SystemExit(
            f"{command} only writes demo data into the embedded old database, and OLD_DATABASE_URL is set: "
            "the old database is read-only to this project. Unset OLD_DATABASE_URL to use the demo."
        )
    if os.environ.get("SHAPES_EXPORT_DIR"):
        raise SystemExit(
            f"{command} writes its shapes.inc export under $TINYBOT_HOME, and SHAPES_EXPORT_DIR is set: "
            "a real export is never overwritten. Unset SHAPES_EXPORT_DIR to use the demo."
        )


def cmd_demo_data(args: argparse.Namespace) -> int:
    _refuse_configured_sources("demo-data")
    summary = _demo_data(args.scale, args.seed, args.replace)
    console.print(
        f"{_written(summary)}: "
        + ", ".join(f"{table} {count:,}" for table, count in summary.table_counts.items())
        + f"; {summary.shapes_memories:,} shapes.inc memories in {summary.shapes_folders} folders"
        f" under {shapes_export_dir()}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _refuse_configured_sources("demo")
    if os.environ.pop("DATABASE_URL", None):
        console.print("[yellow]demo always migrates into the embedded database; ignoring DATABASE_URL[/]")
    from tinybot_migration.lib.demo_data import old_database_has_data
    from tinybot_migration.lib.embedded_postgres import embedded_database_url
    from tinybot_migration.lib.settings import OLD_DATABASE_NAME

    if args.replace or not old_database_has_data(embedded_database_url(OLD_DATABASE_NAME)):
        # An empty old DB next to a leftover demo export (say the DB was wiped): regenerate both.
        summary = _demo_data(args.scale, args.seed, replace=args.replace or shapes_export_dir().exists())
        data = (  # every table's count is in the summary's old rows
            f"{_written(summary)}: {summary.table_counts['conversation_history']:,} messages, "
            f"{summary.shapes_memories:,} shapes.inc memories"
        )
    else:
        data = "demo data already present (--replace regenerates it)"
    console.print(f"tinybot demo in {tinybot_home()}: {data}", highlight=False)
    # The dry run first, without its own progress: its bill is set against what was spent in the summary.
    estimate = _dry_run_report(log_level=args.log_level, progress=False)
    if estimate is not None and estimate.interrupted:
        raise KeyboardInterrupt
    if estimate is not None:
        console.print(f"dry run: the embedding bill estimated in {estimate.seconds:.1f}s, nothing written")
    code = _run_and_report(log_level=args.log_level, estimate=estimate)
    if code == 0:
        _print_next_steps()
    return code


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        report = _dry_run_report(log_level=args.log_level, pool_wait_seconds=args.pool_wait_seconds)
        if report is None:
            return 1
        if report.interrupted:
            raise KeyboardInterrupt
        print_estimate(report)
        if args.log_level is None:
            _say_log_file()
        return 0 if report.success else 1
    return _run_and_report(log_level=args.log_level, pool_wait_seconds=args.pool_wait_seconds)


def _dry_run_report(
    log_level: str | None = None, pool_wait_seconds: float | None = None, progress: bool = True
):
    """The memory assets' dry run (what would be embedded and its cost), or None when Dagster's
    storage went away (said already)."""
    if progress:
        console.print("dry run: what the memory assets would embed, and what it would cost")
    return _migration_report(
        log_level,
        pool_wait_seconds,
        progress=progress,
        dry_run=True,
        before_stages=register_partitions_from_old_database,
    )


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

    old = OldDatabaseResource(url=os.environ.get("OLD_DATABASE_URL") or None).display_url()
    new = NewDatabaseResource(url=os.environ.get("DATABASE_URL") or None).display_url()
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


def cmd_purge_bad_embeddings(args: argparse.Namespace) -> int:
    """Delete all-zero vectors from the cache and the memories holding them, in one transaction."""
    from tinybot_migration.defs.resources import NewDatabaseResource
    from tinybot_migration.lib.embeddings.cache import purge_zero_vectors
    from tinybot_migration.lib.memories.writer import delete_memories_with_zero_vectors

    database = NewDatabaseResource(url=os.environ.get("DATABASE_URL") or None)
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


def _run_and_report(
    log_level: str | None = None, pool_wait_seconds: float | None = None, estimate=None
) -> int:
    report = _migration_report(log_level, pool_wait_seconds)
    if report is None:
        return 1
    print_summary(report, estimate)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinybot-migration", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_demo_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--scale", type=int, default=1, help="1 = production's shape (4,364 messages)")
        command.add_argument("--seed", type=int, default=42, help="same seed, same data")
        command.add_argument("--replace", action="store_true", help="replace existing demo data")

    demo_data = commands.add_parser(
        "demo-data", help="fill the embedded old DB and write a shapes.inc export"
    )
    add_demo_options(demo_data)
    demo_data.set_defaults(func=cmd_demo_data)

    def add_log_level(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--log-level",
            default=None,
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="print Dagster's log lines at this level (default: progress here, the lines in a log file "
            "under $TINYBOT_HOME/logs)",
        )

    demo = commands.add_parser("demo", help="embedded DB + demo data + the whole migration + a summary")
    add_demo_options(demo)
    add_log_level(demo)
    demo.set_defaults(func=cmd_demo)

    run = commands.add_parser("run", help="the whole migration against the configured databases")
    add_log_level(run)
    run.add_argument(
        "--pool-wait-seconds",
        type=float,
        default=None,
        help="how long a stage waits for a pool with no free slot before the run gives up (default 600)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="estimate what the memory assets would embed and cost; write nothing, call no provider",
    )
    run.set_defaults(func=cmd_run)

    add_search_command(commands)
    add_sync_command(commands)

    purge = commands.add_parser(
        "purge-bad-embeddings",
        help="delete all-zero vectors from the embedding cache and the memories holding them (DATABASE_URL)",
    )
    purge.set_defaults(func=cmd_purge_bad_embeddings)

    dev = commands.add_parser(
        "dev",
        help="serve the Dagster UI on the project's persistent instance (other options go to `dagster dev`)",
    )
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "dev":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.dagster_args = extra
    if getattr(args, "scale", 1) < 1:
        raise SystemExit("--scale must be 1 or more")
    if args.command == "dev":
        return args.func(args)  # it passes signals on to its children itself
    # SIGTERM (a container stopping) stops a command as Ctrl-C does, and Dagster's runs treat both
    # as an interruption: the step in flight fails, no retry, nothing more is started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]. {interrupted_advice(args.command)}")
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
