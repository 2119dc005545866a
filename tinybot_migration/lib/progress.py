"""How long-running work reports as it goes: typed events sent to a `Progress` callable.

Every long stage (the relational copy, the memory writers, the embedding client, the vector index,
the sync) reports `Advanced` (work done of a total) and `Notice` (something a person may act on
now: a provider retrying, a run waiting for another); any other line is a plain `str`. `str(event)`
is its log line; a display reads the event's fields, never its text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Advanced:
    """`done` of `total` (None when unknown) `unit` of `stage`, at `per_second`."""

    stage: str
    done: int
    total: int | None
    unit: str
    per_second: float = 0.0
    detail: str = ""  # what else is worth saying, e.g. "12 cache hits, 3 requests"

    def __str__(self) -> str:
        total = "" if self.total is None else f"/{self.total:,}"
        detail = f"{self.detail}, " if self.detail else ""
        return f"{self.stage}: {self.done:,}{total} {self.unit} ({detail}{self.per_second:,.0f}/s)"


@dataclass(frozen=True)
class Notice:
    """Something a person may want to act on, shown as it happens even where the log is not."""

    text: str

    def __str__(self) -> str:
        return self.text


Event = str | Advanced | Notice
Progress = Callable[[Event], None]


def quiet(_event: Event) -> None:
    """A `Progress` that drops everything."""


def as_lines(write: Callable[[str], None]) -> Progress:
    """A `Progress` that writes each event's line (`print`, a logger's `info`)."""
    return lambda event: write(str(event))


def rate(done: int, seconds: float) -> float:
    return done / seconds if seconds > 0 else 0.0
