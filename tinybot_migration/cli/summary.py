"""The summary `tinybot-migration run` and `demo` print: per asset rows, writes and checks, then the
memories and their embeddings, then every failed check."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tinybot_migration.lib.database import connection_lost
from tinybot_migration.lib.memory_bill import SHAPES_EXPORT
from tinybot_migration.lib.settings import DAGSTER_STORAGE

# Off a terminal (CI logs, pipes) rich assumes 80 columns, too narrow for the summary table.
console = Console(width=None if Console().is_terminal else 140)


def print_summary(report, bill=None) -> None:
    """The migration's summary; with `bill` (the `MemoryBill` estimated before it), the bill it
    announced against what was spent."""
    table = Table()
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
    if report.assets:  # a run that failed before any step has no table to show
        console.print(table)
    seeded = (
        report.assets["qdrant_vectors"].metadata.get("cache_rows_seeded", 0)
        if "qdrant_vectors" in report.assets
        else 0
    )
    for name, asset in report.assets.items():
        if "records_imported" in asset.metadata:
            console.print(_shapes_line(name, asset.metadata))
        if "old_pending_memories" in asset.metadata:
            console.print(_pending_line(name, asset.metadata))
        if "memories_written" in asset.metadata:
            planned = bill.sources.get(name) if bill is not None else None
            console.print(_memory_line(name, asset.metadata, planned, seeded))
        if "build_seconds" in asset.metadata:
            _print_index(name, asset.metadata)
        if "points_matched" in asset.metadata:
            console.print(_qdrant_line(name, asset.metadata), highlight=False)
    for name, asset in report.assets.items():
        if "verdict" in asset.metadata:
            _print_cutover(name, asset.metadata)
    _print_findings(report)
    if report.interrupted:
        console.print(f"[yellow]interrupted[/]: {report.failure}. {interrupted_advice()}")
    elif report.failure:
        console.print(f"[red]run failed[/]: {report.failure}")
        if connection_lost(report.failure):
            console.print(f"A database went away. {RESUME_ADVICE}")
    checks = report.checks
    verdict = "[green]all checks passed[/]" if report.ok else "[red]migration NOT verified[/]"
    warned = f" ({len(report.warnings)} warning(s))" if report.warnings else ""
    # Short run ids, as the UI shows them (and finds them).
    console.print(
        f"{verdict}: {sum(c.passed for c in checks)}/{len(checks)} checks{warned}, "
        f"total {report.seconds:.1f}s, runs {', '.join(run_id[:8] for run_id in report.run_ids)}"
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


def _memory_line(name: str, m: dict, planned: dict | None = None, seeded: int = 0) -> str:
    """What a memory asset wrote and embedded; with `planned` (its estimate's figures), the bill
    the dry run announced, said to match when texts, tokens and dollars all do."""
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
    if planned:
        announced = (planned["texts_to_embed"], planned["estimated_tokens"], planned["estimated_cost_usd"])
        spent = (m.get("provider_inputs"), m.get("tokens"), m.get("estimated_cost_usd", 0.0))
        as_spent = announced[:2] == spent[:2] and round(announced[2], 4) == round(spent[2], 4)
        # The bill is priced before the landing: texts proven Qdrant vectors then served cost nothing.
        served = announced[0] - (spent[0] or 0) if seeded else 0
        line += (
            f"; the dry run estimated {announced[0]:,} texts, {announced[1]:,} tokens, ${announced[2]:.4f}"
            + (
                " (as spent)"
                if as_spent
                else f" ({served:,} of them came from proven Qdrant vectors)"
                if served > 0
                else ""
            )
        )
    return line


def _pending_line(name: str, m: dict) -> str:
    return (
        f"{name}: {m['old_pending_memories']:,} old pending memories: {m['resolved']:,} resolved by the rebuild, "
        f"{m['copied']:,} copied for the bot's processor, {m['rejected']:,} rejected "
        "(pending_memory_outcomes)"
    )


def _shapes_line(name: str, m: dict) -> str:
    if m["export_folder"].startswith("no export"):
        return f"{name}: nothing to import ({m['export_folder']})"
    line = (
        f"{name}: {m['records']:,} shapes.inc records: {m['records_imported']:,} imported, "
        f"{m['records_deleted']:,} deleted, {m['records_duplicate']:,} duplicates, "
        f"{m['records_rejected']:,} rejected"
        + (f", {m['unreadable_files']:,} unreadable file(s)" if m.get("unreadable_files") else "")
        + f" (shapes_rejects); {m['unmapped_senders']:,} of "
        f"{m['senders']:,} senders unmapped"
    )
    if m.get("memories_linked"):
        line += f"; {m['memories_linked']:,} memories linked to personas"
    return line


def _qdrant_line(name: str, m: dict) -> str:
    outcomes = ("matched", "imported", "duplicate", "superseded", "rejected")
    counts = ", ".join(f"{m.get(f'points_{o}', 0):,} {o}" for o in outcomes)
    return f"{name}: {m['points']:,} points: {counts} ({m.get('memories_imported_written', 0):,} written now)"


def _print_cutover(name: str, m: dict) -> None:
    """The go/no-go in a line or two: its verdict, and the first blockers (`cutover-report` has the rest)."""
    colour = "green" if m["verdict"] == "GO" else "red"
    lines = [line for line in str(m.get("report", "")).splitlines() if line.startswith("- blocker")]
    console.print(
        f"{name}: [bold {colour}]{m['verdict']}[/] for cutover, {m['blockers']} blockers"
        + (" (`tinybot-migration cutover-report` says why)" if lines else ""),
        highlight=False,
    )
    for line in lines[:3]:
        console.print(f"  {line[2:]}", highlight=False, no_wrap=True, overflow="ellipsis")


def _print_index(name: str, m: dict) -> None:
    line = f"{name}: {m['action']} over {m['dagster/row_count']:,} memories"
    if m["action"] != "left in place":
        line += f" in {m['build_seconds']:.1f}s (maintenance_work_mem {m['maintenance_work_mem_mb']:,} MB"
        if m.get("scope_order_seconds") is not None:
            line += f"; rows put in persona order first, {m['scope_order_seconds']:.1f}s"
        line += ")"
    line += f", {m['index_size_bytes'] / 2**20:,.1f} MB"
    if m.get("persona_indexes"):
        line += f"; {m['persona_indexes']:,} persona indexes, {m['persona_index_bytes'] / 2**20:,.1f} MB"
    console.print(line)
    buckets = [b for b in ("smallest", "median", "largest") if f"search_p95_ms_{b}" in m]
    if m.get("search_queries") and buckets:
        console.print(
            f"search: {m['search_queries']} queries, recall@{m['search_recall_at']} "
            f"at least {m['search_min_recall']:.3f}; p95 "
            + " / ".join(f"{m[f'search_p95_ms_{b}']:.2f}" for b in buckets)
            + " ms at "
            + " / ".join(f"{m[f'search_rows_{b}']:,}" for b in buckets)
            + " memories a persona"
        )
    if m.get("search_example"):  # one line: the texts are examples, not the point
        console.print(f"example search: {m['search_example']}", no_wrap=True, overflow="ellipsis")


def print_estimate(bill) -> None:
    """What a dry run found (a `MemoryBill`): per memory asset, the texts to embed and their
    estimated bill, then what the export survey found."""
    for name, m in bill.sources.items():
        line = (
            f"{name} (dry run): {m.get('memories_to_write', 0):,} memories to write, "
            f"{m['texts_to_embed']:,} texts to embed ({m['cache_hits']:,} already in the cache), "
            f"about {m['estimated_tokens']:,} tokens, ${m['estimated_cost_usd']:.4f} with {m['embedding_model']}"
        )
        if m.get("history_from") == "old database":
            line += " (history paired from the old database: the new one has none yet)"
        if m.get("records"):
            line += (
                f"; {m['records']:,} records: {m['records_to_import']:,} to import, {m['records_deleted']:,} "
                f"deleted, {m['records_duplicate']:,} duplicates, {m['records_rejected']:,} rejected, "
                f"{m['unmapped_senders']:,} unmapped senders"
            )
        console.print(line)
    for finding in bill.findings:  # the export survey's checks, all WARN
        console.print(f"[yellow]{finding.severity}[/] {SHAPES_EXPORT}.{finding.name}: {finding.description}")
    console.print(f"dry run: nothing written, no provider called ({bill.seconds:.1f}s)")


def interrupted_advice(command: str = "run") -> str:
    """What to tell the user after Ctrl-C or SIGTERM stopped `command`."""
    if command == "sync":
        return "Each batch applied stays: run the same `tinybot-migration sync` again to finish it."
    return (
        "What was written stays (each table and each chunk of memories commits on its own) and what was "
        "paid for is in the embedding cache: run `tinybot-migration run` again to resume."
    )


RESUME_ADVICE = (
    "Nothing committed is lost (each table and each chunk of memories is written in a transaction of "
    "its own): start the database again and run `tinybot-migration run` again to resume."
)


def database_gone_message(error: BaseException) -> str | None:
    """What to tell the user when Dagster's own storage stopped answering mid-run, or None when the
    error is something else."""
    from tinybot_migration.lib.passwords import redact_url, scrub

    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    storage_errors = [
        e for e in chain if type(e).__module__.split(".")[0] in ("dagster_postgres", "sqlalchemy", "psycopg2")
    ]
    if not storage_errors:
        return None
    url = DAGSTER_STORAGE.configured_url() or ""
    root = chain[-1]
    last = scrub(str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__, url)
    where = f"Dagster's run storage at {redact_url(url)}" if url else "Dagster's run storage"
    return f"the database went away during the run: {where} stopped answering ({last}). {RESUME_ADVICE}"
