"""The CLI's progress while a migration runs: `rich` bars on a terminal, plain lines otherwise.

Both take the calls of `defs.cli_logger.ProgressDisplay`: a stage's run starting (with how many
assets it materializes), a step finishing (with its asset's rows), work advancing (the core's
`Advanced`: done of total, the rate) and notices.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from tinybot_migration.lib.progress import Advanced

LINE_SECONDS = 5.0  # plain output: at most one line this often, besides each stage's first and last


def _rows(rows: int | None) -> str:
    return "" if rows is None else f", {rows:,} rows"


class PlainProgress:
    """Lines for logs and pipes, thinned out so that a fast run stays short: each stage's start and
    end, each memory step's last chunk, and in between at most one line every LINE_SECONDS."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last_line = 0.0
        self._steps = 0
        self._done = 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def stage(self, name: str, steps: int) -> None:
        self._steps, self._done = steps, 0
        self._say(f"{name}: {steps} asset(s)")

    def step_done(self, step: str, rows: int | None) -> None:
        self._done += 1
        if self._done >= self._steps or self._due():
            self._say(f"  {self._done}/{self._steps} done ({step}{_rows(rows)})")

    def advanced(self, step: str, event: Advanced) -> None:
        finished = event.total is not None and event.done >= event.total
        if finished or self._due():
            total = "" if event.total is None else f"/{event.total:,}"
            self._say(f"  {step}: {event.done:,}{total} {event.unit}, {event.per_second:,.0f}/s")

    def notice(self, step: str, text: str) -> None:
        self._say(f"  {step}: {text}")

    def _due(self) -> bool:
        return time.monotonic() - self._last_line >= LINE_SECONDS

    def _say(self, line: str) -> None:
        self._last_line = time.monotonic()
        self.console.print(line, highlight=False)


class RichProgress:
    """A bar per stage (its assets) and per memory step (its texts); gone once the run ends, so the
    summary that follows stays on one screen."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._stage: TaskID | None = None
        self._stage_name = ""
        self._chunks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stage(self, name: str, steps: int) -> None:
        if self._stage is not None:
            self.progress.update(self._stage, visible=False)
        self._stage_name = name
        self._stage = self.progress.add_task(name, total=steps)

    def step_done(self, step: str, rows: int | None) -> None:
        if self._stage is not None:
            self.progress.update(
                self._stage, advance=1, description=f"{self._stage_name}: {step} done{_rows(rows)}"
            )

    def advanced(self, step: str, event: Advanced) -> None:
        task = self._chunks.get(step)
        if task is None:
            task = self._chunks[step] = self.progress.add_task(step, total=event.total)
        self.progress.update(
            task,
            completed=event.done,
            total=event.total,
            description=f"{step}: {event.unit}, {event.per_second:,.0f}/s",
        )

    def notice(self, step: str, text: str) -> None:
        self.progress.console.print(f"{step}: {text}", highlight=False)  # above the bars, and it stays


def progress_for(console: Console) -> PlainProgress | RichProgress:
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
