"""Check outcomes from the core (`lib.check_outcome`) as Dagster's `AssetCheckResult`s."""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, MetadataValue

from tinybot_migration.lib.check_outcome import CheckOutcome, Markdown


def as_metadata(values: dict) -> dict:
    """Core metadata for Dagster: `Markdown` values render as markdown, the rest as they are."""
    return {k: MetadataValue.md(str(v)) if isinstance(v, Markdown) else v for k, v in values.items()}


def check_result(outcome: CheckOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=outcome.name,
        passed=outcome.passed,
        severity=AssetCheckSeverity(outcome.severity),
        description=outcome.description,
        metadata=as_metadata(outcome.metadata),
    )


def check_results(outcomes: Iterable[CheckOutcome]) -> list[AssetCheckResult]:
    return [check_result(o) for o in outcomes]


def selected_results(
    context: AssetExecutionContext, outcomes: Iterable[CheckOutcome]
) -> list[AssetCheckResult]:
    """The results of the checks this run selected (an asset that can be subset gets only those)."""
    selected = {key.name for key in context.selected_asset_check_keys}
    return check_results(o for o in outcomes if o.name in selected)


def check_specs_for(asset: str, descriptions: dict[str, str], blocking: bool = False) -> list[AssetCheckSpec]:
    """One spec per check of `asset` (name -> description), blocking its downstream assets or not."""
    return [
        AssetCheckSpec(name, asset=asset, blocking=blocking, description=description)
        for name, description in descriptions.items()
    ]
