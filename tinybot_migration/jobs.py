"""The whole migration as jobs: every unpartitioned asset, then every partitioned one over all keys.

Dynamic partition keys must exist before the run that builds them (DESIGN §8): the first job
materializes the relational tables (whose `personalities` asset registers the personality
partitions); each partitioned job then runs once over every registered key, as one run.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from dagster import AssetsDefinition, PartitionsDefinition, define_asset_job

UNPARTITIONED_MIGRATION_JOB = "migration_unpartitioned"


@dataclass(frozen=True)
class MigrationStage:
    job_name: str
    partitions_def: PartitionsDefinition | None = None


def migration_stages(assets: Sequence[AssetsDefinition]) -> list[MigrationStage]:
    stages = [MigrationStage(UNPARTITIONED_MIGRATION_JOB)]
    seen: dict[str, PartitionsDefinition] = {}
    for asset in assets:
        if asset.partitions_def is not None:
            seen.setdefault(
                getattr(asset.partitions_def, "name", None) or str(asset.partitions_def), asset.partitions_def
            )
    stages += [
        MigrationStage(f"migration_partitioned_{name}", definition) for name, definition in seen.items()
    ]
    return stages


def build_migration_jobs(assets: Sequence[AssetsDefinition]) -> list:
    """One asset job per migration stage; any asset added to the project joins the right one."""
    jobs = []
    for stage in migration_stages(assets):
        members = [a.key for a in assets if a.partitions_def == stage.partitions_def]
        description = (
            "Every unpartitioned asset of the migration, with its checks."
            if stage.partitions_def is None
            else "Every asset partitioned this way, run once over all registered keys."
        )
        jobs.append(define_asset_job(stage.job_name, selection=members, description=description))
    return jobs
