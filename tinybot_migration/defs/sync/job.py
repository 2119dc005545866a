"""`db_sync`: the DEV ↔ PROD sync as a Dagster job (run config: source, target, dry_run, prefer),
for the UI, schedules and `dg launch --job db_sync`."""

# No `from __future__ import annotations` here: Dagster reads the op's config annotation when decorating.
from dagster import Config, ConfigurableResource, Failure, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.lib.settings import SYNC_SIDES
from tinybot_migration.lib.sync.engine import DEFAULT_BATCH_BYTES, SyncOptions
from tinybot_migration.lib.sync.run import SyncReport, run_sync
from tinybot_migration.lib.sync.summary import summary_markdown

SYNC_POOL = "tinybot_new_database"


class SyncDatabasesResource(ConfigurableResource):
    """The two new databases a sync moves rows between (DEV_DATABASE_URL, PROD_DATABASE_URL)."""

    dev_url: str | None = Field(default=None, description="the DEV new database (env DEV_DATABASE_URL)")
    prod_url: str | None = Field(default=None, description="the PROD new database (env PROD_DATABASE_URL)")

    def environment(self) -> dict[str, str]:
        urls = {"dev": self.dev_url, "prod": self.prod_url}
        return {SYNC_SIDES[side].variable: url for side, url in urls.items() if url}


class SyncConfig(Config):
    source: str = Field(default="dev", description="dev or prod: the side rows are read from (read-only)")
    target: str = Field(default="prod", description="dev or prod: the side rows are written to")
    dry_run: bool = Field(default=False, description="the same summary, nothing written (target read-only)")
    prefer: str = Field(
        default="target", description="who wins an append-only row that differs: target or source"
    )
    batch_mb: float = Field(
        default=DEFAULT_BATCH_BYTES / 2**20,
        gt=0,
        description="rows copied and upserted per transaction, by size (about 10,000 memories of 1536 dimensions)",
    )


def sync_metadata(report: SyncReport) -> dict:
    totals = {
        key: sum(getattr(t, key) for t in report.tables)
        for key in ("inserted", "updated", "unchanged", "target_newer", "conflict_count", "only_on_target")
    }
    return {
        **{f"rows_{key}": value for key, value in totals.items()},
        "dry_run": report.options.dry_run,
        "prefer": report.options.prefer,
        "seconds": round(report.seconds, 2),
        "summary": MetadataValue.md(summary_markdown(report)),
        **({"vector_index": report.index.action} if report.index else {}),
        **({"persona_indexes": report.persona_indexes.count} if report.persona_indexes else {}),
        **{
            f"check_{c.name}": ("passed: " if c.passed else "FAILED: ") + c.description for c in report.checks
        },
    }


@op(pool=SYNC_POOL, description="Sync every table (and the embedding cache) from source to target.")
def sync_databases(
    context: OpExecutionContext, config: SyncConfig, sync_databases: SyncDatabasesResource
) -> None:
    options = SyncOptions(
        dry_run=config.dry_run, prefer=config.prefer, batch_bytes=max(1, int(config.batch_mb * 2**20))
    )
    report = run_sync(
        config.source, config.target, options, progress_of(context), sync_databases.environment()
    )
    context.add_output_metadata(sync_metadata(report))
    failed = [c for c in report.checks if not c.passed]
    if failed:
        raise Failure(
            "the target's checks after the sync failed: "
            + "; ".join(f"{c.name}: {c.description}" for c in failed),
            metadata=sync_metadata(report),
        )


@job(
    description="Sync the new databases DEV ↔ PROD: rows by primary key, newer updated_at wins, "
    "conflicts listed and left alone, nothing deleted; dry_run: true writes nothing."
)
def db_sync():
    sync_databases()
