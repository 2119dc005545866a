"""The persistent Dagster instance under $TINYBOT_HOME, so the UI shows runs the CLI made.

Its run, event and schedule storage live in PostgreSQL (SQLite locks under parallel runs): in the
database named by DAGSTER_STORAGE_URL, or else in the `dagster` database of the embedded server.
Dagster's storage layer needs the psycopg2 dialect in that URL (docs/design.md §8).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dagster import DagsterInstance

from tinybot_migration.lib.database import dagster_dialect
from tinybot_migration.lib.embedded_postgres import embedded_database_url
from tinybot_migration.lib.settings import DAGSTER_STORAGE, dagster_home

STORAGE_URL_ENV = DAGSTER_STORAGE.variable
# Dagster's switch for a range run to record one "materialization planned" event per asset with
# its partitions, instead of one per partition: a run over all 6,700 personalities of scale 100
# spent about 160 s writing 13,400 of them before its first step. The cost: a failed range run
# leaves its partitions missing rather than failed in the UI (the run itself shows the failure).
PLANNED_EVENTS_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
# And its switch to write a range run's per-partition materializations in batches (one INSERT per
# EVENT_BATCH_SIZE) rather than one by one: 1,000 partitions took 22.9 s one by one, 1.4 s batched
# (PostgreSQL storage, this machine); at scale 100 each memory asset's 6,700 took about 160 s.
EVENT_BATCH_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = "1000"

_STORAGE_YAML = f"""
storage:
  postgres:
    postgres_url:
      env: {STORAGE_URL_ENV}
"""


def prepare_instance() -> Path:
    """Point DAGSTER_HOME at the project's instance, writing its dagster.yaml, and return it."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault(PLANNED_EVENTS_ENV, "true")  # inherited by `dev`'s webserver and daemon
    os.environ.setdefault(EVENT_BATCH_ENV, EVENT_BATCH_SIZE)
    if not os.environ.get(STORAGE_URL_ENV):
        os.environ[STORAGE_URL_ENV] = dagster_dialect(embedded_database_url(DAGSTER_STORAGE.embedded))
    template = (Path(__file__).parents[1] / "dagster.yaml").read_text()  # the package root
    config = template + _STORAGE_YAML
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != config:
        # Another process may be preparing the same instance: never let it read half a file.
        partial = target.with_name(f".dagster.yaml.{os.getpid()}")
        partial.write_text(config)
        os.replace(partial, target)
    return home


def initialize_pool_limits(instance: DagsterInstance, pools: Iterable[str]) -> None:
    """Give each pool its default limit before any run claims a slot in it.

    Dagster does this itself when a step first claims a pool, but not safely when two processes do
    it at once on PostgreSQL (the loser's transaction aborts: UniqueViolation or
    InFailedSqlTransaction, and its run fails). Here a loser finds the winner's limit and goes on.
    """
    storage = instance.event_log_storage
    for pool in sorted(set(pools)):
        if pool in storage.get_concurrency_keys():
            continue
        try:
            storage.initialize_concurrency_limit_to_default(pool)
        except Exception:
            if pool not in storage.get_concurrency_keys():
                raise
