"""The relational domain's definitions: one asset per table, each with its checks, and the sensor
that offers the memory partitions before the first migration."""

from dagster import Definitions

from tinybot_migration.defs.relational.assets import relational_assets
from tinybot_migration.defs.relational.partitions_sensor import personality_partitions_before_first_migration

defs = Definitions(assets=relational_assets, sensors=[personality_partitions_before_first_migration])
