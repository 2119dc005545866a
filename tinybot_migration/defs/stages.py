"""The whole migration as stages that follow the asset graph: a new stage (one run) each time the
partitioning changes along it.

Dynamic partition keys must exist before the run that builds them (docs/design.md §8), so the relational
tables (whose `personalities` asset registers the personality partitions) run before the memory
assets, and an unpartitioned asset downstream of a partitioned one (the vector index) runs after
them. Each stage is an asset job; a partitioned stage runs once over every registered key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, AssetsDefinition, PartitionsDefinition, define_asset_job


@dataclass(frozen=True)
class MigrationStage:
    number: int
    partitions_def: PartitionsDefinition | None
    asset_keys: tuple[AssetKey, ...] = field(default=())
    pools: tuple[str, ...] = field(default=())  # the pools its assets declare

    @property
    def job_name(self) -> str:
        return f"migration_stage_{self.number}_{partitioning_name(self.partitions_def)}"


def partitioning_name(partitions_def: PartitionsDefinition | None) -> str:
    if partitions_def is None:
        return "unpartitioned"
    return getattr(partitions_def, "name", None) or type(partitions_def).__name__


def topological_order(assets: Sequence[AssetsDefinition]) -> list[AssetsDefinition]:
    """Assets with every upstream asset (among `assets`) first; ties keep the given order."""
    by_key = {key: a for a in assets for key in a.keys}
    placed: set[int] = set()
    ordered: list[AssetsDefinition] = []

    def place(asset: AssetsDefinition, path: tuple[int, ...]) -> None:
        if id(asset) in placed:
            return
        if id(asset) in path:
            raise ValueError(f"the asset graph has a cycle through {asset.key.to_user_string()}")
        for key in sorted(asset.dependency_keys, key=lambda k: k.to_user_string()):
            parent = by_key.get(key)
            if parent is not None and parent is not asset:
                place(parent, (*path, id(asset)))
        placed.add(id(asset))
        ordered.append(asset)

    for asset in assets:
        place(asset, ())
    return ordered


def migration_stages(assets: Sequence[AssetsDefinition]) -> list[MigrationStage]:
    """Each asset in the earliest stage of its partitioning that comes after every stage holding
    one of its upstream assets (the same stage when the upstream shares its partitioning)."""
    by_key = {key: a for a in assets for key in a.keys}
    stage_of: dict[int, int] = {}
    stages: list[tuple[PartitionsDefinition | None, list[AssetsDefinition]]] = []
    for asset in topological_order(assets):
        earliest = 0
        for key in asset.dependency_keys:
            parent = by_key.get(key)
            if parent is None or parent is asset:
                continue
            parent_stage = stage_of[id(parent)]
            same = stages[parent_stage][0] == asset.partitions_def
            earliest = max(earliest, parent_stage if same else parent_stage + 1)
        number = next((n for n in range(earliest, len(stages)) if stages[n][0] == asset.partitions_def), None)
        if number is None:
            number = len(stages)
            stages.append((asset.partitions_def, []))
        stage_of[id(asset)] = number
        stages[number][1].append(asset)
    return [
        MigrationStage(n + 1, definition, tuple(k for a in members for k in a.keys), declared_pools(members))
        for n, (definition, members) in enumerate(stages)
    ]


def declared_pools(assets: Sequence[AssetsDefinition]) -> tuple[str, ...]:
    """The concurrency pools these assets declare, sorted."""
    return tuple(sorted({a.op.pool for a in assets if a.op.pool}))


def build_migration_jobs(assets: Sequence[AssetsDefinition]) -> list:
    """One asset job per migration stage; any asset added to the project joins the right one."""
    jobs = []
    for stage in migration_stages(assets):
        description = (
            f"Migration stage {stage.number}: unpartitioned assets, with their checks."
            if stage.partitions_def is None
            else f"Migration stage {stage.number}: assets partitioned by "
            f"{partitioning_name(stage.partitions_def)}, run once over every registered key."
        )
        jobs.append(
            define_asset_job(stage.job_name, selection=list(stage.asset_keys), description=description)
        )
    return jobs
