"""`qdrant_points`: every point of the Qdrant store the migration replaces, landed in the new DB
before anything is decided about it (lib/qdrant/landing.py); `qdrant_point_outcomes`: one outcome
for each landed point, per personality, the Qdrant-only memories imported (lib/qdrant/outcomes.py)."""

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from qdrant_client import QdrantClient

from tinybot_migration.defs.check_results import check_results, check_specs_for, selected_results
from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.defs.memory_source import MEMORY_ASSET_OPTIONS, failing_clearly
from tinybot_migration.defs.pools import EMBEDDING_POOL, NEW_DATABASE_POOL
from tinybot_migration.defs.resources import (
    EmbeddingProviderResource,
    NewDatabaseResource,
    OldDatabaseResource,
    QdrantStoreResource,
)
from tinybot_migration.defs.resources.shapes_export import ShapesExportResource
from tinybot_migration.lib.embeddings.cache import cache_model_name
from tinybot_migration.lib.personalities import personality_ids_for
from tinybot_migration.lib.qdrant.checks import (
    NO_POINTS_LANDED,
    NO_QDRANT,
    QDRANT_CHECK_DESCRIPTIONS,
    QDRANT_OUTCOME_CHECK_DESCRIPTIONS,
    QDRANT_PARITY_CHECK_DESCRIPTIONS,
    QDRANT_VECTOR_CHECK_DESCRIPTIONS,
    every_qdrant_point_has_one_outcome,
    every_qdrant_point_landed,
    not_configured,
    nothing_landed,
    parity_markdown,
    qdrant_counts_unchanged_during_read,
    qdrant_vector_classes_agree,
    retrieval_parity_nothing_missing,
)
from tinybot_migration.lib.qdrant.landing import land_qdrant
from tinybot_migration.lib.qdrant.outcomes import (
    OUTCOMES,
    QdrantOutcomesReport,
    decide_qdrant_points,
    has_landed_points,
)
from tinybot_migration.lib.qdrant.parity import HIT_CLASSES, measure_parity
from tinybot_migration.lib.qdrant.source import QdrantSourceError
from tinybot_migration.lib.qdrant.vectors import VectorReuse, prove_and_seed
from tinybot_migration.lib.shapes.export import ShapesExportError

QDRANT_GROUP = "qdrant"


