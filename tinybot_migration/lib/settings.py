"""Every environment variable the project reads, and where it keeps its local state: the one place
the code, the checks before a run and the compose test take them from.

Nothing here is resolved at import: callers ask when they need a value.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

OLD_DATABASE_NAME = "tinybot_old"
NEW_DATABASE_NAME = "tinybot_new"
DAGSTER_DATABASE_NAME = "dagster"


@dataclass(frozen=True)
class Database:
    """A database a command uses: the variable that names it and, when that is unset, its database
    on the embedded server (None: it must be set)."""

    variable: str
    role: str
    embedded: str | None = None

    def configured_url(self) -> str | None:
        return os.environ.get(self.variable) or None


OLD_DATABASE = Database("OLD_DATABASE_URL", "old database", OLD_DATABASE_NAME)
NEW_DATABASE = Database("DATABASE_URL", "new database", NEW_DATABASE_NAME)
# Dagster's storage layer wants the psycopg2 dialect in this one (`lib.database.dagster_dialect`).
DAGSTER_STORAGE = Database("DAGSTER_STORAGE_URL", "Dagster run storage", DAGSTER_DATABASE_NAME)
# The two new databases a sync moves rows between, by the side's name.
SYNC_SIDES = {
    "dev": Database("DEV_DATABASE_URL", "DEV new database"),
    "prod": Database("PROD_DATABASE_URL", "PROD new database"),
}
# What a run connects to, checked before it starts.
RUN_DATABASES = (OLD_DATABASE, NEW_DATABASE, DAGSTER_STORAGE)


def tinybot_home() -> Path:
    return Path(os.environ.get("TINYBOT_HOME", ".tinybot")).expanduser().resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or tinybot_home() / "dagster").expanduser().resolve()


DEMO_SHAPES_EXPORT_FOLDER = "shapes_export"  # under TINYBOT_HOME
DEMO_QDRANT_FOLDER = "qdrant_store"  # under TINYBOT_HOME: the demo's local-mode Qdrant store
DEMO_QDRANT_EMBEDDING_MODEL = "hash-1536"  # its vectors are the offline embedder's


def demo_qdrant_dir() -> Path:
    return tinybot_home() / DEMO_QDRANT_FOLDER


SHAPES_EXPORT_SETTING = "SHAPES_EXPORT_DIR"


def configured_shapes_export() -> str | None:
    return os.environ.get(SHAPES_EXPORT_SETTING) or None


def shapes_export_dir() -> Path:
    """SHAPES_EXPORT_DIR, or where the demo writes its export."""
    return (
        Path(configured_shapes_export() or tinybot_home() / DEMO_SHAPES_EXPORT_FOLDER).expanduser().resolve()
    )


DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS = 3600
MINIMUM_MEMORY_REBUILD_INTERVAL_SECONDS = 30
DEFAULT_MEMORY_RECONCILE_INTERVAL_SECONDS = 86400
MINIMUM_MEMORY_RECONCILE_INTERVAL_SECONDS = 60


def memory_rebuild_interval_seconds() -> int:
    """MEMORY_REBUILD_INTERVAL_SECONDS: how often the incremental memory sensor looks."""
    return _seconds_setting(
        "MEMORY_REBUILD_INTERVAL_SECONDS",
        DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS,
        MINIMUM_MEMORY_REBUILD_INTERVAL_SECONDS,
    )


def memory_reconcile_interval_seconds() -> int:
    """MEMORY_RECONCILE_INTERVAL_SECONDS: how often that sensor pairs the whole history instead of
    the delta."""
    return _seconds_setting(
        "MEMORY_RECONCILE_INTERVAL_SECONDS",
        DEFAULT_MEMORY_RECONCILE_INTERVAL_SECONDS,
        MINIMUM_MEMORY_RECONCILE_INTERVAL_SECONDS,
    )


# The embedding client's settings that come from the environment, and their variables (the key is
# a secret: Dagster binds it as an EnvVar, never as a value).
EMBEDDING_ENVIRONMENT = {
    "provider": "EMBEDDING_PROVIDER",
    "model": "EMBEDDING_MODEL",
    "api_key": "OPENAI_API_KEY",
    "base_url": "OPENAI_BASE_URL",
}


def embedding_environment() -> dict[str, str]:
    """The embedding settings the environment sets (field -> value), unset ones left out."""
    return {field: os.environ[name] for field, name in EMBEDDING_ENVIRONMENT.items() if os.environ.get(name)}


# The Qdrant store the migration replaces (lib/qdrant): a server (the key is a secret, bound as an
# EnvVar) or a local-mode store folder.
QDRANT_URL = "QDRANT_URL"
QDRANT_API_KEY = "QDRANT_API_KEY"
QDRANT_PATH = "QDRANT_PATH"
QDRANT_ENVIRONMENT = {"url": QDRANT_URL, "api_key": QDRANT_API_KEY, "path": QDRANT_PATH}


# The model the store's vectors were made with (no payload names it; the bot's default). A vector
# is reused only when this is the model embedding now (lib/qdrant/vectors.py).
QDRANT_EMBEDDING_MODEL = "QDRANT_EMBEDDING_MODEL"
DEFAULT_QDRANT_EMBEDDING_MODEL = "text-embedding-3-small"


def qdrant_environment() -> dict[str, str]:
    """The Qdrant settings the environment sets (field -> value), unset ones left out."""
    return {field: os.environ[name] for field, name in QDRANT_ENVIRONMENT.items() if os.environ.get(name)}


MINIMUM_EMBEDDING_DEADLINE_SECONDS = 5


def embedding_deadline_seconds() -> int | None:
    """EMBEDDING_DEADLINE_SECONDS: how long a provider that stopped answering is waited for (once a
    run), or None for the provider's default."""
    if not os.environ.get("EMBEDDING_DEADLINE_SECONDS", "").strip():
        return None
    return _seconds_setting("EMBEDDING_DEADLINE_SECONDS", 120, MINIMUM_EMBEDDING_DEADLINE_SECONDS)


