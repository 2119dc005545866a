"""The relational domain's definitions: one asset per table, each with its checks."""

from dagster import Definitions

from tinybot_migration.relational.assets import relational_assets

defs = Definitions(assets=relational_assets)
