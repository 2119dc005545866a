"""The summary `tinybot-migration run` and `demo` print: per asset rows, writes and checks, then the
memories and their embeddings, then every failed check."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

# Off a terminal (CI logs, pipes) rich assumes 80 columns, too narrow for the summary table.
console = Console(width=None if Console().is_terminal else 140)


def print_summary(report, estimate=None) -> None:
    """The migration's summary; with `estimate` (the dry run before it), the bill it announced
    against what was spent."""
    table = Table(title="tinybot migration")
    for column in ("asset", "old rows", "new rows", "written", "id collisions", "checks", "seconds"):
        table.add_column(column, justify="left" if column == "asset" else "right")
    for name, asset in report.assets.items():
        parity = next((c for c in asset.checks if c.name == "row_count_parity"), None)
        passed = sum(c.passed for c in asset.checks)
        checks = f"{passed}/{len(asset.checks)} passed" if asset.checks else "-"
        if any(not c.passed and c.severity != "WARN" for c in asset.checks):
            checks = f"[red]{checks}[/]"
        elif passed < len(asset.checks):
            checks = f"[yellow]{checks}[/]"
        table.add_row(
            name,
            f"{parity.metadata['old_rows']:,}" if parity else "-",
            f"{parity.metadata['new_rows']:,}"
            if parity
            else _number(asset.metadata.get("dagster/row_count")),
            _written(asset.metadata),
            f"{asset.metadata.get('id_collisions_resolved', '-')}",
            checks,
            f"{asset.metadata.get('seconds', 0):.2f}",
        )
    console.print(table)
    for name, asset in report.assets.items():
        if "records_imported" in asset.metadata:
            console.print(_shapes_line(name, asset.metadata))
        if "memories_written" in asset.metadata:
            console.print(_memory_line(name, asset.metadata))
        if "build_seconds" in asset.metadata:
            console.print(_index_line(name, asset.metadata))
    if estimate is not None:
        console.print(_cost_table(estimate, report))
    _print_findings(report)
    if report.failure:
        console.print(f"[red]run failed[/]: {report.failure}")
        if any(marker in report.failure for marker in CONNECTION_LOST_MARKERS):
            console.print(f"A database went away. {RESUME_ADVICE}")
    checks = report.checks
    verdict = "[green]all checks passed[/]" if report.ok else "[red]migration NOT verified[/]"
    warned = f" ({len(report.warnings)} warning(s))" if report.warnings else ""
    console.print(
        f"{verdict}: {sum(c.passed for c in checks)}/{len(checks)} checks{warned}, "
        f"total {report.seconds:.1f}s, runs {', '.join(report.run_ids)}"
    )


def _print_findings(report) -> None:
    """Every failed check (WARN ones marked so) and the runner's notes."""
    for check in report.failed_checks:
        console.print(f"[red]FAILED[/] {check.asset}.{check.name}: {check.description}")
    for check in report.warnings:
        console.print(f"[yellow]WARN[/] {check.asset}.{check.name}: {check.description}")
    for note in report.notes:
        console.print(f"note: {note}")


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _written(metadata: dict) -> str:
    for key in ("rows_written", "memories_written"):
        if key in metadata:
            return f"{metadata[key]:,}"
    return "-"


def _requests(m: dict) -> str:
    if m.get("embedding_model", "").startswith("hash-"):
        return " offline"
    return f" in {m.get('provider_requests', 0):,} requests"


def _memory_line(name: str, m: dict) -> str:
    cost = f", estimated ${m['estimated_cost_usd']:.4f}" if m.get("estimated_cost_usd") else ""
    source = f" from {m['exchanges']:,} exchanges" if "exchanges" in m else ""
    line = (
        f"{name}: {m.get('dagster/row_count', 0):,} memories ({m['memories_written']:,} written, "
        f"{m.get('memories_already_present', 0):,} already present){source}; "
        f"embeddings ({m.get('embedding_model', '?')}): {m.get('cache_hits', 0):,} cache hits, "
        f"{m.get('provider_inputs', 0):,} texts embedded{_requests(m)}, {m.get('tokens', 0):,} tokens{cost}"
    )
    if m.get("exchanges_rejected"):
        line += f"; [red]{m['exchanges_rejected']:,} exchanges rejected by the provider[/]"
    return line


def _shapes_line(name: str, m: dict) -> str:
    if m["export_folder"].startswith("no export"):
        return f"{name}: nothing to import ({m['export_folder']})"
    line = (
        f"{name}: {m['records']:,} shapes.inc records: {m['records_imported']:,} imported, "
        f"{m['records_deleted']:,} deleted, {m['records_duplicate']:,} duplicates, "
        f"{m['records_rejected']:,} rejected (see shapes_rejects); {m['senders']:,} senders, "
        f"{m['unmapped_senders']:,} unmapped"
    )
    if m.get("memories_linked"):
        line += f"; {m['memories_linked']:,} memories linked to personas"
    return line


