"""Running the whole migration from the command line, into the persistent Dagster instance.

Runs execute in process (on 2 cores the multiprocess executor is several times slower, docs/design.md §8)
against the instance prepared by `dagster_instance`, so `tinybot-migration dev` shows them.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetKey, AssetsDefinition, DagsterInstance, Definitions

from tinybot_migration.defs.cli_logger import logger_config, stage_started
from tinybot_migration.defs.dry_run import DRY_RUN_TAG, TAKES_CONFIG, dry_run_role
from tinybot_migration.defs.stages import MigrationStage, declared_pools, migration_stages
from tinybot_migration.lib.progress import Progress, quiet
from tinybot_migration.runtime.dagster_instance import initialize_pool_limits, prepare_instance
from tinybot_migration.runtime.run_owners import (
    LAUNCHED_BY_CLI,
    LAUNCHED_BY_TAG,
    OWNER_TAG,
    BlockedStepWatcher,
    PoolWaitTimeout,
    fail_abandoned_runs,
    owner_tag,
    wait_for_pools,
)


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
    dry_run: bool = False
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


def _plain(metadata: Mapping) -> dict:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


DEFAULT_POOL_WAIT_SECONDS = 600
PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"


def run_migration(
    log_level: str = "INFO",
    *,
    log_file: Path | None = None,
    defs: Definitions | None = None,
    assets: Sequence[AssetsDefinition] | None = None,
    instance: DagsterInstance | None = None,
    pool_wait_seconds: float = DEFAULT_POOL_WAIT_SECONDS,
    log: Progress = quiet,
    dry_run: bool = False,
    before_stages: Callable[[DagsterInstance], None] | None = None,
) -> MigrationReport:
    """Materialize every asset the project defines, with every check, and report the results.

    One run per stage of the asset graph (`stages.migration_stages`); a partitioned stage runs once
    over every key registered by then (docs/design.md §8). A failed run stops the ones after it. Runs left
    STARTED by a process that is gone are marked failed first (their slots freed), and a stage
    whose pools have no free slot waits at most `pool_wait_seconds`. With `dry_run`, each stage
    runs only its assets that take part in a dry run (`dry_run.py`), and nothing is written.
    `before_stages` gets the instance before the first stage (the CLI registers partitions there
    for a dry run before the first migration). With `log_file`, Dagster's lines go there and the
    progress to the CLI's display (`defs/cli_logger.py`) instead of the console.
    """
    started = time.perf_counter()
    if defs is None:
        prepare_instance()
        from tinybot_migration.definitions import ALL_ASSETS, defs

        assets = ALL_ASSETS
    assert assets is not None, "pass the assets of the given definitions"
    reports: dict[str, AssetReport] = {}
    run_ids: list[str] = []
    success, failure, notes, interrupted = True, None, [], False
    with nullcontext(instance) if instance is not None else DagsterInstance.get() as active:
        initialize_pool_limits(active, declared_pools(assets))
        notes += [
            f"run {run.run_id} was left STARTED by a process that is gone ({run.owner}): marked failed"
            for run in fail_abandoned_runs(active, log)
        ]
        if before_stages is not None:
            before_stages(active)
        by_key = {key: asset for asset in assets for key in asset.keys}
        for stage in migration_stages(assets):
            selection, run_config = stage_selection(
                stage, by_key, logger_config(log_level, log_file), dry_run
            )
            if not selection:
                continue
            tags = stage_run_tags(stage, active)
            if tags is None:
                notes.append(
                    f"{stage.job_name}: no {stage.partitions_def.name} partitions registered, skipped"
                )
                continue
            try:
                wait_for_pools(active, stage.pools, pool_wait_seconds, log)
            except PoolWaitTimeout as error:
                success, failure = False, f"{stage.job_name} not started: {error}"
                break
            run_id = str(uuid.uuid4())
            watcher = BlockedStepWatcher(
                active, run_id, stage.pools, pool_wait_seconds, log, stop_process(active, run_id, log)
            )
            watcher.start()
            stage_started(stage.job_name, len(selection))
            try:
                result = defs.resolve_job_def(stage.job_name).execute_in_process(
                    instance=active,
                    raise_on_error=False,
                    run_config=run_config,
                    tags=tags | ({DRY_RUN_TAG: "true"} if dry_run else {}),
                    run_id=run_id,
                    asset_selection=selection if dry_run else None,
                )
            except KeyboardInterrupt:  # between Dagster's own handlers: the run is marked as it ended
                interrupted = True
            finally:
                watcher.stop()
            if interrupted:
                success, failure = False, f"{stage.job_name} interrupted"
                break
            run_ids.append(result.run_id)
            _collect(result, reports)
            if was_interrupted(result):
                success, failure, interrupted = False, f"{stage.job_name} interrupted", True
                break
            if not result.success:
                success, failure = False, _failure_text(result)
                break
    order = {asset.key.to_user_string(): i for i, asset in enumerate(assets)}
    reports = dict(sorted(reports.items(), key=lambda item: order.get(item[0], len(order))))
    return MigrationReport(
        run_ids, success, reports, time.perf_counter() - started, failure, notes, dry_run, interrupted
    )


def stage_selection(
    stage: MigrationStage, by_key: Mapping[AssetKey, AssetsDefinition], loggers: dict, dry_run: bool
) -> tuple[list[AssetKey], dict]:
    """The assets a stage's run covers and its run config: all of them, or for a dry run those
    that take part in one (the ones taking `DryRunConfig` told so)."""
    run_config: dict = {"loggers": loggers}
    if not dry_run:
        return list(stage.asset_keys), run_config
    selection = [key for key in stage.asset_keys if dry_run_role(by_key[key]) is not None]
    run_config["ops"] = {
        by_key[key].op.name: {"config": {"dry_run": True}}
        for key in selection
        if dry_run_role(by_key[key]) == TAKES_CONFIG
    }
    return selection, run_config


def stop_process(instance: DagsterInstance, run_id: str, log: Progress):
    """What a CLI run does when one of its steps waited too long for a pool: say so, mark the run
    failed (freeing its slots), and exit 1 (an in-process run cannot be interrupted otherwise)."""

    def give_up(message: str) -> None:
        log(message)
        try:
            run = instance.get_run_by_id(run_id)
            if run is not None:
                instance.report_run_failed(run, message=message)
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        finally:  # left STARTED if the storage failed too: the next run marks it failed
            sys.stdout.flush()
            os._exit(1)

    return give_up


def stage_run_tags(stage: MigrationStage, instance: DagsterInstance) -> dict[str, str] | None:
    """The tags of a stage's run: a partitioned stage covers every registered key as one range
    (None when there is none yet)."""
    tags = {LAUNCHED_BY_TAG: LAUNCHED_BY_CLI, OWNER_TAG: owner_tag()}
    if stage.partitions_def is None:
        return tags
    # Registration order, as the instance returns it: a reversed range builds nothing.
    keys = instance.get_dynamic_partitions(stage.partitions_def.name)
    if not keys:
        return None
    return tags | {PARTITION_RANGE_START: keys[0], PARTITION_RANGE_END: keys[-1]}


def _collect(result, reports: dict[str, AssetReport]) -> None:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        name = materialization.asset_key.to_user_string()
        reports.setdefault(name, AssetReport(name)).metadata = _plain(materialization.metadata)
    for event in result.get_asset_observation_events():  # a dry run observes instead
        observation = event.asset_observation_data.asset_observation
        name = observation.asset_key.to_user_string()
        reports.setdefault(name, AssetReport(name)).metadata = _plain(observation.metadata)
    for evaluation in result.get_asset_check_evaluations():
        name = evaluation.asset_key.to_user_string()
        reports.setdefault(name, AssetReport(name)).checks.append(
            CheckReport(
                name,
                evaluation.check_name,
                evaluation.passed,
                evaluation.description or "",
                _plain(evaluation.metadata),
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


def _failure_text(result) -> str:
    failed_steps = [
        f"{e.step_key}: {_root_cause(e.step_failure_data.error)}"
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    ]
    return "; ".join(failed_steps) or f"run {result.run_id} failed (see the Dagster UI)"
