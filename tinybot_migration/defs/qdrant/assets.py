"""`qdrant_points`: every point of the Qdrant store the migration replaces, landed in the new DB
before anything is decided about it (lib/qdrant/landing.py)."""

from dagster import AssetCheckSpec, AssetExecutionContext, MaterializeResult, asset

from tinybot_migration.defs.check_results import check_results
from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.defs.pools import NEW_DATABASE_POOL
from tinybot_migration.defs.resources import NewDatabaseResource, QdrantStoreResource
from tinybot_migration.lib.qdrant.checks import (
    NO_QDRANT,
    QDRANT_CHECK_DESCRIPTIONS,
    every_qdrant_point_landed,
    not_configured,
    qdrant_counts_unchanged_during_read,
)
from tinybot_migration.lib.qdrant.landing import land_qdrant

QDRANT_GROUP = "qdrant"


@asset(
    group_name=QDRANT_GROUP,
    check_specs=[
        AssetCheckSpec(name, asset="qdrant_points", blocking=True, description=description)
        for name, description in QDRANT_CHECK_DESCRIPTIONS.items()
    ],
    pool=NEW_DATABASE_POOL,
    kinds={"qdrant", "postgres"},
    description="Every point of every Qdrant collection (payload, vector, id as text) landed in "
    "tinybot_migration.qdrant_points, each collection read page by page between two exact counts "
    "(qdrant_collections keeps them); a re-run lands nothing twice and changes nothing. With no Qdrant "
    "configured it says so and lands nothing.",
)
def qdrant_points(
    context: AssetExecutionContext, new_database: NewDatabaseResource, qdrant_store: QdrantStoreResource
) -> MaterializeResult:
    progress = progress_of(context)
    with qdrant_store.open(progress) as client:
        if client is None:
            context.log.info(NO_QDRANT)
            return MaterializeResult(
                metadata={"configured": False, "dagster/row_count": 0},
                check_results=check_results(not_configured()),
            )
        with new_database.connect() as conn:
            landing = land_qdrant(client, conn, qdrant_store.page_size, progress)
            outcomes = [
                qdrant_counts_unchanged_during_read(landing),
                every_qdrant_point_landed(conn, landing),
            ]
    context.log.info(
        f"qdrant: {landing.points_read:,} points of {len(landing.collections):,} collections read in "
        f"{landing.seconds:.1f}s, {landing.points_new:,} new, {landing.points_changed:,} changed"
    )
    return MaterializeResult(
        metadata={
            "configured": True,
            "store": qdrant_store.location().describe(),
            "dagster/row_count": landing.points_read,
            "collections": len(landing.collections),
            "points_read": landing.points_read,
            "points_new": landing.points_new,
            "points_changed": landing.points_changed,
            "seconds": round(landing.seconds, 3),
        },
        check_results=check_results(outcomes),
    )


qdrant_assets = [qdrant_points]
