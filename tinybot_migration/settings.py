"""Where the project keeps its local state, and the environment variables it reads.

Nothing here is resolved at import: callers ask when they need a value.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Every environment variable the project reads, with what it means (the README repeats this).
ENVIRONMENT_VARIABLES = {
    "TINYBOT_HOME": "local state: embedded PostgreSQL data, Dagster instance, demo export (default ./.tinybot)",
    "OLD_DATABASE_URL": "old bot database, opened read-only (default: embedded database tinybot_old)",
    "DATABASE_URL": "new database with pgvector (default: embedded database tinybot_new)",
    "DAGSTER_STORAGE_URL": "Dagster's own run storage (default: embedded database dagster)",
    "SHAPES_EXPORT_DIR": "shapes.inc export folder (default: $TINYBOT_HOME/shapes_export)",
    "DAGSTER_HOME": "Dagster instance folder (default: $TINYBOT_HOME/dagster, set by the CLI)",
    "EMBEDDING_PROVIDER": "auto | openai | hash (default auto: openai when OPENAI_API_KEY is set)",
    "EMBEDDING_MODEL": "embedding model (default text-embedding-3-small, 1536 dimensions)",
    "OPENAI_API_KEY": "OpenAI key; never logged",
    "OPENAI_BASE_URL": "any OpenAI-compatible server (default: OpenAI's)",
    "MEMORY_REBUILD_INTERVAL_SECONDS": "how often the incremental memory sensor looks for new exchanges "
    "(default 3600)",
}

OLD_DATABASE_NAME = "tinybot_old"
NEW_DATABASE_NAME = "tinybot_new"
DAGSTER_DATABASE_NAME = "dagster"


def tinybot_home() -> Path:
    return Path(os.environ.get("TINYBOT_HOME", ".tinybot")).expanduser().resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or tinybot_home() / "dagster").expanduser().resolve()


def shapes_export_dir() -> Path:
    return (
        Path(os.environ.get("SHAPES_EXPORT_DIR") or tinybot_home() / "shapes_export").expanduser().resolve()
    )


def redact_url(url: str) -> str:
    """A database URL safe for logs, metadata and errors: the password is replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS = 3600


def memory_rebuild_interval_seconds() -> int:
    raw = os.environ.get("MEMORY_REBUILD_INTERVAL_SECONDS", "").strip()
    if not raw:
        return DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 30:
        raise ValueError(
            f"MEMORY_REBUILD_INTERVAL_SECONDS must be a whole number of seconds >= 30, got {raw!r}"
        )
    return value
