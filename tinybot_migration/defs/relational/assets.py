"""One asset per relational table, in foreign-key order, each proving itself with blocking checks.

Every asset copies its table old → new (see `copy.py`) and answers its `check_specs` in the same
step, while both connections are open: a failing check stops every downstream table.
"""

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)
from psycopg import sql

from tinybot_migration.defs.check_results import check_result, check_results
from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.defs.partitions import register_personality_partitions
from tinybot_migration.defs.pools import NEW_DATABASE_POOL
from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource
from tinybot_migration.lib.check_outcome import CheckOutcome
from tinybot_migration.lib.relational.checks import (
    CHECK_DESCRIPTIONS,
    FOREIGN_KEYS_REMAPPED,
    ROW_COUNT_PARITY,
    checks_for,
    run_table_checks,
)
from tinybot_migration.lib.relational.copy import CopyResult, IdMaps, copy_table
from tinybot_migration.lib.relational.pending import (
    COPIED,
    REJECTED,
    RESOLVED,
    account_pending_memories,
    pending_memories_accounted_for,
)
from tinybot_migration.lib.relational.tables import PERSONALITIES, RELATIONAL_TABLES, TableSpec

RELATIONAL_GROUP = "relational"
# Pool shared by every asset that writes the new database (limits set in dagster.yaml).
PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 40


def markdown_preview(conn, spec: TableSpec) -> str:
    """A few rows of the new table as a markdown table (bytes shown by size only)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns),
                sql.Identifier(spec.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in spec.conflict_key),
                sql.Literal(PREVIEW_ROWS),
            )
        )
        rows = cur.fetchall()

    def cell(value) -> str:
        if isinstance(value, bytes | memoryview):
            return f"<{len(value)} bytes>"
        text = "NULL" if value is None else str(value)
        text = text.replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"

    lines = ["| " + " | ".join(spec.columns) + " |", "|" + "---|" * len(spec.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rejected_rows_heading(result: CopyResult) -> str:
    shown = len(result.rejection_samples)
    which = f"the first {shown} of {result.rows_rejected:,}" if shown < result.rows_rejected else "all"
    return f"{result.rows_rejected:,} old row(s) left out for a missing parent ({which} named)"


def rejected_rows_line(result: CopyResult) -> str:
    return f"{rejected_rows_heading(result)}: " + "; ".join(result.rejection_samples)


def name_rejected_rows(outcomes: list[CheckOutcome], result: CopyResult) -> list[CheckOutcome]:
    """The checks that fail because rows were left out say which rows and why."""
    if result.rows_rejected:
        for outcome in outcomes:
            if not outcome.passed and outcome.name in (ROW_COUNT_PARITY, FOREIGN_KEYS_REMAPPED):
                outcome.description += f" — {rejected_rows_line(result)}"
    return outcomes


def copy_metadata(result: CopyResult, new_rows: int, preview: str) -> dict:
    """The figures a table's copy reports in Dagster."""
    metadata = {
        "dagster/row_count": new_rows,
        "rows_read": result.rows_read,
        "rows_written": result.rows_written,
        "rows_inserted": result.rows_inserted,
        "rows_updated": result.rows_updated,
        "rows_unchanged": result.rows_unchanged,
        "id_collisions_resolved": result.id_collisions_resolved,
        "rows_rejected_missing_parent": result.rows_rejected,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_read / result.seconds) if result.seconds else 0,
        "preview": MetadataValue.md(preview),
    }
    if result.rejection_samples:
        metadata["rejected_examples"] = MetadataValue.md(
            f"{rejected_rows_heading(result)}:\n\n" + "\n".join(f"- {s}" for s in result.rejection_samples)
        )
    return metadata


def build_table_asset(spec: TableSpec, upstream: dict[str, AssetsDefinition]) -> AssetsDefinition:
    parents = list(dict.fromkeys(fk.parent for fk in spec.foreign_keys))
    check_specs = [
        AssetCheckSpec(name, asset=spec.name, blocking=True, description=CHECK_DESCRIPTIONS[name])
        for name in checks_for(spec)
    ]

    @asset(
        name=spec.name,
        group_name=RELATIONAL_GROUP,
        deps=[upstream[parent] for parent in parents],
        check_specs=check_specs,
        pool=NEW_DATABASE_POOL,
        kinds={"postgres"},
        description=f"{spec.description} Copied from the old DB with deterministic ids.",
    )
    def _table_asset(
        context: AssetExecutionContext, old_database: OldDatabaseResource, new_database: NewDatabaseResource
    ) -> MaterializeResult:
        with old_database.connect() as old_conn, new_database.connect() as new_conn:
            result = copy_table(old_conn, new_conn, spec, IdMaps(old_conn), log=progress_of(context))
            preview = markdown_preview(new_conn, spec)
            registered = (
                register_personality_partitions(new_conn, context.instance) if spec is PERSONALITIES else None
            )
        outcomes = name_rejected_rows(
            run_table_checks(old_database.connect, new_database.connect, spec), result
        )

        new_rows = next(o.metadata["new_rows"] for o in outcomes if "new_rows" in o.metadata)
        metadata = copy_metadata(result, new_rows, preview)
        if registered is not None:
            metadata["partitions_registered"] = registered
        return MaterializeResult(
            metadata=metadata,
            check_results=check_results(outcomes),
        )

    return _table_asset


def build_relational_assets() -> list[AssetsDefinition]:
    built: dict[str, AssetsDefinition] = {}
    for spec in RELATIONAL_TABLES:
        built[spec.name] = build_table_asset(spec, built)
    return list(built.values())


relational_assets = build_relational_assets()


PENDING_MEMORIES_ACCOUNTED_FOR = "every_pending_memory_accounted_for"


@asset(
    name="pending_memories",
    group_name=RELATIONAL_GROUP,
    deps=[relational_assets[-1]],
    check_specs=[
        AssetCheckSpec(
            PENDING_MEMORIES_ACCOUNTED_FOR,
            asset="pending_memories",
            blocking=True,
            description="Every old pending memory is resolved (the rebuild stores its exchange), copied "
            "with re-keyed ids for the bot's processor, or rejected with its reason.",
        )
    ],
    pool=NEW_DATABASE_POOL,
    kinds={"postgres"},
    description="The old DB's pending memories (interactions whose memory was never stored): each one "
    "resolved by the rebuild or copied, re-keyed, for the bot to store after cutover.",
)
def pending_memories(
    context: AssetExecutionContext, old_database: OldDatabaseResource, new_database: NewDatabaseResource
) -> MaterializeResult:
    with old_database.connect() as old_conn, new_database.connect() as new_conn:
        result = account_pending_memories(old_conn, new_conn)
        passed, description, check_metadata = pending_memories_accounted_for(old_conn, new_conn)
        new_rows = new_conn.execute("SELECT count(*) FROM pending_memories").fetchone()[0]
    context.log.info(
        f"pending_memories: {result.old_rows:,} old rows: "
        + ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(result.counts.items()))
    )
    metadata = {
        "dagster/row_count": new_rows,
        "old_pending_memories": result.old_rows,
        **{outcome: result.counts.get(outcome, 0) for outcome in (RESOLVED, COPIED, REJECTED)},
        "rows_written": result.rows_written,
    }
    if result.rejection_samples:
        metadata["rejected_examples"] = MetadataValue.md(
            "\n".join(f"- {s}" for s in result.rejection_samples)
        )
    return MaterializeResult(
        metadata=metadata,
        check_results=[
            check_result(CheckOutcome(PENDING_MEMORIES_ACCOUNTED_FOR, passed, description, check_metadata))
        ],
    )


relational_assets.append(pending_memories)
