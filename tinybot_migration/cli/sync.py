"""`tinybot-migration sync --from dev|prod --to prod|dev [--dry-run] [--prefer source|target]`."""

from __future__ import annotations

import argparse

from rich.table import Table

from tinybot_migration.cli.summary import console


def add_sync_command(commands) -> None:
    sync = commands.add_parser(
        "sync", help="sync the new databases DEV ↔ PROD (DEV_DATABASE_URL, PROD_DATABASE_URL)"
    )
    sync.add_argument("--from", dest="source", required=True, choices=("dev", "prod"))
    sync.add_argument("--to", dest="target", required=True, choices=("dev", "prod"))
    sync.add_argument("--dry-run", action="store_true", help="the same summary, nothing written")
    sync.add_argument(
        "--prefer",
        choices=("target", "source"),
        default="target",
        help="who wins an append-only row (a message, a memory, …) whose content differs (default: target)",
    )
    sync.set_defaults(func=cmd_sync)


def cmd_sync(args: argparse.Namespace) -> int:
    from tinybot_migration.resources.database import DatabaseConnectionError
    from tinybot_migration.sync.engine import SyncOptions
    from tinybot_migration.sync.precheck import SyncPrecheckError
    from tinybot_migration.sync.run import SyncSettingError, run_sync

    options = SyncOptions(dry_run=args.dry_run, prefer=args.prefer)
    try:
        report = run_sync(args.source, args.target, options, log=_say)
    except (SyncSettingError, SyncPrecheckError, DatabaseConnectionError) as error:
        console.print(f"[red]{error}[/]", highlight=False)
        return 1
    print_sync_summary(report)
    return 0 if report.ok else 1


def _say(line: str) -> None:
    console.print(line, highlight=False)


def print_sync_summary(report) -> None:
    from tinybot_migration.sync.summary import COLUMNS, conflict_lines, summary_rows

    title = f"sync {report.source} → {report.target}" + (
        " (dry run: nothing written)" if report.options.dry_run else ""
    )
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "table" else "right")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    for line in conflict_lines(report):
        console.print(f"[yellow]conflict[/] {line}", highlight=False)
    if report.index is not None:
        console.print(
            f"vector index: {report.index.action} over {report.index.rows:,} memories in {report.index.seconds:.1f}s"
        )
    for check in report.checks:
        mark = "[green]ok[/]" if check.passed else "[red]FAILED[/]"
        console.print(f"{mark} {check.name}: {check.description}", highlight=False)
    verdict = (
        "dry run done"
        if report.options.dry_run
        else ("sync verified" if report.ok else "[red]sync NOT verified[/]")
    )
    console.print(f"{verdict} in {report.seconds:.1f}s")
