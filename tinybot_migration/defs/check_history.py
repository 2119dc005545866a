"""The latest result of every asset check, read from the Dagster instance: what the cutover
verdict counts as "the checks of the last migration"."""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetCheckKey, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from tinybot_migration.lib.cutover import FailedCheck


def failed_checks(instance: DagsterInstance, keys: Iterable[AssetCheckKey]) -> tuple[list[FailedCheck], int]:
    """(the ERROR checks whose latest result failed, how many checks never ran)."""
    keys = list(keys)
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    failed: list[FailedCheck] = []
    for key in sorted(keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        record = latest.get(key)
        if record is None or record.status != AssetCheckExecutionRecordStatus.FAILED:
            continue
        evaluation = record.event.asset_check_evaluation if record.event else None
        if evaluation is not None and evaluation.severity.value == "WARN":
            continue
        description = (evaluation.description if evaluation else None) or "failed"
        failed.append(FailedCheck(key.asset_key.to_user_string(), key.name, description))
    never = sum(
        1
        for key in keys
        if latest.get(key) is None or latest[key].status == AssetCheckExecutionRecordStatus.PLANNED
    )
    return failed, never
