"""`rebuilt_memories`: one memory per exchange of the conversation history, embedded and checked.

Partitioned by personality slug (dynamic partitions registered by the `personalities` asset and
the incremental sensor). One run may cover every key (`BackfillPolicy.single_run`): the exchanges
of all its personalities are embedded together, so requests stay full. Figures per personality are
keyed by slug in one table, since a range run copies the same metadata to every partition.
"""

from collections.abc import Iterator
from typing import Literal, TypeVar

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from tinybot_migration.defs.check_results import selected_results
from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.defs.memory_source import MEMORY_ASSET_OPTIONS, failing_clearly
from tinybot_migration.defs.resources import (
    EmbeddingProviderResource,
    NewDatabaseResource,
    OldDatabaseResource,
)
from tinybot_migration.lib.embeddings.cache import cache_model_name
from tinybot_migration.lib.memories.checks import (
    EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS,
    EVERY_EXCHANGE_HAS_ONE_MEMORY,
    MEMORY_CHECK_DESCRIPTIONS,
    NO_DUPLICATE_MEMORIES,
    embeddings_present_with_right_dimensions,
    every_exchange_has_one_memory,
    no_duplicate_memories,
)
from tinybot_migration.lib.memories.coverage import HISTORY_DELTA, HISTORY_FULL
from tinybot_migration.lib.memories.rebuild import RebuildReport, rebuild_memories
from tinybot_migration.lib.memories.writer import SOURCE_BOT, memory_count


class RebuildConfig(Config):
    history: Literal["full", "delta"] = Field(
        default=HISTORY_FULL,
        description="full: pair every message of the personalities (the migration, a reconciliation); "
        "delta: only the contexts that moved since each personality's coverage mark (the incremental "
        "sensor's runs).",
    )


MEMORIES_GROUP = "memories"
PER_PERSONALITY_ROWS = 100

T = TypeVar("T")


def per_personality_table(report: RebuildReport) -> str:
    lines = [
        "| personality | contexts | exchanges | present | written | rejected | waiting |",
        "|---|---|---|---|---|---|---|",
    ]
    ranked = sorted(report.per_personality.items(), key=lambda item: (-item[1].written, item[0]))
    for slug, f in ranked[:PER_PERSONALITY_ROWS]:
        lines.append(
            f"| {slug} | {f.contexts} | {f.exchanges} | {f.already_present} | {f.written} | {f.rejected} | {f.waiting} |"
        )
    if len(ranked) > PER_PERSONALITY_ROWS:
        lines.append(f"| … {len(ranked) - PER_PERSONALITY_ROWS} more | | | | | | |")
    return "\n".join(lines)


def rebuild_metadata(report: RebuildReport, total: int, model: str) -> dict:
    """The figures a rebuild reports in Dagster (per-personality ones in one table keyed by slug)."""
    stats = report.stats
    metadata = {
        "dagster/row_count": total,
        "history": report.history,
        "messages_read": report.messages_read,
        "personalities": len(report.personality_ids),
        "contexts": stats.contexts,
        "exchanges": stats.exchanges,
        "memories_written": report.memories_written,
        "memories_already_present": report.already_present,
        "duplicate_exchanges": report.duplicate_exchanges,
        "unanswered_user_messages": stats.unanswered_user_messages,
        "messages_skipped": MetadataValue.json(
            {
                "empty_or_whitespace": stats.empty_messages_skipped,
                "assistant_without_user": stats.assistant_messages_without_user,
                "system": stats.other_roles_skipped,
            }
        ),
        **report.spend_metadata(model),
        "exchanges_rejected": report.rejected,
        "seconds": round(report.seconds, 3),
        "per_personality": MetadataValue.md(per_personality_table(report)),
    }
    if report.rejection_samples:
        metadata["rejected_examples"] = MetadataValue.md(
            "\n".join(f"- {s}" for s in report.rejection_samples)
        )
    return metadata


REBUILT_MEMORY_CHECKS = (
    EVERY_EXCHANGE_HAS_ONE_MEMORY,
    EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS,
    NO_DUPLICATE_MEMORIES,
)


# A multi_asset of one asset, so that a run may leave its checks out (`can_subset`; an @asset's
# check results are required outputs).
@multi_asset(
    specs=[
        AssetSpec(
            "rebuilt_memories",
            group_name=MEMORIES_GROUP,
            deps=["conversation_history", "personas"],
            skippable=True,
            kinds={"postgres", "openai"},
            description="One memory per exchange of the conversation history, embedded (cached) and "
            "bulk-loaded. Partitioned by personality slug: before the first migration the partitions "
            "are the old DB's slugs (so Materialize all works on a fresh instance), and the "
            "`personalities` asset registers new ones as it copies them (the `memory_bill` job "
            "estimates what it would embed and cost). Run config history: delta (the incremental sensor's runs) pairs "
            "only what came after each personality's coverage mark.",
        )
    ],
    check_specs=[
        AssetCheckSpec(name, asset="rebuilt_memories", description=MEMORY_CHECK_DESCRIPTIONS[name])
        for name in REBUILT_MEMORY_CHECKS
    ],
    **MEMORY_ASSET_OPTIONS,
)
def rebuilt_memories(
    context: AssetExecutionContext,
    config: RebuildConfig,
    new_database: NewDatabaseResource,
    old_database: OldDatabaseResource,
    embedding_provider: EmbeddingProviderResource,
) -> Iterator:
    slugs = list(context.partition_keys)
    model = cache_model_name(embedding_provider.client())
    context.log.info(
        f"rebuilding memories of {len(slugs)} personalities in {new_database.display_url()} with {model}"
    )
    with new_database.connect() as conn:
        report = failing_clearly(
            lambda: rebuild_memories(
                conn,
                embedding_provider.client(),
                slugs,
                log=progress_of(context),
                connect=new_database.connect,
                history=config.history,
            )
        )
        personality_ids = list(report.personality_ids.values())
        # A delta run checks what it paired; a full one every memory of its personalities.
        only = report.expected_ids if config.history == HISTORY_DELTA else None
        outcomes = [
            every_exchange_has_one_memory(conn, report.expected_ids, personality_ids, only_ids=only),
            embeddings_present_with_right_dimensions(
                conn, personality_ids, embedding_provider.dimensions, cache_model=model, only_ids=only
            ),
            no_duplicate_memories(conn, personality_ids, only_ids=only),
        ]
        total = memory_count(conn, personality_ids, SOURCE_BOT)
    yield MaterializeResult(
        asset_key="rebuilt_memories",
        metadata=rebuild_metadata(report, total, model),
        check_results=selected_results(context, outcomes),
    )


memory_assets = [rebuilt_memories]
