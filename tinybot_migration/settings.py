"""Where the project keeps its local state, and the environment variables it reads.

Nothing here is resolved at import: callers ask when they need a value.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

OLD_DATABASE_NAME = "tinybot_old"
NEW_DATABASE_NAME = "tinybot_new"
DAGSTER_DATABASE_NAME = "dagster"


def tinybot_home() -> Path:
    return Path(os.environ.get("TINYBOT_HOME", ".tinybot")).expanduser().resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or tinybot_home() / "dagster").expanduser().resolve()


DEMO_SHAPES_EXPORT_FOLDER = "shapes_export"  # under TINYBOT_HOME


def shapes_export_dir() -> Path:
    """SHAPES_EXPORT_DIR, or where the demo writes its export."""
    return (
        Path(os.environ.get("SHAPES_EXPORT_DIR") or tinybot_home() / DEMO_SHAPES_EXPORT_FOLDER)
        .expanduser()
        .resolve()
    )


DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS = 3600
MINIMUM_MEMORY_REBUILD_INTERVAL_SECONDS = 30


def memory_rebuild_interval_seconds() -> int:
    """MEMORY_REBUILD_INTERVAL_SECONDS, or the default with a warning when the value is unusable.

    Read when the definitions load: raising here would take the whole code location down (the UI
    would show nothing), so a bad value is reported and the default used instead.
    """
    raw = os.environ.get("MEMORY_REBUILD_INTERVAL_SECONDS", "").strip()
    if not raw:
        return DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < MINIMUM_MEMORY_REBUILD_INTERVAL_SECONDS:
        warnings.warn(
            f"MEMORY_REBUILD_INTERVAL_SECONDS must be a whole number of seconds >= "
            f"{MINIMUM_MEMORY_REBUILD_INTERVAL_SECONDS}, got {raw!r}: using the default "
            f"{DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS}",
            SettingWarning,
            stacklevel=2,
        )
        return DEFAULT_MEMORY_REBUILD_INTERVAL_SECONDS
    return value


class SettingWarning(UserWarning):
    """An environment variable holds a value the project cannot use; the default applies."""
