"""`cutover_report`: the go/no-go verdict (lib/cutover.py) as an asset, after everything else, so the
UI shows whether the bot can switch and Qdrant can be cancelled, and why not."""

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    ConfigurableResource,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from tinybot_migration.defs.check_history import failed_checks
from tinybot_migration.defs.check_results import check_results, check_specs_for
from tinybot_migration.defs.pools import NEW_DATABASE_POOL
from tinybot_migration.defs.qdrant.assets import qdrant_retrieval_parity, reachable_qdrant
from tinybot_migration.defs.resources import NewDatabaseResource, QdrantStoreResource
from tinybot_migration.lib.check_outcome import CheckOutcome, Markdown
from tinybot_migration.lib.cutover import CutoverReport, cutover_report, evidence_lines

CUTOVER_IS_SAFE = "cutover_is_safe"
CUTOVER_CHECKS = {
    CUTOVER_IS_SAFE: "The cutover report's verdict: every Qdrant point accounted for, its memories present, "
    "no duplicate memories, nothing missing in retrieval parity, the vector indexes valid, every ERROR check "
    "of the migration passed. WARN: the verdict informs the switch; `tinybot-migration cutover-report` exits "
    "1 on it.",
}


class MigrationChecksResource(ConfigurableResource):
    """Every check of the migration ("asset:check"), given by the Definitions that hold them: a run of
    one stage sees only its own assets, and the verdict weighs the latest result of all."""

    checks: list[str] = Field(default_factory=list)

    def check_keys(self) -> list[AssetCheckKey]:
        return [AssetCheckKey.from_user_string(key) for key in self.checks]


@asset(
    name="cutover_report",
    group_name="cutover",
    deps=[qdrant_retrieval_parity],
    check_specs=check_specs_for("cutover_report", CUTOVER_CHECKS),
    pool=NEW_DATABASE_POOL,
    kinds={"postgres", "qdrant"},
    description="Go/no-go for cutover, read from the new DB (and Qdrant when it answers) as it is now: every "
    "Qdrant point accounted for, memory counts before and after per persona and personality, duplicate "
    "memories, retrieval parity per bucket, the vector index, the bot query's latency, and the latest "
    "result of every check. The same report as `tinybot-migration cutover-report`.",
)
def cutover_report_asset(
    context: AssetExecutionContext,
    new_database: NewDatabaseResource,
    qdrant_store: QdrantStoreResource,
    migration_checks: MigrationChecksResource,
) -> MaterializeResult:
    keys = [k for k in migration_checks.check_keys() if k.asset_key != context.asset_key]
    failed, never_ran = failed_checks(context.instance, keys)
    with new_database.connect_read_only() as conn, reachable_qdrant(context, qdrant_store, conn) as client:
        report = cutover_report(conn, client, failed, qdrant_configured=qdrant_store.location() is not None)
    if never_ran:
        report.notes.append(f"{never_ran:,} checks have never run")
    context.log.info(f"cutover: {'GO' if report.go else 'NO-GO'} ({len(report.blockers)} blockers)")
    return MaterializeResult(
        metadata=report_metadata(report),
        check_results=check_results([cutover_is_safe(report)]),
    )


def report_metadata(report: CutoverReport) -> dict:
    return {
        "verdict": "GO" if report.go else "NO-GO",
        "blockers": len(report.blockers),
        "dagster/row_count": report.points,
        "qdrant_points": report.points,
        "memories": report.memories,
        "duplicate_groups": report.duplicate_groups,
        "bot_query_p95_ms": (report.parity.latency_ms(95) if report.parity else None) or 0.0,
        "report": MetadataValue.md("\n".join(evidence_lines(report))),
    }


def cutover_is_safe(report: CutoverReport) -> CheckOutcome:
    return CheckOutcome(
        CUTOVER_IS_SAFE,
        passed=report.go,
        description="GO: " + "; ".join(report.notes or ["nothing blocks the cutover"])
        if report.go
        else f"NO-GO, {len(report.blockers)} blockers: " + "; ".join(report.blockers[:5]),
        metadata={"blockers": Markdown("\n".join(f"- {b}" for b in report.blockers) or "none")},
        severity="WARN",
    )


cutover_assets = [cutover_report_asset]
