"""The shapes domain's definitions: the export survey and the legacy memory import."""

from dagster import Definitions

from tinybot_migration.defs.shapes.assets import shapes_assets

defs = Definitions(assets=shapes_assets)
