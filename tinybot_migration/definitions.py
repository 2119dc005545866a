"""The one Dagster `Definitions` of the project."""

from __future__ import annotations

import os

from dagster import AssetsDefinition, Definitions, EnvVar

import tinybot_migration  # noqa: F401  (warning filters before any decorator runs)
from tinybot_migration.assets.memories import memory_assets
from tinybot_migration.assets.relational import relational_assets
from tinybot_migration.automation import incremental_memory_rebuild_job, memory_rebuild_sensor
from tinybot_migration.jobs import build_migration_jobs
from tinybot_migration.resources import EmbeddingProviderResource, NewDatabaseResource, OldDatabaseResource


def _from_env(name: str) -> EnvVar | None:
    """Bind a setting to its environment variable when one is set (its value is read only at run
    time, and never shown); otherwise the resource's default applies (embedded server, offline
    embedder, default model)."""
    return EnvVar(name) if os.environ.get(name) else None


def _settings_from_env(**names: str) -> dict:
    return {field: env for field, name in names.items() if (env := _from_env(name)) is not None}


ALL_ASSETS: list[AssetsDefinition] = [*relational_assets, *memory_assets]

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[*build_migration_jobs(ALL_ASSETS), incremental_memory_rebuild_job],
    sensors=[memory_rebuild_sensor],
    resources={
        "old_database": OldDatabaseResource(url=_from_env("OLD_DATABASE_URL")),
        "new_database": NewDatabaseResource(url=_from_env("DATABASE_URL")),
        "embedding_provider": EmbeddingProviderResource(
            **_settings_from_env(
                provider="EMBEDDING_PROVIDER",
                model="EMBEDDING_MODEL",
                api_key="OPENAI_API_KEY",
                base_url="OPENAI_BASE_URL",
            )
        ),
    },
)
