"""The Qdrant domain's definitions: the store the migration replaces, landed and accounted for."""

from dagster import Definitions

from tinybot_migration.defs.qdrant.assets import qdrant_assets

defs = Definitions(assets=qdrant_assets)
