"""The cutover domain's definitions: the go/no-go verdict, after every other asset."""

from dagster import Definitions

from tinybot_migration.defs.cutover.assets import cutover_assets

defs = Definitions(assets=cutover_assets)
