"""Personality partitions on a fresh instance, before the first migration.

The memory assets are partitioned by personality slug, and the `personalities` asset registers the
slugs as it copies them. Until then an instance has no partition, and "Materialize all" in the UI
would offer the memory assets nothing to launch. This sensor, running by default, registers the
old DB's slugs (the same ones: a slug is copied as it is) on such an instance; once any partition
exists it reads nothing and skips.
"""

from __future__ import annotations

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from tinybot_migration.defs.partitions import personality_partitions
from tinybot_migration.defs.resources import OldDatabaseResource
from tinybot_migration.lib.database import DatabaseConnectionError
from tinybot_migration.lib.personalities import personality_slugs

PARTITIONS_SENSOR_INTERVAL_SECONDS = 30


@sensor(
    minimum_interval_seconds=PARTITIONS_SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Before the first migration: registers the old DB's personality slugs as the memory "
    "assets' partitions, so that Materialize all offers every personality. Skips once any partition "
    "exists (the personalities asset and the incremental memory sensor add new ones).",
)
def personality_partitions_before_first_migration(
    context: SensorEvaluationContext, old_database: OldDatabaseResource
):
    if context.instance.get_dynamic_partitions(personality_partitions.name):
        return SkipReason("personality partitions are registered already")
    try:
        with old_database.connect() as conn:
            slugs = personality_slugs(conn)
    except DatabaseConnectionError as exc:  # its text names the masked URL, never a password
        return SkipReason(str(exc))
    if not slugs:
        return SkipReason(f"the old database {old_database.display_url()} has no personality yet")
    context.log.info(f"registering {len(slugs):,} personality partitions from {old_database.display_url()}")
    return SensorResult(dynamic_partitions_requests=[personality_partitions.build_add_request(slugs)])
