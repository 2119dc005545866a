"""The CLI's summary, printed from a report (no run needed)."""

from __future__ import annotations

from rich.console import Console

from tinybot_migration.cli import summary
from tinybot_migration.runtime.run_report import MigrationReport


def printed(report: MigrationReport, monkeypatch) -> str:
    console = Console(width=140, record=True, force_terminal=False)
    monkeypatch.setattr(summary, "console", console)
    summary.print_summary(report)
    return console.export_text()


def test_a_run_that_failed_before_any_step_prints_its_cause_without_an_empty_table(monkeypatch):
    report = MigrationReport([], False, {}, 0.4, "migration_stage_2_personality not started: no free slot")
    text = printed(report, monkeypatch)
    assert "asset" not in text and "┏" not in text
    assert "run failed: migration_stage_2_personality not started: no free slot" in text


def test_an_interrupted_run_says_what_to_do_next(monkeypatch):
    report = MigrationReport(
        [], False, {}, 4.3, "migration_stage_2_personality interrupted", interrupted=True
    )
    text = " ".join(printed(report, monkeypatch).split())
    assert "interrupted: migration_stage_2_personality interrupted." in text
    assert "run `tinybot-migration run` again to resume" in text and "run failed" not in text
