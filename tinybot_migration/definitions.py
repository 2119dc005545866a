"""The one Dagster `Definitions` of the project."""

from __future__ import annotations

import os

from dagster import AssetsDefinition, Definitions, EnvVar

import tinybot_migration  # noqa: F401  (warning filters before any decorator runs)
from tinybot_migration.assets.relational import relational_assets
from tinybot_migration.jobs import build_migration_jobs
from tinybot_migration.resources import NewDatabaseResource, OldDatabaseResource


def _url_from_env(name: str) -> EnvVar | None:
    """Bind the URL to its environment variable when one is set (resolved only at run time);
    otherwise the resource falls back to the embedded server."""
    return EnvVar(name) if os.environ.get(name) else None


ALL_ASSETS: list[AssetsDefinition] = [*relational_assets]

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=build_migration_jobs(ALL_ASSETS),
    resources={
        "old_database": OldDatabaseResource(url=_url_from_env("OLD_DATABASE_URL")),
        "new_database": NewDatabaseResource(url=_url_from_env("DATABASE_URL")),
    },
)
