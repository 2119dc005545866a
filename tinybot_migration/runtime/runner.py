"""Running the whole migration from the command line, into the persistent Dagster instance.

Runs execute in process (on 2 cores the multiprocess executor is several times slower, docs/design.md §8)
against the instance prepared by `dagster_instance`, so `tinybot-migration dev` shows them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from dagster import AssetsDefinition, DagsterInstance, Definitions

from tinybot_migration.defs.cli_logger import logger_config, stage_started
from tinybot_migration.defs.stages import MigrationStage, declared_pools, migration_stages
from tinybot_migration.lib.progress import Notice, Progress, quiet
from tinybot_migration.runtime.dagster_instance import initialize_pool_limits, prepare_instance
from tinybot_migration.runtime.run_owners import (
    LAUNCHED_BY_CLI,
    LAUNCHED_BY_TAG,
    OWNER_TAG,
    BlockedStepWatcher,
    PoolWaitTimeout,
    fail_abandoned_runs,
    interrupt_main_thread,
    owner_tag,
    wait_for_pools,
)
from tinybot_migration.runtime.run_report import (
    AssetReport,
    MigrationReport,
    collect,
    failure_text,
    was_interrupted,
)

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
) -> MigrationReport:
    """Materialize every asset the project defines, with every check, and report the results.

    One run per stage of the asset graph (`stages.migration_stages`); a partitioned stage runs once
    over every key registered by then (docs/design.md §8). A failed run stops the ones after it. Runs left
    STARTED by a process that is gone are marked failed first (their slots freed), and a stage
    whose pools have no free slot waits at most `pool_wait_seconds`. With `log_file`, Dagster's
    lines go there and the progress to the CLI's display (`defs/cli_logger.py`) instead of the
    console. (What the memory stages would cost is `memory_bill`, which runs no Dagster run.)
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
        run_config = {"loggers": logger_config(log_level, log_file)}
        for stage in migration_stages(assets):
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
            give_up = GiveUp(log)
            watcher = BlockedStepWatcher(active, run_id, stage.pools, pool_wait_seconds, log, give_up)
            watcher.start()
            stage_started(stage.job_name, len(stage.asset_keys))
            try:
                result = defs.resolve_job_def(stage.job_name).execute_in_process(
                    instance=active,
                    raise_on_error=False,
                    run_config=run_config,
                    tags=tags,
                    run_id=run_id,
                )
            except KeyboardInterrupt:  # between Dagster's own handlers: the run is marked as it ended
                interrupted = give_up.message is None
            finally:
                watcher.stop()
            if give_up.message is not None:
                _fail_if_unfinished(active, run_id, give_up.message)
                success, failure = False, give_up.message
                break
            if interrupted:
                success, failure = False, f"{stage.job_name} interrupted"
                break
            run_ids.append(result.run_id)
            collect(result, reports)
            if was_interrupted(result):
                success, failure, interrupted = False, f"{stage.job_name} interrupted", True
                break
            if not result.success:
                success, failure = False, failure_text(result)
                break
    order = {asset.key.to_user_string(): i for i, asset in enumerate(assets)}
    reports = dict(sorted(reports.items(), key=lambda item: order.get(item[0], len(order))))
    return MigrationReport(
        run_ids, success, reports, time.perf_counter() - started, failure, notes, interrupted
    )


class GiveUp:
    """What a CLI run does when one of its steps waited too long for a pool: say so and interrupt the
    run (Dagster fails it and frees its slots); the runner then reports the message as the failure."""

    def __init__(self, log: Progress) -> None:
        self.log = log
        self.message: str | None = None

    def __call__(self, message: str) -> None:
        self.message = message
        self.log(Notice(message))
        interrupt_main_thread()


def _fail_if_unfinished(instance: DagsterInstance, run_id: str, message: str) -> None:
    """A run stopped from outside that Dagster did not get to mark: failed, its slots freed."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, message=message)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


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
