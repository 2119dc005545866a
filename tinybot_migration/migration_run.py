"""Running the whole migration from the command line, into the persistent Dagster instance.

Runs execute in process (on 2 cores the multiprocess executor is several times slower, DESIGN §8)
against the instance prepared by `dagster_instance`, so `tinybot-migration dev` shows them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from dagster import DagsterInstance

from tinybot_migration.dagster_instance import prepare_instance


@dataclass
class CheckReport:
    asset: str
    name: str
    passed: bool
    description: str
    metadata: dict


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

    @property
    def checks(self) -> list[CheckReport]:
        return [c for a in self.assets.values() for c in a.checks]

    @property
    def failed_checks(self) -> list[CheckReport]:
        return [c for c in self.checks if not c.passed]

    @property
    def ok(self) -> bool:
        return self.success and not self.failed_checks


def _plain(metadata: Mapping) -> dict:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def run_migration(log_level: str = "INFO") -> MigrationReport:
    """Materialize every asset the project defines, with every check, and report the results."""
    started = time.perf_counter()
    prepare_instance()
    from tinybot_migration.definitions import ALL_ASSETS, UNPARTITIONED_MIGRATION_JOB, defs

    reports: dict[str, AssetReport] = {}
    run_ids: list[str] = []
    with DagsterInstance.get() as instance:
        job = defs.resolve_job_def(UNPARTITIONED_MIGRATION_JOB)
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            tags={"tinybot/launched_by": "tinybot-migration run"},
        )
        run_ids.append(result.run_id)
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            name = materialization.asset_key.to_user_string()
            reports.setdefault(name, AssetReport(name)).metadata = _plain(materialization.metadata)
        for evaluation in result.get_asset_check_evaluations():
            name = evaluation.asset_key.to_user_string()
            reports.setdefault(name, AssetReport(name)).checks.append(
                CheckReport(
                    name,
                    evaluation.check_name,
                    evaluation.passed,
                    evaluation.description or "",
                    _plain(evaluation.metadata),
                )
            )
        failure = None
        if not result.success:
            failed_steps = [
                f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
                for e in result.all_events
                if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
            ]
            failure = "; ".join(failed_steps) or "the run failed (see the Dagster UI)"
    order = {asset.key.to_user_string(): i for i, asset in enumerate(ALL_ASSETS)}
    reports = dict(sorted(reports.items(), key=lambda item: order.get(item[0], len(order))))
    return MigrationReport(run_ids, result.success, reports, time.perf_counter() - started, failure)
