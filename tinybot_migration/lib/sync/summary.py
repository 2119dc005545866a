"""A sync's summary: per table inserted, updated, unchanged, target newer, conflicts, only on the
target and seconds, then the conflicts themselves. One set of rows for the CLI's table and the
Dagster metadata's markdown."""

from __future__ import annotations

from tinybot_migration.lib.sync.run import SyncReport

COLUMNS = (
    "table",
    "inserted",
    "updated",
    "unchanged",
    "target newer",
    "conflicts",
    "only on target",
    "seconds",
)
CONFLICTS_SHOWN = 20


def summary_rows(report: SyncReport) -> list[tuple[str, ...]]:
    return [
        (
            t.table,
            f"{t.inserted:,}",
            f"{t.updated:,}",
            f"{t.unchanged:,}",
            f"{t.target_newer:,}",
            f"{t.conflict_count:,}",
            f"{t.only_on_target:,}",
            f"{t.seconds:.2f}",
        )
        for t in report.tables
    ]


def conflict_lines(report: SyncReport, limit: int = CONFLICTS_SHOWN) -> list[str]:
    lines = []
    for table in report.tables:
        for conflict in table.conflicts:
            key = ", ".join(map(str, conflict.key))
            there = f" (target id {', '.join(map(str, conflict.target_key))})" if conflict.target_key else ""
            lines.append(f"{table.table} {key}: {conflict.reason}{there}")
    total = sum(t.conflict_count for t in report.tables)
    shown = lines[:limit]
    if total > len(shown):
        shown.append(f"… {total - len(shown):,} more (every conflict is counted in the table above)")
    return shown


def summary_markdown(report: SyncReport) -> str:
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join(row) + " |\n" for row in summary_rows(report))
    conflicts = conflict_lines(report)
    return (
        header + body + ("\nConflicts:\n" + "".join(f"- {line}\n" for line in conflicts) if conflicts else "")
    )
