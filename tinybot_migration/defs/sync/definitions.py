"""The sync domain's definitions: the db_sync job and the two databases it moves rows between."""

from dagster import Definitions, EnvVar

from tinybot_migration.defs.sync.job import SyncDatabasesResource, db_sync
from tinybot_migration.lib.settings import SYNC_SIDES


def _sync_databases() -> SyncDatabasesResource:
    # Bound to the variables when set (read at run time, never shown); unset, the run says which.
    urls = {f"{side}_url": EnvVar(db.variable) for side, db in SYNC_SIDES.items() if db.configured_url()}
    return SyncDatabasesResource(**urls)


defs = Definitions(jobs=[db_sync], resources={"sync_databases": _sync_databases()})
