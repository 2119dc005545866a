"""What a table's sync did so far: its counts and conflicts. The engine fills it in; the progress
display and the summary read it (a module of its own, so neither imports the other for it)."""

from __future__ import annotations

from dataclasses import dataclass, field

CONFLICT_EXAMPLES = 1_000  # conflicts listed per table (all are counted)


@dataclass(frozen=True)
class Conflict:
    table: str
    key: tuple
    reason: str
    target_key: tuple | None = None  # the target's id for the same natural key


@dataclass
class TableSync:
    table: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    target_newer: int = 0
    only_on_target: int = 0
    target_rows_before: int = 0  # counted as the table's sync starts: its rows change only in it
    source_rows: int = 0  # counted as the table's sync starts, for progress
    examined: int = 0  # source rows classified so far
    conflict_count: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    bytes_copied: int = 0
    chunks: int = 0
    seconds: float = 0.0

    def add_conflict(self, conflict: Conflict) -> None:
        self.conflict_count += 1
        if len(self.conflicts) < CONFLICT_EXAMPLES:
            self.conflicts.append(conflict)