@asset(
    group_name=QDRANT_GROUP,
    check_specs=check_specs_for("qdrant_points", QDRANT_CHECK_DESCRIPTIONS, blocking=True),
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
    with new_database.connect() as conn, qdrant_store.open(progress, conn) as client:
        if client is None:
            context.log.info(NO_QDRANT)
            return MaterializeResult(
                metadata={"configured": False, "dagster/row_count": 0},
                check_results=check_results(not_configured()),
            )
        landing = land_qdrant(client, conn, qdrant_store.page_size, progress)
        outcomes = [qdrant_counts_unchanged_during_read(landing), every_qdrant_point_landed(conn, landing)]
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


def nothing_to_do(context: AssetExecutionContext, checks: dict[str, str]) -> MaterializeResult:
    """What an asset after the landing says when no point is landed: nothing to do, its checks pass."""
    context.log.info(NO_POINTS_LANDED)
    return MaterializeResult(
        metadata={"points": 0, "dagster/row_count": 0}, check_results=check_results(nothing_landed(checks))
    )


@asset(
    group_name=QDRANT_GROUP,
    deps=[qdrant_points],
    check_specs=check_specs_for("qdrant_vectors", QDRANT_VECTOR_CHECK_DESCRIPTIONS),
    pool=EMBEDDING_POOL,
    kinds={"postgres", "openai"},
    description="Landed Qdrant vectors reused only when proven: per class of points (collection layout, "
    "personality, text format), the store's declared model (QDRANT_EMBEDDING_MODEL) must be the one embedding "
    "now, the vectors finite, 1536-d and unit length, and sampled re-embeddings must agree (cosine >= 0.999). "
    "The vectors of agreeing classes seed the embedding cache (never replacing a row), so the shapes.inc "
    "import and the Qdrant-only memories take them from there. Verdicts are kept with their samples: a "
    "re-run asks the provider nothing.",
)
def qdrant_vectors(
    context: AssetExecutionContext,
    new_database: NewDatabaseResource,
    embedding_provider: EmbeddingProviderResource,
    qdrant_store: QdrantStoreResource,
) -> MaterializeResult:
    with new_database.connect() as conn:
        if not has_landed_points(conn):
            return nothing_to_do(context, QDRANT_VECTOR_CHECK_DESCRIPTIONS)
        reuse = failing_clearly(
            lambda: prove_and_seed(
                conn, embedding_provider.client(), qdrant_store.declared_model(), progress_of(context)
            )
        )
    context.log.info(
        f"qdrant vectors: {len(reuse.reused_classes):,} of {len(reuse.classes):,} classes reused, "
        f"{reuse.seeded:,} cache rows seeded"
    )
    return MaterializeResult(
        metadata=vector_metadata(reuse),
        check_results=check_results([qdrant_vector_classes_agree(reuse)]),
    )


def vector_metadata(reuse: VectorReuse) -> dict:
    rows = [
        f"| {c.key} | {c.points:,} | {c.eligible:,} | {'' if c.min_cosine is None else c.min_cosine} | {c.verdict} |"
        f" {c.reason} |"
        for c in sorted(reuse.classes.values(), key=lambda c: (-c.points, c.key))[:PER_PERSONALITY_ROWS]
    ]
    return {
        "dagster/row_count": reuse.points_reused,
        "declared_model": reuse.declared_model,
        "embedding_model": reuse.cache_model,
        "classes": len(reuse.classes),
        "classes_reused": len(reuse.reused_classes),
        "points_reused": reuse.points_reused,
        "sample_inputs": reuse.sample_inputs,
        "cache_rows_seeded": reuse.seeded,
        "texts_already_cached": reuse.already_cached,
        "tokens_saved_estimate": reuse.tokens_saved,
        "usd_saved_estimate": round(reuse.usd_saved, 6),
        "seconds": round(reuse.seconds, 3),
        "classes_judged": MetadataValue.md(
            "| class (layout, personality, text) | points | eligible | min cosine | verdict | why |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows)
        ),
    }


PER_PERSONALITY_ROWS = 100


def outcome_metadata(report: QdrantOutcomesReport, model: str) -> dict:
    """The figures of a run's decisions (per personality in one table keyed by slug)."""
    reasons = [
        f"| {outcome} | {reason or '-'} | {points:,} |"
        for (outcome, reason), points in sorted(report.reasons.items(), key=lambda item: (-item[1], item[0]))
    ]
    ranked = sorted(report.per_personality.items(), key=lambda item: (-item[1].points, item[0]))
    rows = [
        f"| {slug} | {o.points:,} | "
        + " | ".join(f"{o.counts.get(name, 0):,}" for name in OUTCOMES)
        + f" | {o.written:,} |"
        for slug, o in ranked[:PER_PERSONALITY_ROWS]
    ]
    return {
        "dagster/row_count": report.points,
        "points": report.points,
        **{f"points_{name}": report.counts.get(name, 0) for name in OUTCOMES},
        "points_naming_no_known_personality": report.unassigned,
        "decisions_changed": report.rows_changed,
        "stale_imports_removed": report.stale_imports_removed,
        "memories_imported_written": report.memories_written,
        "memories_imported_already_present": report.already_present,
        **report.spend_metadata(model),
        "seconds": round(report.seconds, 3),
        "reasons": MetadataValue.md("| outcome | reason | points |\n|---|---|---|\n" + "\n".join(reasons)),
        "flagged": MetadataValue.json(dict(report.flagged)),
        "examples": MetadataValue.json(report.samples),
        "per_personality": MetadataValue.md(
            "| personality | points | "
            + " | ".join(OUTCOMES)
            + " | written |\n|---|---|"
            + "---|" * len(OUTCOMES)
            + "---|\n"
            + "\n".join(rows)
        ),
    }


def shapes_folder(context: AssetExecutionContext, resource: ShapesExportResource) -> Path | None:
    """The export folder whose deleted records supersede points; None (said) when there is none."""
    try:
        folder = resource.folder()
    except ShapesExportError as error:
        context.log.warning(
            f"qdrant: the shapes.inc export cannot be read ({error}); no point is superseded by it"
        )
        return None
    if folder is None:
        context.log.info(f"qdrant: {resource.describe()}: no point is superseded by a deleted record")
    return folder


# A multi_asset of one asset, so that a run may leave its check out (`can_subset`).
@multi_asset(
    specs=[
        AssetSpec(
            "qdrant_point_outcomes",
            group_name=QDRANT_GROUP,
            deps=["qdrant_points", "qdrant_vectors", "rebuilt_memories", "shapes_memories"],
            skippable=True,
            kinds={"postgres", "openai"},
            description="One outcome for every landed Qdrant point, per personality: matched (a rebuilt or "
            "shapes.inc memory holds it), imported (a Qdrant-only memory, written through the memory pipeline "
            "with source_system 'qdrant'), duplicate (a retry, an old-layout copy), superseded (deleted in the "
            "export, dropped by the bot's regrouping) or rejected (with its reason; the point stays landed). "
            "Decided from the landing alone: Qdrant may be gone. Partitioned by personality slug like the "
            "other memory assets; points naming no known personality are decided by every run.",
        )
    ],
    check_specs=check_specs_for("qdrant_point_outcomes", QDRANT_OUTCOME_CHECK_DESCRIPTIONS, blocking=True),
    **MEMORY_ASSET_OPTIONS,
)
def qdrant_point_outcomes(
    context: AssetExecutionContext,
    new_database: NewDatabaseResource,
    old_database: OldDatabaseResource,
    embedding_provider: EmbeddingProviderResource,
    shapes_export_folder: ShapesExportResource,
) -> Iterator:
    slugs = list(context.partition_keys)
    model = cache_model_name(embedding_provider.client())
    with new_database.connect() as conn:
        if not has_landed_points(conn):
            context.log.info(NO_POINTS_LANDED)
            yield MaterializeResult(
                asset_key="qdrant_point_outcomes",
                metadata={"points": 0, "dagster/row_count": 0},
                check_results=selected_results(context, nothing_landed(QDRANT_OUTCOME_CHECK_DESCRIPTIONS)),
            )
            return
        folder = shapes_folder(context, shapes_export_folder)
        with old_database.connect() as old_conn:
            report = failing_clearly(
                lambda: decide_qdrant_points(
                    conn,
                    old_conn,
                    embedding_provider.client(),
                    personality_ids_for(conn, slugs),
                    folder,
                    connect=new_database.connect,
                    log=progress_of(context),
                )
            )
        outcome = every_qdrant_point_has_one_outcome(conn, report.refs)
    context.log.info(
        f"qdrant: {report.points:,} points decided: "
        + ", ".join(f"{report.counts.get(name, 0):,} {name}" for name in OUTCOMES)
    )
    yield MaterializeResult(
        asset_key="qdrant_point_outcomes",
        metadata=outcome_metadata(report, model),
        check_results=selected_results(context, [outcome]),
    )


@contextmanager
def reachable_qdrant(
    context: AssetExecutionContext, store: QdrantStoreResource, conn: psycopg.Connection
) -> Iterator[QdrantClient | None]:
    """A client on the store when it is configured and answers (runs sharing the new DB `conn`
    take turns on a local store); None (said) otherwise."""
    with ExitStack() as stack:
        try:
            client = stack.enter_context(store.open(progress_of(context), conn))
        except QdrantSourceError as error:
            context.log.warning(f"qdrant: {error}; its answers are computed over the landed vectors")
            client = None
        yield client


@asset(
    group_name=QDRANT_GROUP,
    deps=["memory_vector_index", qdrant_point_outcomes],
    check_specs=check_specs_for("qdrant_retrieval_parity", QDRANT_PARITY_CHECK_DESCRIPTIONS),
    pool=NEW_DATABASE_POOL,
    kinds={"qdrant", "postgres"},
    description="Retrieval parity after the vector index: sampled persona/personality pairs of the smallest, "
    "median and largest size, stored vectors as queries, Qdrant's search with the bot's filters (or, with "
    "Qdrant gone, the same search computed exactly over the landed vectors) against the bot's own memory query "
    "on the new DB; every Qdrant hit found, displaced, lost, missing or dropped by a decision, per bucket.",
)
def qdrant_retrieval_parity(
    context: AssetExecutionContext, new_database: NewDatabaseResource, qdrant_store: QdrantStoreResource
) -> MaterializeResult:
    with new_database.connect() as conn:
        if not has_landed_points(conn):
            return nothing_to_do(context, QDRANT_PARITY_CHECK_DESCRIPTIONS)
        started = time.perf_counter()
        with reachable_qdrant(context, qdrant_store, conn) as client:
            parity = measure_parity(conn, client)
        seconds = time.perf_counter() - started
    outcome = retrieval_parity_nothing_missing(parity)
    return MaterializeResult(
        metadata={
            "dagster/row_count": parity.queries,
            "qdrant_answered_by": parity.qdrant_answered_by,
            "queries": parity.queries,
            **{f"hits_{name}": parity.total(name) for name in HIT_CLASSES},
            "per_bucket": MetadataValue.md(parity_markdown(parity)),
            "pairs": MetadataValue.json({b.bucket: b.pairs for b in parity.buckets.values()}),
            "examples": MetadataValue.json([e for b in parity.buckets.values() for e in b.examples]),
            "bot_query_p95_ms": parity.latency_ms(95) or 0.0,
            "seconds": round(seconds, 3),
        },
        check_results=check_results([outcome]),
    )


qdrant_assets = [qdrant_points, qdrant_vectors, qdrant_point_outcomes, qdrant_retrieval_parity]
