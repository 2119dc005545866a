"""`tinybot-migration cutover-report`: the go/no-go verdict (lib/cutover.py) on the command line.

Reads the new DB (DATABASE_URL, else the embedded one), Qdrant when configured (QDRANT_URL or
QDRANT_PATH; when it does not answer, its side is computed over the landed vectors and said so),
and the latest result of every check in the Dagster instance. Exit 0 only when the cutover is safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import click
import psycopg
from qdrant_client import QdrantClient

from tinybot_migration.cli.summary import console
from tinybot_migration.lib.cutover import CutoverReport, cutover_report, evidence_lines
from tinybot_migration.lib.qdrant.source import QdrantLocation, QdrantSourceError, opened_store
from tinybot_migration.lib.settings import NEW_DATABASE

NO_GO_EXIT = 1


@click.command(
    "cutover-report",
    help="go/no-go for cutover, from the new DB (DATABASE_URL) and Qdrant (QDRANT_URL or QDRANT_PATH) as they "
    "are now: every Qdrant point accounted for, counts, duplicates, retrieval parity, index, checks; exit 0 "
    "only when safe",
)
@click.option(
    "--pairs",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="persona × personality rows shown",
)
def cutover_report_command(pairs: int) -> int:
    report = build_report()
    print_report(report, pairs)
    return 0 if report.go else NO_GO_EXIT


def build_report() -> CutoverReport:
    from tinybot_migration.defs.resources import NewDatabaseResource

    failed, never_ran = _latest_checks()
    location = QdrantLocation.from_environment()
    database = NewDatabaseResource(url=NEW_DATABASE.configured_url())
    with database.connect_read_only() as conn, _answering(location, conn) as (client, unreachable):
        report = cutover_report(conn, client, failed, qdrant_configured=location is not None)
    if unreachable:
        report.notes.append(unreachable)
    if never_ran:
        report.notes.append(f"{never_ran:,} checks have never run in this Dagster instance")
    return report


@contextmanager
def _answering(
    location: QdrantLocation | None, conn: psycopg.Connection
) -> Iterator[tuple[QdrantClient | None, str | None]]:
    """(a client on the store, None) when it answers; (None, why not) when it does not or is not set."""
    if location is None:
        yield None, None
        return
    with ExitStack() as stack:
        try:
            client = stack.enter_context(opened_store(location, conn))
        except QdrantSourceError as error:
            yield None, f"Qdrant did not answer ({error}): its side was computed over the landed vectors"
            return
        yield client, None


def _latest_checks():
    """The ERROR checks failing in the Dagster instance's latest results, and how many never ran."""
    from dagster import DagsterInstance

    from tinybot_migration.definitions import defs
    from tinybot_migration.defs.check_history import failed_checks
    from tinybot_migration.runtime.dagster_instance import prepare_instance

    prepare_instance()
    keys = [
        k
        for k in defs.resolve_asset_graph().asset_check_keys
        if k.asset_key.to_user_string() != "cutover_report"
    ]
    with DagsterInstance.get() as instance:
        return failed_checks(instance, keys)


def print_report(report: CutoverReport, pairs: int = 10) -> None:
    lines = evidence_lines(report, pair_rows=pairs)
    colour = "green" if report.go else "red"
    console.print(
        f"[bold {colour}]{'GO' if report.go else 'NO-GO'}[/]: " + lines[0].split(": ", 1)[1], highlight=False
    )
    for line in lines[1:]:
        console.print(line.replace("- blocker:", "- [red]blocker[/]:"), highlight=False, soft_wrap=True)
