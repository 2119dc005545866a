"""The memories domain's definitions: the rebuild asset, the incremental job and its sensor."""

from dagster import Definitions

from tinybot_migration.defs.memories.assets import memory_assets
from tinybot_migration.defs.memories.sensor import incremental_memory_rebuild_job, memory_rebuild_sensor

defs = Definitions(
    assets=memory_assets, jobs=[incremental_memory_rebuild_job], sensors=[memory_rebuild_sensor]
)
