"""`tinybot-migration sync --from dev|prod --to prod|dev [--dry-run] [--prefer source|target]`."""

from __future__ import annotations

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from tinybot_migration.cli.summary import console
from tinybot_migration.lib.progress import Event
from tinybot_migration.lib.settings import SYNC_SIDES
from tinybot_migration.lib.sync.engine import DEFAULT_BATCH_BYTES
from tinybot_migration.lib.sync.progress import SyncProgress

SIDE_NAMES = tuple(SYNC_SIDES)
PLAIN_BATCH_LINE_SECONDS = 5.0  # piped output: at most one batch line this often, besides each table's


class RichSyncProgress(SyncProgress):
    """A bar per table (source rows examined), its inserts and updates beside it; gone once the sync
    ends, as the summary table says the same."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[written]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichSyncProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def table_started(self, result) -> None:
        self._tasks[result.table] = self.progress.add_task(result.table, total=result.source_rows, written="")

    def chunk_applied(self, result, inserted: int, updated: int, copied: int) -> None:
        self._update(result)

    def batch_done(self, result) -> None:
        self._update(result)

    def table_done(self, result) -> None:
        self._update(result, completed=result.source_rows)

    def _update(self, result, completed: int | None = None) -> None:
        written = f"{result.inserted:,} inserted, {result.updated:,} updated"
        if result.conflict_count:
            written += f", {result.conflict_count:,} conflicts"
        self.progress.update(
            self._tasks[result.table],
            completed=result.examined if completed is None else completed,
            written=written,
        )


class _NoDisplay:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


@click.command("sync", help="sync the new databases DEV ↔ PROD (DEV_DATABASE_URL, PROD_DATABASE_URL)")
@click.option("--from", "source", required=True, type=click.Choice(SIDE_NAMES))
@click.option("--to", "target", required=True, type=click.Choice(SIDE_NAMES))
@click.option("--dry-run", is_flag=True, help="the same summary, nothing written")
@click.option(
    "--prefer",
    type=click.Choice(("target", "source")),
    default="target",
    show_default=True,
    help="who wins an append-only row (a message, a memory, …) whose content differs",
)
@click.option(
    "--batch-mb",
    type=click.FloatRange(min=1 / 2**20),
    default=DEFAULT_BATCH_BYTES / 2**20,
    show_default=True,
    help="rows copied and upserted per transaction, by size (about 10,000 memories of 1536 dimensions)",
)
def sync_command(source: str, target: str, dry_run: bool, prefer: str, batch_mb: float) -> int:
    from tinybot_migration.lib.database import DatabaseConnectionError
    from tinybot_migration.lib.sync.engine import SyncOptions
    from tinybot_migration.lib.sync.precheck import SyncPrecheckError
    from tinybot_migration.lib.sync.run import SyncSettingError, run_sync

    options = SyncOptions(dry_run=dry_run, prefer=prefer, batch_bytes=int(batch_mb * 2**20))
    if console.is_terminal:
        progress = display = RichSyncProgress(console)
    else:
        progress, display = SyncProgress(_say, PLAIN_BATCH_LINE_SECONDS), _NoDisplay()
    try:
        with display:
            report = run_sync(source, target, options, log=_say, progress=progress)
    except (SyncSettingError, SyncPrecheckError, DatabaseConnectionError) as error:
        console.print(f"[red]{error}[/]", highlight=False)
        return 1
    print_sync_summary(report)
    return 0 if report.ok else 1


def _say(event: Event) -> None:
    console.print(str(event), highlight=False)


def print_sync_summary(report) -> None:
    from tinybot_migration.lib.sync.summary import COLUMNS, conflict_lines, summary_rows

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
    if report.persona_indexes is not None and (
        report.persona_indexes.built or report.persona_indexes.dropped
    ):
        personas = report.persona_indexes
        console.print(
            f"persona indexes: {len(personas.built)} built, {len(personas.dropped)} dropped, {personas.kept} kept "
            f"in {personas.seconds:.1f}s"
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
