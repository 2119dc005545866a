"""The search domain's definitions: the vector index over every memory."""

from dagster import Definitions

from tinybot_migration.defs.search.assets import search_assets

defs = Definitions(assets=search_assets)
