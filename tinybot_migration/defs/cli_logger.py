"""What a CLI run shows while it works, and where Dagster's own log lines go instead of the screen.

An asset reports the core's typed progress (`lib.progress`) through `progress_of(context)`: each
event is a line in the run's log, and rides on that log record as itself. `cli_logger` is a Dagster
logger (every job has it besides `console`) that writes Dagster's lines to a log file and hands the
events a person follows to the display the CLI set with `show_progress`: a stage starting, a step
finishing with the rows of the asset it materialized, work advancing (`Advanced`) and notices
(`Notice`), as the objects they are, never parsed back from text. Runs started by the CLI execute
in its process, so the display sees them as they happen; a run started from the UI uses `console`
and is unaffected.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from dagster import Field, InitLoggerContext, OpExecutionContext, logger

from tinybot_migration.lib.progress import Advanced, Event, Notice, Progress

CLI_LOGGER = "tinybot_cli"
ROW_COUNT = "dagster/row_count"
# The log record attribute that carries a progress event (Dagster hands `extra` to its loggers).
PROGRESS_EVENT = "tinybot_progress"


class ProgressDisplay(Protocol):
    def stage(self, name: str, steps: int) -> None: ...
    def step_done(self, step: str, rows: int | None) -> None: ...
    def advanced(self, step: str, event: Advanced) -> None: ...
    def notice(self, step: str, text: str) -> None: ...


_display: list[ProgressDisplay | None] = [None]
_rows: dict[str, int] = {}  # the last row count materialized by each step of the current run


@contextmanager
def show_progress(display: ProgressDisplay):
    """Send the runs' progress to `display` while the block runs (the CLI's runs, in process)."""
    _display[0] = display
    try:
        yield display
    finally:
        _display[0] = None
        _rows.clear()


def stage_started(name: str, steps: int) -> None:
    """The runner announces each stage's run before starting it."""
    if _display[0] is not None:
        _display[0].stage(name, steps)


class ProgressHandler(logging.Handler):
    """Turns Dagster's log records into the display's calls; everything else is ignored."""

    def emit(self, record: logging.LogRecord) -> None:
        display = _display[0]
        meta = getattr(record, "dagster_meta", None)
        if display is None or not meta:
            return
        step = meta.get("step_key") or ""
        event = meta.get("dagster_event")
        if event is None:
            progress = getattr(record, PROGRESS_EVENT, None)
            if isinstance(progress, Advanced):
                display.advanced(step, progress)
            elif isinstance(progress, Notice):
                display.notice(step, progress.text)
            return
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            value = event.event_specific_data.materialization.metadata.get(ROW_COUNT)
            if value is not None:
                _rows[step] = int(getattr(value, "value", value))
        elif kind == "STEP_SUCCESS":
            display.step_done(step, _rows.pop(step, None))


def progress_of(context: OpExecutionContext) -> Progress:
    """The `Progress` an asset hands the core: each event a line of the run's log, carrying the
    event itself for the CLI's display."""

    def report(event: Event) -> None:
        if isinstance(event, Advanced | Notice):
            context.log.info(str(event), extra={PROGRESS_EVENT: event})
        else:
            context.log.info(event)

    return report


_file_handlers: dict[str, logging.FileHandler] = {}
_lock = threading.Lock()


def _file_handler(path: str) -> logging.FileHandler:
    """One handler per log file for the whole CLI process (every stage's run appends to it)."""
    with _lock:
        handler = _file_handlers.get(path)
        if handler is None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
            _file_handlers[path] = handler
        return handler


@logger(
    {
        "log_file": Field(str, description="where Dagster's log lines go"),
        "log_level": Field(str, default_value="INFO", is_required=False),
    },
    description="Dagster's log lines to a file, and progress to the CLI's display (tinybot-migration run/demo).",
)
def cli_logger(init_context: InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    # Every record reaches the display (step events are DEBUG); the file keeps `log_level` and up.
    cli = logging.Logger(CLI_LOGGER, level=logging.DEBUG)
    to_file = _file_handler(config["log_file"])
    to_file.setLevel(logging.getLevelName(config["log_level"].upper()))
    cli.addHandler(to_file)
    cli.addHandler(ProgressHandler())
    return cli


def logger_config(log_level: str | None, log_file: Path | None) -> dict:
    """The run config's loggers: the file and the display when the CLI has a log file, else the
    console at `log_level`."""
    if log_file is not None:
        return {CLI_LOGGER: {"config": {"log_file": str(log_file), "log_level": log_level or "INFO"}}}
    return {"console": {"config": {"log_level": log_level or "INFO"}}}
