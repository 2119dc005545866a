"""The result of one check function, turned into an `AssetCheckResult` by the asset that runs it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR

    def as_result(self) -> AssetCheckResult:
        return AssetCheckResult(
            check_name=self.name,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=self.metadata,
        )


def selected_results(
    context: AssetExecutionContext, outcomes: Iterable[CheckOutcome]
) -> list[AssetCheckResult]:
    """The results of the checks this run selected (an asset that can be subset gets only those)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    return [o.as_result() for o in outcomes if o.name in selected]