def _index_line(name: str, m: dict) -> str:
    line = f"{name}: {m['action']} over {m['dagster/row_count']:,} memories"
    if m["action"] != "left in place":
        line += f" in {m['build_seconds']:.1f}s (maintenance_work_mem {m['maintenance_work_mem_mb']:,} MB)"
    line += f", {m['index_size_bytes'] / 2**20:,.1f} MB"
    if m.get("search_queries"):
        buckets = [b for b in ("smallest", "median", "largest") if f"search_p95_ms_{b}" in m]
        line += (
            f"\nsearch ({m['search_queries']} queries, {m['search_candidates']:,} first-pass candidates, "
            f"recall@10 against exact at least {m['search_min_recall_at_10']:.3f}): "
            + ", ".join(
                f"{b} persona ({m[f'search_rows_{b}']:,} memories) p50 {m[f'search_p50_ms_{b}']:.2f} ms, "
                f"p95 {m[f'search_p95_ms_{b}']:.2f} ms"
                for b in buckets
            )
        )
    if m.get("search_example"):
        line += f"\nexample search: {m['search_example']}"
    return line


def print_estimate(report) -> None:
    """What a dry run found: per memory asset, the texts to embed and their estimated bill."""
    for name, asset in report.assets.items():
        m = asset.metadata
        if not m.get("dry_run"):
            continue
        line = (
            f"{name} (dry run): {m.get('memories_to_write', 0):,} memories to write, "
            f"{m['texts_to_embed']:,} texts to embed ({m['cache_hits']:,} already in the cache), "
            f"about {m['estimated_tokens']:,} tokens, ${m['estimated_cost_usd']:.4f} with {m['embedding_model']}"
        )
        if m.get("history_from") == "old database":
            line += " (history paired from the old database: the new one has none yet)"
        if "records" in m:
            line += (
                f"; {m['records']:,} records: {m['records_to_import']:,} to import, {m['records_deleted']:,} "
                f"deleted, {m['records_duplicate']:,} duplicates, {m['records_rejected']:,} rejected, "
                f"{m['unmapped_senders']:,} unmapped senders"
            )
        console.print(line)
    _print_findings(report)  # the export survey runs in a dry run too
    if report.failure:
        console.print(f"[red]dry run failed[/]: {report.failure}")
    console.print(f"dry run: nothing written, no provider called ({report.seconds:.1f}s)")


def _cost_table(estimate, report) -> Table:
    table = Table(title="embedding bill: dry-run estimate against what was spent")
    for column in (
        "asset",
        "texts estimated",
        "texts embedded",
        "tokens estimated",
        "tokens spent",
        "USD estimated",
        "USD spent",
    ):
        table.add_column(column, justify="left" if column == "asset" else "right")
    for name, asset in estimate.assets.items():
        planned, spent = asset.metadata, report.assets.get(name)
        if not planned.get("dry_run"):
            continue
        done = spent.metadata if spent is not None else {}
        table.add_row(
            name,
            f"{planned['texts_to_embed']:,}",
            _number(done.get("provider_inputs")),
            f"{planned['estimated_tokens']:,}",
            _number(done.get("tokens")),
            f"{planned['estimated_cost_usd']:.4f}",
            f"{done['estimated_cost_usd']:.4f}" if "estimated_cost_usd" in done else "-",
        )
    return table


# Driver messages that mean a database stopped answering (as opposed to refusing something).
CONNECTION_LOST_MARKERS = (
    "server closed the connection",
    "terminating connection",
    "connection refused",
    "Connection refused",
    "consuming input failed",
    "the connection is lost",
    "No such file or directory",
)
RESUME_ADVICE = (
    "Nothing committed is lost (each table and each chunk of memories is written in a transaction of "
    "its own): start the database again and run `tinybot-migration run` again to resume."
)


def database_gone_message(error: BaseException) -> str | None:
    """What to tell the user when Dagster's own storage stopped answering mid-run, or None when the
    error is something else."""
    from tinybot_migration.passwords import redact_url, scrub

    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    storage_errors = [
        e for e in chain if type(e).__module__.split(".")[0] in ("dagster_postgres", "sqlalchemy", "psycopg2")
    ]
    if not storage_errors:
        return None
    url = os.environ.get("DAGSTER_STORAGE_URL", "")
    root = chain[-1]
    last = scrub(str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__, url)
    where = f"Dagster's run storage at {redact_url(url)}" if url else "Dagster's run storage"
    return f"the database went away during the run: {where} stopped answering ({last}). {RESUME_ADVICE}"
