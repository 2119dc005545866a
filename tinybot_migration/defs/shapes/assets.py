"""`shapes_export` (the export folder, read once and surveyed) and `shapes_memories` (its records
imported per personality through the cache and the shared memory writer)."""

from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from tinybot_migration.defs.check_results import check_results, selected_results
from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.defs.memory_source import MEMORY_ASSET_OPTIONS, failing_clearly
from tinybot_migration.defs.resources import (
    EmbeddingProviderResource,
    NewDatabaseResource,
    OldDatabaseResource,
)
from tinybot_migration.defs.resources.shapes_export import ShapesExportResource
from tinybot_migration.lib.embeddings.cache import cache_model_name
from tinybot_migration.lib.memories.checks import (
    EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS,
    MEMORY_CHECK_DESCRIPTIONS,
    NO_DUPLICATE_MEMORIES,
    embeddings_present_with_right_dimensions,
    no_duplicate_memories,
)
from tinybot_migration.lib.memories.writer import SOURCE_SHAPES, memory_count
from tinybot_migration.lib.personalities import people_database, personality_ids_for, personality_slugs
from tinybot_migration.lib.shapes.checks import (
    EVERY_RECORD_ACCOUNTED_FOR,
    SENDERS_MAPPED_TO_PERSONAS,
    SHAPES_CHECK_DESCRIPTIONS,
    SURVEY_CHECKS,
    every_record_accounted_for,
    senders_mapped_to_personas,
    survey_checks,
)
from tinybot_migration.lib.shapes.export import ExportSurvey, ShapesExportError, survey_export
from tinybot_migration.lib.shapes.importer import ShapesImportReport, import_shapes_memories

SHAPES_GROUP = "shapes"
PER_FOLDER_ROWS = 100


def known_personality_slugs(
    new_database: NewDatabaseResource, old_database: OldDatabaseResource
) -> tuple[set[str], str]:
    """The slugs folders are matched against, and which database they came from."""
    with (
        new_database.connect_read_only() as new_conn,
        people_database(new_conn, old_database.connect) as (
            migrated,
            people,
        ),
    ):
        return set(personality_slugs(people)), "new database" if migrated is not None else "old database"


def export_folder(context: AssetExecutionContext, resource: ShapesExportResource) -> Path | None:
    """The export folder, or None (logged) when there is nothing to import; a set path that does not
    exist fails the step without retries."""
    try:
        folder = resource.folder()
    except ShapesExportError as error:
        raise Failure(str(error), allow_retries=False) from None
    if folder is None:
        context.log.info(f"shapes.inc: {resource.describe()}; nothing to import")
    return folder


def survey_metadata(survey: ExportSurvey, folder: str, matched_in: str) -> dict:
    files = survey.files
    lines = ["| folder | records | deleted | rejected | senders | problem |", "|---|---|---|---|---|---|"]
    for parsed in sorted(files, key=lambda p: -p.total)[:PER_FOLDER_ROWS]:
        problem = parsed.error or ("matches no personality" if parsed.slug in survey.unknown_folders else "")
        lines.append(
            f"| {parsed.slug} | {parsed.total:,} | {parsed.deleted:,} | {parsed.rejected:,} | "
            f"{len(parsed.senders):,} | {problem} |"
        )
    if len(files) > PER_FOLDER_ROWS:
        lines.append(f"| … {len(files) - PER_FOLDER_ROWS} more | | | | | |")
    metadata = {
        "dagster/row_count": sum(p.total for p in files),
        "export_folder": folder,
        "folders": len(files),
        "records": sum(p.total for p in files),
        "deleted": sum(p.deleted for p in files),
        "records_rejected": sum(p.rejected for p in files),
        "senders": len({s for p in files for s in p.senders}),
        "mappings": survey.mappings if survey.mappings is not None else -1,
        "personalities_from": matched_in,
        "per_folder": MetadataValue.md("\n".join(lines)),
    }
    if survey.errors:
        metadata["parse_errors"] = MetadataValue.md("\n".join(f"- {e}" for e in survey.errors))
    if survey.unknown_folders:
        metadata["unknown_folders"] = MetadataValue.md("\n".join(f"- {s}" for s in survey.unknown_folders))
    return metadata


@asset(
    group_name=SHAPES_GROUP,
    deps=["personalities"],
    check_specs=[
        AssetCheckSpec(name, asset="shapes_export", description=SHAPES_CHECK_DESCRIPTIONS[name])
        for name in SURVEY_CHECKS
    ],
    kinds={"json"},
    description="The shapes.inc export folder (SHAPES_EXPORT_DIR), every file parsed once: records, deleted, "
    "senders and parse errors per folder, and the folders whose slug matches no personality (never "
    "imported). Writes nothing.",
)
def shapes_export(
    context: AssetExecutionContext,
    shapes_export_folder: ShapesExportResource,
    new_database: NewDatabaseResource,
    old_database: OldDatabaseResource,
) -> MaterializeResult:
    folder = export_folder(context, shapes_export_folder)
    if folder is None:
        survey, matched_in = ExportSurvey(), "-"
    else:
        slugs, matched_in = known_personality_slugs(new_database, old_database)
        survey = survey_export(folder, slugs)
        context.log.info(
            f"shapes export {folder}: {len(survey.files)} folders, {sum(p.total for p in survey.files):,} records, "
            f"{len(survey.errors)} unreadable files, {len(survey.unknown_folders)} unknown folders"
        )
    outcomes = survey_checks(folder, survey)
    return MaterializeResult(
        metadata=survey_metadata(survey, shapes_export_folder.describe(), matched_in),
        check_results=check_results(outcomes),
    )


