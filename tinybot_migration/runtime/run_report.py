"""What a migration's runs leave to report: per asset its metadata and checks, the failure in a
line, whether it was interrupted; read from Dagster's results, for the CLI's summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class CheckReport:
    asset: str
    name: str
    passed: bool
    description: str
    metadata: dict
    severity: str = "ERROR"  # a failed WARN check is reported and does not fail the migration


@dataclass
class AssetReport:
    asset: str
    metadata: dict = field(default_factory=dict)
    checks: list[CheckReport] = field(default_factory=list)


@dataclass
class MigrationReport:
    run_ids: list[str]
    success: bool
    assets: dict[str, AssetReport]
    seconds: float
    failure: str | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False  # SIGINT or SIGTERM stopped it; a re-run resumes

    @property
    def checks(self) -> list[CheckReport]:
        return [c for a in self.assets.values() for c in a.checks]

    @property
    def failed_checks(self) -> list[CheckReport]:
        return [c for c in self.checks if not c.passed and c.severity != "WARN"]

    @property
    def warnings(self) -> list[CheckReport]:
        return [c for c in self.checks if not c.passed and c.severity == "WARN"]

    @property
    def ok(self) -> bool:
        return self.success and not self.failed_checks


def plain(metadata: Mapping) -> dict:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def collect(result, reports: dict[str, AssetReport]) -> None:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        name = materialization.asset_key.to_user_string()
        reports.setdefault(name, AssetReport(name)).metadata = plain(materialization.metadata)
    for evaluation in result.get_asset_check_evaluations():
        name = evaluation.asset_key.to_user_string()
        reports.setdefault(name, AssetReport(name)).checks.append(
            CheckReport(
                name,
                evaluation.check_name,
                evaluation.passed,
                evaluation.description or "",
                plain(evaluation.metadata),
                evaluation.severity.value,
            )
        )


def was_interrupted(result) -> bool:
    """Whether SIGINT or SIGTERM stopped the run: Dagster then fails the step it was in as an
    interrupt, or ends the run between steps."""
    return any(
        (event.is_step_failure and _error_classes(event.step_failure_data.error) & INTERRUPTS)
        or (event.event_type_value == "ENGINE_EVENT" and "interrupted" in (event.message or ""))
        for event in result.all_events
    )


INTERRUPTS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}


def _error_classes(error) -> set[str]:
    classes = set()
    while error is not None:
        classes.add(error.cls_name)
        error = error.cause
    return classes


def _root_cause(error) -> str:
    """The innermost error's message: Dagster wraps the asset's own error in its step error."""
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    # Dagster prefixes the class's dotted path ("dagster._core.definitions.events.Failure: …").
    prefix, _, rest = message.partition(": ")
    return rest if rest and prefix.split(".")[-1] == error.cls_name else message


def failure_text(result) -> str:
    failed_steps = [
        f"{e.step_key}: {_root_cause(e.step_failure_data.error)}"
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    ]
    return "; ".join(failed_steps) or f"run {result.run_id} failed (see the Dagster UI)"
