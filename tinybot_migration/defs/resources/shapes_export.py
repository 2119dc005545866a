"""The shapes.inc export folder as a resource: `<slug>/<slug>_memories.json` per personality and
`uuid-mappings.json` (docs/design.md, "Memories")."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from tinybot_migration.lib.settings import SHAPES_EXPORT_SETTING
from tinybot_migration.lib.shapes.export import export_folder


class ShapesExportResource(ConfigurableResource):
    """The export folder (env `SHAPES_EXPORT_DIR`). Unset, the demo's `$TINYBOT_HOME/shapes_export`
    is used when it exists; when it does not, there is nothing to import (not an error)."""

    path: str | None = Field(default=None, description=f"the export folder (env {SHAPES_EXPORT_SETTING})")

    def folder(self) -> Path | None:
        """The folder to import, or None when nothing is configured and there is no demo export."""
        return export_folder(self.path)

    def describe(self) -> str:
        folder = self.folder()
        return (
            str(folder)
            if folder is not None
            else f"no export ({SHAPES_EXPORT_SETTING} unset, no demo export)"
        )
