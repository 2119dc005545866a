"""The one Dagster `Definitions` of the project."""

from __future__ import annotations

import os

from dagster import AssetsDefinition, Definitions, EnvVar, define_asset_job

import tinybot_migration  # noqa: F401  (warning filters before any decorator runs)
from tinybot_migration.assets.relational import relational_assets
from tinybot_migration.resources import NewDatabaseResource, OldDatabaseResource


def _url_from_env(name: str) -> EnvVar | None:
    """Bind the URL to its environment variable when one is set (resolved only at run time);
    otherwise the resource falls back to the embedded server."""
    return EnvVar(name) if os.environ.get(name) else None


ALL_ASSETS: list[AssetsDefinition] = [*relational_assets]

# The whole migration is run as an unpartitioned run, then one run over every partition key
# (DESIGN §8); the CLI drives both. Any asset added to ALL_ASSETS joins the right one.
UNPARTITIONED_MIGRATION_JOB = "migration_unpartitioned"
unpartitioned_migration_job = define_asset_job(
    UNPARTITIONED_MIGRATION_JOB,
    selection=[a.key for a in ALL_ASSETS if a.partitions_def is None],
    description="Every unpartitioned asset of the migration, with its checks.",
)

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[unpartitioned_migration_job],
    resources={
        "old_database": OldDatabaseResource(url=_url_from_env("OLD_DATABASE_URL")),
        "new_database": NewDatabaseResource(url=_url_from_env("DATABASE_URL")),
    },
)
