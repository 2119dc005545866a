"""The promises the shapes.inc import makes: every record accounted for (blocking), senders mapped
(WARN), and, from the memories domain, embeddings present and no duplicates; plus the export
survey's two WARN checks.

In a range run a check is evaluated once for all keys (docs/design.md §8): failures name the personality
and the file. The accounting check looks at the new DB, not only at the import's own counts: a
memory or a reject row that went missing fails it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psycopg

from tinybot_migration.lib.check_outcome import WARN, CheckOutcome, Markdown
from tinybot_migration.lib.memories.writer import SOURCE_SHAPES, memory_ids
from tinybot_migration.lib.shapes.export import ExportSurvey, shared_record_ids
from tinybot_migration.lib.shapes.importer import ShapesImportReport

EVERY_RECORD_ACCOUNTED_FOR = "every_record_accounted_for"
SENDERS_MAPPED_TO_PERSONAS = "senders_mapped_to_personas"
EVERY_FOLDER_MAPS_TO_A_PERSONALITY = "every_folder_maps_to_a_personality"
EVERY_FILE_PARSES = "every_file_parses"
RECORD_IDS_UNIQUE_ACROSS_FOLDERS = "record_ids_unique_across_folders"
SAMPLES = 5
TOP_SENDERS = 10

SHAPES_CHECK_DESCRIPTIONS = {
    EVERY_RECORD_ACCOUNTED_FOR: "Per personality, records in the file = imported + deleted + duplicates "
    "+ rejected; every imported or duplicate record's memories are in the new DB and every rejected "
    "record (and every file that could not be read, as one reject) has its row in shapes_rejects.",
    SENDERS_MAPPED_TO_PERSONAS: "Every sender maps to a persona through uuid-mappings.json (WARN: an "
    "unmapped sender's memories are kept with its shapes user id and linked when it is mapped).",
    EVERY_FOLDER_MAPS_TO_A_PERSONALITY: "Every folder of the export is named after the slug of a "
    "personality (WARN: a folder that is not is never imported).",
    EVERY_FILE_PARSES: "Every memories file is a JSON array and uuid-mappings.json is well formed.",
    RECORD_IDS_UNIQUE_ACROSS_FOLDERS: "No record id is in more than one personality's file (WARN: each "
    "copy is imported into its own personality, as the export has it).",
}


def every_record_accounted_for(conn: psycopg.Connection, report: ShapesImportReport) -> CheckOutcome:
    # An unreadable file is the export's defect, accounted for as one reject (checked below with
    # the others), not something the import lost: it never blocks the index and the search.
    unreadable = [a.file_error for a in report.per_personality.values() if a.file_error]
    problems = [
        f"{slug}: {a.unaccounted:,} of {a.records:,} records in {a.source_file} unaccounted for"
        for slug, a in report.per_personality.items()
        if not a.file_error and a.unaccounted
    ]
    present = memory_ids(conn, list(report.personality_ids.values()), SOURCE_SHAPES)
    vanished = sorted({str(ref) for memory, ref in report.expected.items() if memory not in present})
    if vanished:
        problems.append(
            f"{len(vanished):,} records have memories missing from the new DB, e.g. {', '.join(vanished[:SAMPLES])}"
        )
    unrecorded = _rejects_without_row(conn, report)
    if unrecorded:
        problems.append(
            f"{len(unrecorded):,} rejected records have no row in shapes_rejects, e.g. {', '.join(unrecorded[:SAMPLES])}"
        )
    totals = {
        name: report.total(name) for name in ("records", "imported", "deleted", "duplicates", "rejected")
    }
    return CheckOutcome(
        EVERY_RECORD_ACCOUNTED_FOR,
        passed=not problems,
        description="; ".join(problems)
        if problems
        else (
            f"all {totals['records']:,} records accounted for: {totals['imported']:,} imported, "
            f"{totals['deleted']:,} deleted, {totals['duplicates']:,} duplicates, {totals['rejected']:,} rejected"
            + (
                f"; {len(unreadable):,} unreadable file(s), each one reject in shapes_rejects: "
                + "; ".join(unreadable[:SAMPLES])
                if unreadable
                else ""
            )
        ),
        metadata={
            **totals,
            "unreadable_files": len(unreadable),
            "records_with_missing_memories": len(vanished),
            "rejects_without_row": len(unrecorded),
        },
    )


def _rejects_without_row(conn: psycopg.Connection, report: ShapesImportReport) -> list[str]:
    wanted = [(source, r.index) for source, rejected in report.rejected_records.items() for r in rejected]
    if not wanted:
        return []
    rows = conn.execute(
        "SELECT source_file, record_index FROM tinybot_migration.shapes_rejects WHERE source_file = ANY(%s)",
        (sorted({source for source, _ in wanted}),),
    ).fetchall()
    recorded = set(rows)
    return [f"{source}[{index}]" for source, index in wanted if (source, index) not in recorded]


def senders_mapped_to_personas(report: ShapesImportReport) -> CheckOutcome:
    unmapped = report.unmapped
    top = unmapped.most_common(TOP_SENDERS)
    table = "\n".join(
        ["| sender | memories | why |", "|---|---|---|"]
        + [f"| {sender} | {count:,} | {report.unmapped_reasons.get(sender, '')} |" for sender, count in top]
    )
    return CheckOutcome(
        SENDERS_MAPPED_TO_PERSONAS,
        passed=not unmapped,
        severity=WARN,
        description=(
            f"{len(unmapped):,} of {report.senders:,} senders are not mapped to a persona; their "
            f"{sum(unmapped.values()):,} memories keep persona_id NULL and their shapes user id"
        )
        if unmapped
        else f"all {report.senders:,} senders are mapped to personas",
        metadata={
            "senders": report.senders,
            "unmapped_senders": len(unmapped),
            "unmapped_memories": sum(unmapped.values()),
            **({"top_unmapped_senders": Markdown(table)} if unmapped else {}),
        },
    )


def every_folder_maps_to_a_personality(folders: Sequence[str], unknown: Sequence[str]) -> CheckOutcome:
    return CheckOutcome(
        EVERY_FOLDER_MAPS_TO_A_PERSONALITY,
        passed=not unknown,
        severity=WARN,
        description=f"{len(unknown):,} of {len(folders):,} folders match no personality slug and are not "
        f"imported: {', '.join(unknown[:SAMPLES])}"
        if unknown
        else f"all {len(folders):,} folders match a personality",
        metadata={"folders": len(folders), "unknown_folders": len(unknown)},
    )


def every_file_parses(files: int, errors: Sequence[str]) -> CheckOutcome:
    return CheckOutcome(
        EVERY_FILE_PARSES,
        passed=not errors,
        severity=WARN,
        description="; ".join(errors[:SAMPLES])
        + (f" (and {len(errors) - SAMPLES} more)" if len(errors) > SAMPLES else "")
        if errors
        else f"all {files:,} files parse",
        metadata={"files": files, "unreadable_files": len(errors)},
    )


def record_ids_unique_across_folders(
    shared: int, examples: Sequence[tuple[str, Sequence[str]]]
) -> CheckOutcome:
    return CheckOutcome(
        RECORD_IDS_UNIQUE_ACROSS_FOLDERS,
        passed=not shared,
        severity=WARN,
        description=f"{shared:,} record id(s) are in more than one personality's file, each copy imported "
        "into its own personality: "
        + "; ".join(f"{record_id} in {', '.join(folders)}" for record_id, folders in examples[:SAMPLES])
        if shared
        else "every record id is in one personality's file only",
        metadata={
            "shared_record_ids": shared,
            **(
                {"shared_examples": Markdown("\n".join(f"- {r}: {', '.join(f)}" for r, f in examples))}
                if examples
                else {}
            ),
        },
    )


def survey_checks(export_dir: Path | None, survey: ExportSurvey) -> list[CheckOutcome]:
    """The export survey's three checks, in `SURVEY_CHECKS` order (`export_dir` None: no export)."""
    shared = (0, []) if export_dir is None else shared_record_ids(export_dir, survey)
    return [
        every_folder_maps_to_a_personality([p.slug for p in survey.files], survey.unknown_folders),
        every_file_parses(len(survey.files) + (export_dir is not None), survey.errors),
        record_ids_unique_across_folders(*shared),
    ]


SURVEY_CHECKS = (EVERY_FOLDER_MAPS_TO_A_PERSONALITY, EVERY_FILE_PARSES, RECORD_IDS_UNIQUE_ACROSS_FOLDERS)