def import_metadata(report: ShapesImportReport, total: int, model: str, export: str) -> dict:
    """The figures an import reports (per-personality ones in one table keyed by slug)."""
    lines = [
        "| personality | records | imported | deleted | duplicates | rejected | memories | written |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ranked = sorted(report.per_personality.items(), key=lambda item: (-item[1].records, item[0]))
    for slug, a in ranked[:PER_FOLDER_ROWS]:
        if a.source_file is None:
            continue
        lines.append(
            f"| {slug} | {a.records:,} | {a.imported:,} | {a.deleted:,} | {a.duplicates:,} | {a.rejected:,} | "
            f"{a.memories:,} | {a.written:,} |"
        )
    metadata = {
        "dagster/row_count": total,
        "export_folder": export,
        "mapping_file": report.mapping_file,
        "records": report.total("records"),
        "records_imported": report.total("imported"),
        "records_deleted": report.total("deleted"),
        "records_duplicate": report.total("duplicates"),
        "records_rejected": report.total("rejected"),
        "unreadable_files": sum(bool(a.file_error) for a in report.per_personality.values()),
        "memories_written": report.memories_written,
        "memories_already_present": report.already_present,
        "senders": report.senders,
        "unmapped_senders": len(report.unmapped),
        "persona_mappings_written": report.links.mappings_written,
        "memories_linked": report.links.memories_linked + report.links.memories_repointed,
        **report.spend_metadata(model),
        "seconds": round(report.seconds, 3),
        "per_personality": MetadataValue.md("\n".join(lines)),
    }
    if report.links.repointed_senders:
        metadata["repointed_senders"] = MetadataValue.md(
            "\n".join(f"- {s}" for s in report.links.repointed_senders)
        )
    return metadata


SHAPES_MEMORY_CHECKS = (
    EVERY_RECORD_ACCOUNTED_FOR,
    SENDERS_MAPPED_TO_PERSONAS,
    EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS,
    NO_DUPLICATE_MEMORIES,
)
_CHECK_DESCRIPTIONS = {**MEMORY_CHECK_DESCRIPTIONS, **SHAPES_CHECK_DESCRIPTIONS}


# A multi_asset of one asset, so that a run may leave its checks out (`can_subset`; an @asset's
# check results are required outputs).
@multi_asset(
    specs=[
        AssetSpec(
            "shapes_memories",
            group_name=SHAPES_GROUP,
            deps=[shapes_export, "users", "personas", "user_default_personas", "personalities"],
            skippable=True,
            kinds={"postgres", "openai"},
            description="The shapes.inc memories, one per sender of each record, re-embedded (cached) and "
            "bulk-loaded; senders linked to personas through uuid-mappings.json; every record imported, "
            "deleted, duplicate or rejected (rejects in shapes_rejects). Partitioned by personality slug "
            "like rebuilt_memories (the `memory_bill` job estimates what it would embed and cost).",
        )
    ],
    check_specs=[
        AssetCheckSpec(
            name,
            asset="shapes_memories",
            blocking=name == EVERY_RECORD_ACCOUNTED_FOR,
            description=_CHECK_DESCRIPTIONS[name],
        )
        for name in SHAPES_MEMORY_CHECKS
    ],
    **MEMORY_ASSET_OPTIONS,
)
def shapes_memories(
    context: AssetExecutionContext,
    new_database: NewDatabaseResource,
    old_database: OldDatabaseResource,
    embedding_provider: EmbeddingProviderResource,
    shapes_export_folder: ShapesExportResource,
) -> Iterator:
    slugs = list(context.partition_keys)
    model = cache_model_name(embedding_provider.client())
    folder = export_folder(context, shapes_export_folder)
    with new_database.connect() as conn:
        report = failing_clearly(
            lambda: (
                ShapesImportReport(personality_ids=personality_ids_for(conn, slugs))
                if folder is None
                else import_shapes_memories(
                    conn,
                    embedding_provider.client(),
                    folder,
                    personality_ids_for(conn, slugs),
                    connect=new_database.connect,
                    log=progress_of(context),
                )
            ),
            ShapesExportError,
        )
        pids = list(report.personality_ids.values())
        outcomes = [
            every_record_accounted_for(conn, report),
            senders_mapped_to_personas(report),
            embeddings_present_with_right_dimensions(
                conn, pids, embedding_provider.dimensions, SOURCE_SHAPES, cache_model=model
            ),
            no_duplicate_memories(conn, pids, SOURCE_SHAPES),
        ]
        total = memory_count(conn, pids, SOURCE_SHAPES)
    yield MaterializeResult(
        asset_key="shapes_memories",
        metadata=import_metadata(report, total, model, shapes_export_folder.describe()),
        check_results=selected_results(context, outcomes),
    )


shapes_assets = [shapes_export, shapes_memories]
