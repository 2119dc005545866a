"""Keeping memories current after cutover: the incremental rebuild job and the sensor that starts it.

A sensor rather than a schedule (DESIGN §8): it registers personalities that appeared since the
migration as partitions, which a schedule cannot, and requests one run per personality with
answers no memory covers yet. Run keys carry the count and newest time of those answers, so an
unchanged personality is never run twice and a trailing user message starts nothing until its
answer arrives. Stopped by default: turn it on at cutover (README runbook).
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from tinybot_migration.assets.memories import rebuilt_memories
from tinybot_migration.memory_pairing import UNCOVERED_ANSWERS_SQL
from tinybot_migration.partitions import personality_partitions, unregistered_personality_slugs
from tinybot_migration.resources import NewDatabaseResource
from tinybot_migration.settings import memory_rebuild_interval_seconds

INCREMENTAL_MEMORY_JOB = "incremental_memory_rebuild"

incremental_memory_rebuild_job = define_asset_job(
    INCREMENTAL_MEMORY_JOB,
    selection=[rebuilt_memories],
    description="Embed and write the memories of new exchanges, one personality per run.",
)


@sensor(
    job=incremental_memory_rebuild_job,
    minimum_interval_seconds=memory_rebuild_interval_seconds(),
    default_status=DefaultSensorStatus.STOPPED,
    description="Hourly by default (MEMORY_REBUILD_INTERVAL_SECONDS): one run per personality with "
    "answered exchanges that have no memory yet; registers new personalities as partitions.",
)
def memory_rebuild_sensor(context: SensorEvaluationContext, new_database: NewDatabaseResource):
    with new_database.connect() as conn:
        new_slugs = unregistered_personality_slugs(conn, context.instance)
        uncovered = conn.execute(UNCOVERED_ANSWERS_SQL).fetchall()
    run_requests = [
        RunRequest(
            run_key=f"{slug}:{answers}:{newest.isoformat()}",
            partition_key=slug,
            tags={"tinybot/uncovered_answers": str(answers)},
        )
        for slug, answers, newest in uncovered
    ]
    if run_requests:
        context.log.info(
            f"{len(run_requests)} personalities with new exchanges: "
            + ", ".join(f"{slug} ({answers})" for slug, answers, _ in uncovered[:10])
        )
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[personality_partitions.build_add_request(new_slugs)]
        if new_slugs
        else [],
    )
