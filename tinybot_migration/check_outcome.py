"""The result of one check function, turned into an `AssetCheckResult` by the asset that runs it."""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import AssetCheckResult, AssetCheckSeverity


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
