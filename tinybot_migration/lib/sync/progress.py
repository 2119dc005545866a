"""How a sync reports as it goes: per table (its source rows) and per batch (rows examined, written).

`SyncProgress` writes log lines (Dagster's run log, the CLI's output when it is not a terminal);
the CLI's terminal display (`cli.sync`) takes the same calls and draws a bar per table.
"""

from __future__ import annotations

import time

from tinybot_migration.lib.progress import Advanced, Event, Progress, quiet, rate
from tinybot_migration.lib.sync.results import TableSync


class SyncProgress:
    """Lines: each table's start (unless the source's is empty) and end, and each batch (at most one line every
    `batch_line_seconds`, 0 for every batch)."""

    def __init__(self, log: Progress = quiet, batch_line_seconds: float = 0.0) -> None:
        self.log = log
        self.batch_line_seconds = batch_line_seconds
        self._last_batch_line = 0.0
        self._table_started = time.monotonic()

    def table_started(self, result: TableSync) -> None:
        self._table_started = time.monotonic()
        if result.source_rows == 0:
            return  # its end line says all there is to say
        self.log(
            f"{result.table}: {result.source_rows:,} rows on the source, {result.target_rows_before:,} on the target"
        )

    def chunk_applied(self, result: TableSync, inserted: int, updated: int, copied: int) -> None:
        """One chunk committed on the target."""
        self._batch_line(
            f"{result.table}: chunk {result.chunks}: {inserted:,} inserted, {updated:,} updated, "
            f"{copied / 2**20:,.1f} MB"
        )

    def batch_done(self, result: TableSync) -> None:
        """One fingerprint batch examined (and, unless a dry run, its rows written)."""
        self._batch_line(
            Advanced(
                result.table,
                result.examined,
                result.source_rows,
                "examined",
                rate(result.examined, time.monotonic() - self._table_started),
                f"{result.inserted:,} inserted, {result.updated:,} updated",
            )
        )

    def table_done(self, result: TableSync) -> None:
        self.log(
            f"{result.table}: {result.inserted:,} inserted, {result.updated:,} updated, "
            f"{result.unchanged:,} unchanged, {result.conflict_count:,} conflicts, "
            f"{result.only_on_target:,} only on the target ({result.seconds:.1f}s)"
        )

    def _batch_line(self, line: Event) -> None:
        now = time.monotonic()
        if now - self._last_batch_line >= self.batch_line_seconds:
            self._last_batch_line = now
            self.log(line)


SILENT = SyncProgress()