def _seconds_setting(name: str, default: int, minimum: int) -> int:
    """The variable's whole seconds, or the default with a warning when the value is unusable.

    Read when the definitions load (or a sensor ticks): raising would take the whole code location
    down (the UI would show nothing), so a bad value is reported and the default used instead.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        warnings.warn(
            f"{name} must be a whole number of seconds >= {minimum}, got {raw!r}: using the default {default}",
            SettingWarning,
            stacklevel=3,
        )
        return default
    return value


# Every variable the project reads (the containers set all but the local-only ones), and what it is.
ENVIRONMENT = {
    "TINYBOT_HOME": "local state: the embedded server's data, the Dagster instance, the demo export",
    "DAGSTER_HOME": "the Dagster instance folder",
    OLD_DATABASE.variable: "the old bot database, always opened read-only",
    NEW_DATABASE.variable: "the new database (PostgreSQL with pgvector)",
    DAGSTER_STORAGE.variable: "Dagster's run storage (postgresql+psycopg2://)",
    SHAPES_EXPORT_SETTING: "the shapes.inc export folder",
    **{name: f"the embedding provider's {field}" for field, name in EMBEDDING_ENVIRONMENT.items()},
    "EMBEDDING_DEADLINE_SECONDS": "how long a provider that stopped answering is waited for",
    QDRANT_URL: "the Qdrant server (or Qdrant Cloud) the migration replaces, read only",
    QDRANT_API_KEY: "its API key",
    QDRANT_PATH: "or a Qdrant local-mode store folder, read only",
    QDRANT_EMBEDDING_MODEL: f"the model the store's vectors were made with ({DEFAULT_QDRANT_EMBEDDING_MODEL})",
    "MEMORY_REBUILD_INTERVAL_SECONDS": "how often the incremental memory sensor looks",
    "MEMORY_RECONCILE_INTERVAL_SECONDS": "how often that sensor pairs the whole history",
    **{side.variable: f"the {side.role} a sync moves rows to or from" for side in SYNC_SIDES.values()},
}
# Read only by the CLI and the embedded server, which the containers do not use.
LOCAL_ONLY = {"TINYBOT_HOME", "DAGSTER_HOME", DAGSTER_STORAGE.variable}


class SettingWarning(UserWarning):
    """An environment variable holds a value the project cannot use; the default applies."""
