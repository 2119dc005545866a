"""The CLI's progress while a migration runs: `rich` bars on a terminal, plain lines otherwise.

Both take the calls of `runtime.run_display.ProgressDisplay`: a stage's run starting (with how many
assets it materializes), a step finishing (with its asset's rows), a memory writer's chunk (texts
done of all, and the rate).
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

CHUNK_LINE_SECONDS = 5.0  # plain output: at most one chunk line per step this often (and the last)


def _rows(rows: int | None) -> str:
    return "" if rows is None else f", {rows:,} rows"


class PlainProgress:
    """One line per event, for logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last_chunk: dict[str, float] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def stage(self, name: str, steps: int) -> None:
        self.console.print(f"{name}: {steps} asset(s)", highlight=False)

    def step_done(self, step: str, rows: int | None) -> None:
        self.console.print(f"  {step} done{_rows(rows)}", highlight=False)

    def chunk(self, step: str, done: int, total: int, rate: int) -> None:
        now = time.monotonic()
        last = self._last_chunk.get(step)
        if done < total and last is not None and now - last < CHUNK_LINE_SECONDS:
            return
        self._last_chunk[step] = now
        self.console.print(f"  {step}: {done:,}/{total:,} texts, {rate:,}/s", highlight=False)


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

    def chunk(self, step: str, done: int, total: int, rate: int) -> None:
        task = self._chunks.get(step)
        if task is None:
            task = self._chunks[step] = self.progress.add_task(step, total=total)
        self.progress.update(task, completed=done, total=total, description=f"{step}: texts, {rate:,}/s")


def progress_for(console: Console) -> PlainProgress | RichProgress:
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
