"""Every setting a run needs, checked in its first seconds, before anything is written.

A run that would fail at its memory stage for a missing key, or at its first write for a wrong
password, fails here instead: one line per problem, naming the setting and the fix, no retries.
"""

from __future__ import annotations

from tinybot_migration.lib.database import DatabaseConnectionError, open_connection, url_of
from tinybot_migration.lib.embeddings.client import EmbeddingSettings
from tinybot_migration.lib.settings import (
    DAGSTER_STORAGE,
    EMBEDDING_ENVIRONMENT,
    RUN_DATABASES,
    configured_shapes_export,
)
from tinybot_migration.lib.shapes.export import ShapesExportError, export_folder
from tinybot_migration.runtime.dagster_instance import prepare_instance


def configuration_problems() -> list[str]:
    """What keeps a run from working, each one line; empty when it can start."""
    return [*_provider_problems(), *_export_problems(), *_database_problems()]


def _provider_problems() -> list[str]:
    try:
        EmbeddingSettings.from_environment().effective_provider()
    except ValueError as error:
        return [f"{error} ({', '.join(EMBEDDING_ENVIRONMENT.values())} are read from the environment)"]
    return []


def _export_problems() -> list[str]:
    try:
        export_folder(configured_shapes_export())
    except ShapesExportError as error:
        return [f"{error}: point it at the shapes.inc export, or unset it"]
    return []


def _database_problems() -> list[str]:
    problems = []
    for database in RUN_DATABASES:
        where = (
            database.variable
            if database.configured_url()
            else f"the embedded server ({database.variable} unset)"
        )
        try:
            if database is DAGSTER_STORAGE:
                prepare_instance()  # sets the variable to the embedded server's when it is unset
            open_connection(url_of(database), database.role).close()
        except DatabaseConnectionError as error:
            problems.append(f"{error} [{where}]")
    return problems
