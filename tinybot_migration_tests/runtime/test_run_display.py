"""What a CLI run shows: Dagster's lines in a log file, and to the display the stages, the steps
with their rows and the memory writers' chunks, as they happen; and the two displays themselves."""

import io
from dataclasses import dataclass, field

from dagster import (
    AssetExecutionContext,
    Definitions,
    MaterializeResult,
    asset,
    colored_console_logger,
    instance_for_test,
)
from rich.console import Console

from tinybot_migration.cli import run_progress
from tinybot_migration.cli.run_progress import PlainProgress, RichProgress
from tinybot_migration.defs.cli_logger import CLI_LOGGER, cli_logger, progress_of, show_progress
from tinybot_migration.defs.stages import build_migration_jobs
from tinybot_migration.lib.progress import Advanced, Notice
from tinybot_migration.runtime.runner import run_migration


@dataclass
class Recorder:
    calls: list = field(default_factory=list)

    def stage(self, name, steps):
        self.calls.append(("stage", name, steps))

    def step_done(self, step, rows):
        self.calls.append(("step", step, rows))

    def advanced(self, step, event):
        self.calls.append(("advanced", step, event))

    def notice(self, step, text):
        self.calls.append(("notice", step, text))


def texts(done: int, total: int, per_second: float) -> Advanced:
    return Advanced("memories", done, total, "embedded and written", per_second, "0 cache hits")


HALF, ALL = texts(500, 1000, 2400), texts(1000, 1000, 2500)


def toy_project():
    @asset
    def table() -> MaterializeResult:
        return MaterializeResult(metadata={"dagster/row_count": 14})

    @asset(deps=[table])
    def writer(context: AssetExecutionContext) -> MaterializeResult:
        progress = progress_of(context)
        progress(HALF)
        progress(Notice("the provider answered 429, retry 1 of 6 in 1.0s"))
        # A line that reads like progress is only a line: the display takes events, not text.
        progress("memories: 999/1,000 embedded and written (0 cache hits, 1 requests, 2,400/s)")
        progress(ALL)
        return MaterializeResult(metadata={"dagster/row_count": 1000})

    assets = [table, writer]
    loggers = {"console": colored_console_logger, CLI_LOGGER: cli_logger}
    return Definitions(assets=assets, jobs=build_migration_jobs(assets), loggers=loggers), assets


def test_a_cli_run_logs_to_its_file_and_shows_stages_steps_rows_and_chunks(tmp_path, capsys):
    defs, assets = toy_project()
    log_file = tmp_path / "logs" / "run.log"
    recorder = Recorder()
    with instance_for_test() as instance, show_progress(recorder):
        report = run_migration(defs=defs, assets=assets, instance=instance, log_file=log_file)
    assert report.ok
    assert recorder.calls == [
        ("stage", "migration_stage_1_unpartitioned", 2),
        ("step", "table", 14),
        ("advanced", "writer", HALF),
        ("notice", "writer", "the provider answered 429, retry 1 of 6 in 1.0s"),
        ("advanced", "writer", ALL),
        ("step", "writer", 1000),
    ]
    text = log_file.read_text()
    assert "migration_stage_1_unpartitioned" in text and "memories: 500/1,000 embedded" in text
    captured = capsys.readouterr()
    assert "memories: 500/1,000" not in captured.out + captured.err  # nothing on the console


def test_plain_lines_say_each_stage_and_thin_out_the_rest(monkeypatch):
    out = io.StringIO()
    plain = PlainProgress(Console(file=out, width=200))
    now = [0.0]
    monkeypatch.setattr(run_progress.time, "monotonic", lambda: now[0])

    def at(t: float, call, *args) -> None:
        now[0] = t
        call(*args)

    at(0, plain.stage, "migration_stage_2_personality", 3)  # a stage's start is always said
    at(1, plain.advanced, "rebuilt_memories", texts(100, 1000, 50))  # too soon after
    at(2, plain.advanced, "rebuilt_memories", texts(1000, 1000, 70))  # a step's last chunk is always said
    at(9, plain.advanced, "shapes_memories", texts(300, 5000, 80))  # long enough after
    at(10, plain.step_done, "rebuilt_memories", 1000)  # too soon, and not the stage's last
    at(11, plain.step_done, "shapes_memories", 5000)  # too soon, and not the stage's last
    at(12, plain.step_done, "shapes_export", None)  # the stage's last is always said
    assert out.getvalue().splitlines() == [
        "migration_stage_2_personality: 3 asset(s)",
        "  rebuilt_memories: 1,000/1,000 embedded and written, 70/s",
        "  shapes_memories: 300/5,000 embedded and written, 80/s",
        "  3/3 done (shapes_export)",
    ]


def test_bars_on_a_terminal_count_assets_and_texts_then_disappear():
    out = io.StringIO()
    with RichProgress(Console(file=out, width=120, force_terminal=True)) as bars:
        bars.stage("migration_stage_1_unpartitioned", 2)
        bars.step_done("users", 14)
        bars.advanced("rebuilt_memories", texts(500, 1000, 2400))
        tasks = {task.description: task for task in bars.progress.tasks}
        stage = tasks["migration_stage_1_unpartitioned: users done, 14 rows"]
        chunk = tasks["rebuilt_memories: embedded and written, 2,400/s"]
        assert (stage.completed, stage.total) == (1, 2) and (chunk.completed, chunk.total) == (500, 1000)
    assert bars.progress.live.transient  # the summary after it starts on a clean screen
