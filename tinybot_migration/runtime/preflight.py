"""Every setting a run needs, checked in its first seconds, before anything is written.

A run that would fail at its memory stage for a missing key, or at its first write for a wrong
password, fails here instead: one line per problem, naming the setting and the fix, no retries.
"""

from __future__ import annotations

import os

from tinybot_migration.defs.resources.shapes_export import ShapesExportResource
from tinybot_migration.lib.database import DatabaseConnectionError, open_connection
from tinybot_migration.lib.embeddings.client import EmbeddingSettings
from tinybot_migration.lib.settings import EMBEDDING_ENVIRONMENT
from tinybot_migration.lib.settings import SHAPES_EXPORT_SETTING as SHAPES_SETTING
from tinybot_migration.lib.shapes.export import ShapesExportError

# The databases a run connects to: (variable, role); unset, the embedded server's.
DATABASES = (
    ("OLD_DATABASE_URL", "old database"),
    ("DATABASE_URL", "new database"),
    ("DAGSTER_STORAGE_URL", "Dagster run storage"),
)


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
        ShapesExportResource(path=os.environ.get(SHAPES_SETTING) or None).folder()
    except ShapesExportError as error:
        return [f"{error}: point it at the shapes.inc export, or unset it"]
    return []


def _database_problems() -> list[str]:
    problems = []
    for variable, role in DATABASES:
        url = _url_of(variable)
        try:
            open_connection(url, role).close()
        except DatabaseConnectionError as error:
            where = f"{variable}" if os.environ.get(variable) else f"the embedded server ({variable} unset)"
            problems.append(f"{error} [{where}]")
    return problems


def _url_of(variable: str) -> str:
    """The URL a run will use for `variable`: the environment's, or the embedded server's."""
    from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource
    from tinybot_migration.runtime.dagster_instance import prepare_instance

    if variable == "DAGSTER_STORAGE_URL":
        prepare_instance()  # sets the variable to the embedded server's when it is unset
        return os.environ[variable].replace("postgresql+psycopg2://", "postgresql://", 1)
    resource = OldDatabaseResource if variable == "OLD_DATABASE_URL" else NewDatabaseResource
    return resource(url=os.environ.get(variable) or None).resolved_url()
