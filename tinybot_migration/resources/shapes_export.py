"""The shapes.inc export: a folder with `<slug>/<slug>_memories.json` per personality and
`uuid-mappings.json` (DESIGN §4)."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from tinybot_migration.settings import DEMO_SHAPES_EXPORT_FOLDER, tinybot_home

SETTING = "SHAPES_EXPORT_DIR"


class ShapesExportError(ValueError):
    """The export cannot be read at all (a set path that does not exist, a malformed mapping file)."""


class ShapesExportResource(ConfigurableResource):
    """The export folder (env `SHAPES_EXPORT_DIR`). Unset, the demo's `$TINYBOT_HOME/shapes_export`
    is used when it exists; when it does not, there is nothing to import (not an error)."""

    path: str | None = Field(default=None, description=f"the export folder (env {SETTING})")

    def folder(self) -> Path | None:
        """The folder to import, or None when nothing is configured and there is no demo export."""
        if self.path:
            folder = Path(self.path).expanduser()
            if not folder.exists():
                raise ShapesExportError(f"{SETTING} is set to {folder}, which does not exist")
            if not folder.is_dir():
                raise ShapesExportError(f"{SETTING} is set to {folder}, which is not a folder")
            return folder.resolve()
        demo = tinybot_home() / DEMO_SHAPES_EXPORT_FOLDER
        return demo if demo.is_dir() else None

    def describe(self) -> str:
        folder = self.folder()
        return str(folder) if folder is not None else f"no export ({SETTING} unset, no demo export)"
