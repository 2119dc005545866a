"""`memory_bill`: what the memory assets would embed and what it would cost, as a job for the UI
(`tinybot-migration run --dry-run` prints the same bill without a Dagster run).

It writes nothing and calls no provider (`lib/memory_bill.py`). Each memory asset's estimate is an
observation of that asset, so its page shows the bill next to what its runs spent.
"""

from dagster import AssetObservation, MetadataValue, OpExecutionContext, Output, job, op

from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.defs.resources import (
    EmbeddingProviderResource,
    NewDatabaseResource,
    OldDatabaseResource,
    ShapesExportResource,
)
from tinybot_migration.lib.memory_bill import SHAPES_EXPORT, MemoryBill, estimate_memory_bill


def bill_metadata(bill: MemoryBill) -> dict:
    """The bill's totals, and the export survey's findings when it has any."""
    metadata = {
        "embedding_model": bill.model,
        "texts_to_embed": sum(s["texts_to_embed"] for s in bill.sources.values()),
        "estimated_tokens": sum(s["estimated_tokens"] for s in bill.sources.values()),
        "estimated_cost_usd": round(bill.estimated_cost_usd, 6),
        "memories_to_write": sum(s["memories_to_write"] for s in bill.sources.values()),
        "seconds": round(bill.seconds, 3),
    }
    if bill.findings:
        metadata["findings"] = MetadataValue.md(
            "\n".join(f"- {SHAPES_EXPORT}.{f.name} ({f.severity}): {f.description}" for f in bill.findings)
        )
    return metadata


@op(
    description="Estimate the memory assets' bill: the texts not yet in the embedding cache, their tokens "
    "and USD, per source (the rebuild, shapes.inc), for every personality. Writes nothing; no provider is "
    "called; before the first migration the old database's history and people are read."
)
def estimate_memory_bill_op(
    context: OpExecutionContext,
    new_database: NewDatabaseResource,
    old_database: OldDatabaseResource,
    embedding_provider: EmbeddingProviderResource,
    shapes_export_folder: ShapesExportResource,
):
    with new_database.connect_read_only() as conn:
        bill = estimate_memory_bill(
            conn,
            old_database.connect,
            embedding_provider.client(),
            shapes_export_folder.folder(),
            progress_of(context),
        )
    for asset, figures in bill.sources.items():
        context.log_event(AssetObservation(asset_key=asset, metadata=figures))
    for finding in bill.findings:
        context.log.warning(f"{SHAPES_EXPORT}.{finding.name}: {finding.description}")
    yield Output(None, metadata=bill_metadata(bill))


@job(
    description="What the memory assets would embed and cost (`tinybot-migration run --dry-run` in the UI); "
    "writes nothing, calls no provider."
)
def memory_bill():
    estimate_memory_bill_op()


memory_bill_jobs = [memory_bill]
