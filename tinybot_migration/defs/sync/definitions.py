"""The sync domain's definitions: the db_sync job and the two databases it moves rows between."""

import os

from dagster import Definitions, EnvVar

from tinybot_migration.defs.sync.job import SyncDatabasesResource, db_sync
from tinybot_migration.lib.sync.run import SIDES


def _sync_databases() -> SyncDatabasesResource:
    # Bound to the variables when set (read at run time, never shown); unset, the run says which.
    urls = {f"{side}_url": EnvVar(name) for side, name in SIDES.items() if os.environ.get(name)}
    return SyncDatabasesResource(**urls)


defs = Definitions(jobs=[db_sync], resources={"sync_databases": _sync_databases()})
