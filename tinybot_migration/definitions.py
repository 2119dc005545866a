"""The one Dagster `Definitions` of the project, assembled from each domain's definitions."""

from __future__ import annotations

import os

from dagster import AssetsDefinition, Definitions, EnvVar, colored_console_logger

import tinybot_migration  # noqa: F401  (warning filters before any decorator runs)
from tinybot_migration.defs.cli_logger import CLI_LOGGER, cli_logger
from tinybot_migration.defs.cutover import definitions as cutover
from tinybot_migration.defs.cutover.assets import MigrationChecksResource
from tinybot_migration.defs.memories import definitions as memories
from tinybot_migration.defs.memory_bill import memory_bill_jobs
from tinybot_migration.defs.qdrant import definitions as qdrant
from tinybot_migration.defs.relational import definitions as relational
from tinybot_migration.defs.resources import (
    EmbeddingProviderResource,
    NewDatabaseResource,
    OldDatabaseResource,
    QdrantStoreResource,
    ShapesExportResource,
)
from tinybot_migration.defs.search import definitions as search
from tinybot_migration.defs.shapes import definitions as shapes
from tinybot_migration.defs.stages import build_migration_jobs
from tinybot_migration.defs.sync import definitions as sync
from tinybot_migration.lib.embeddings.client import numbers_from_environment
from tinybot_migration.lib.settings import (
    EMBEDDING_ENVIRONMENT,
    NEW_DATABASE,
    OLD_DATABASE,
    QDRANT_EMBEDDING_MODEL,
    QDRANT_ENVIRONMENT,
    SHAPES_EXPORT_SETTING,
)

# Each domain's definitions module, in pipeline order (only `defs` below may be a module-level
# Definitions object, or the Dagster CLIs refuse to load this module).
DOMAINS = (relational, memories, shapes, search, qdrant, cutover)


def _from_env(name: str) -> EnvVar | None:
    """Bind a setting to its environment variable when one is set (its value is read only at run
    time, and never shown); otherwise the resource's default applies (embedded server, offline
    embedder, default model)."""
    return EnvVar(name) if os.environ.get(name) else None


def _settings_from_env(**names: str) -> dict:
    return {field: env for field, name in names.items() if (env := _from_env(name)) is not None}


ALL_ASSETS: list[AssetsDefinition] = [a for domain in DOMAINS for a in domain.defs.assets]

defs = Definitions.merge(
    *(domain.defs for domain in DOMAINS),
    sync.defs,  # a job between two new databases, outside the migration's stages
    Definitions(
        jobs=[*build_migration_jobs(ALL_ASSETS), *memory_bill_jobs],
        # The console for runs from the UI; the CLI's runs log to a file and show progress instead.
        loggers={"console": colored_console_logger, CLI_LOGGER: cli_logger},
        resources={
            "old_database": OldDatabaseResource(url=_from_env(OLD_DATABASE.variable)),
            "new_database": NewDatabaseResource(url=_from_env(NEW_DATABASE.variable)),
            "shapes_export_folder": ShapesExportResource(path=_from_env(SHAPES_EXPORT_SETTING)),
            "embedding_provider": EmbeddingProviderResource(
                **_settings_from_env(**EMBEDDING_ENVIRONMENT), **numbers_from_environment()
            ),
            "migration_checks": MigrationChecksResource(
                checks=[key.to_user_string() for asset in ALL_ASSETS for key in asset.check_keys]
            ),
            "qdrant_store": QdrantStoreResource(
                **_settings_from_env(**QDRANT_ENVIRONMENT, embedding_model=QDRANT_EMBEDDING_MODEL)
            ),
        },
    ),
)
