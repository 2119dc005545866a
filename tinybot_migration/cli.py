"""`tinybot-migration`: demo data, the demo, the migration run, and the Dagster UI."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from rich.console import Console
from rich.table import Table

from tinybot_migration.settings import shapes_export_dir, tinybot_home

# Off a terminal (CI logs, pipes) rich assumes 80 columns, too narrow for the summary table.
console = Console(width=None if Console().is_terminal else 140)

DATABASE_URL_VARIABLES = ("OLD_DATABASE_URL", "DATABASE_URL")


def _demo_data(scale: int, seed: int, replace: bool) -> None:
    from tinybot_migration.demo_data import generate_demo_data
    from tinybot_migration.embedded_postgres import embedded_database_url
    from tinybot_migration.settings import OLD_DATABASE_NAME

    summary = generate_demo_data(
        embedded_database_url(OLD_DATABASE_NAME), shapes_export_dir(), scale=scale, seed=seed, replace=replace
    )
    console.print(
        f"demo data (scale {summary.scale}, seed {summary.seed}) written in {summary.seconds:.1f}s: "
        + ", ".join(f"{table} {count:,}" for table, count in summary.table_counts.items())
        + f"; {summary.shapes_memories:,} shapes.inc memories in {summary.shapes_folders} folders"
        f" under {shapes_export_dir()}"
    )


def _refuse_configured_sources(command: str) -> None:
    """Demo data goes only into the embedded old DB and $TINYBOT_HOME, never over real sources."""
    if os.environ.get("OLD_DATABASE_URL"):
        raise SystemExit(
            f"{command} only writes demo data into the embedded old database, and OLD_DATABASE_URL is set: "
            "the old database is read-only to this project. Unset OLD_DATABASE_URL to use the demo."
        )
    if os.environ.get("SHAPES_EXPORT_DIR"):
        raise SystemExit(
            f"{command} writes its shapes.inc export under $TINYBOT_HOME, and SHAPES_EXPORT_DIR is set: "
            "a real export is never overwritten. Unset SHAPES_EXPORT_DIR to use the demo."
        )


def cmd_demo_data(args: argparse.Namespace) -> int:
    _refuse_configured_sources("demo-data")
    _demo_data(args.scale, args.seed, args.replace)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _refuse_configured_sources("demo")
    if os.environ.pop("DATABASE_URL", None):
        console.print("[yellow]demo always migrates into the embedded database; ignoring DATABASE_URL[/]")
    from tinybot_migration.demo_data import old_database_has_data
    from tinybot_migration.embedded_postgres import embedded_database_url
    from tinybot_migration.settings import OLD_DATABASE_NAME

    console.print(f"tinybot demo in {tinybot_home()}")
    if args.replace or not old_database_has_data(embedded_database_url(OLD_DATABASE_NAME)):
        # An empty old DB next to a leftover demo export (say the DB was wiped): regenerate both.
        _demo_data(args.scale, args.seed, replace=args.replace or shapes_export_dir().exists())
    else:
        console.print("demo data already present (use --replace to regenerate)")
    return _run_and_report()


def cmd_run(args: argparse.Namespace) -> int:
    return _run_and_report(log_level=args.log_level)


def cmd_dev(args: argparse.Namespace) -> int:
    """Start the embedded server, prepare the instance, and serve the Dagster UI until interrupted."""
    from tinybot_migration.dagster_instance import prepare_instance

    home = prepare_instance()
    console.print(f"Dagster instance: {home}")
    command = ["dagster", "dev", "-m", "tinybot_migration.definitions", *args.dagster_args]
    # `dagster dev -m` works from any folder (`dg dev` needs the project's pyproject); its
    # "superseded" notice is noise here.
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = ",".join(
        filter(None, [env.get("PYTHONWARNINGS"), "ignore::dagster_shared.utils.warnings.SupersessionWarning"])
    )
    # Its own session, so a SIGTERM to it is not lost (DESIGN §8); Ctrl-C still reaches it.
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()


def _run_and_report(log_level: str = "INFO") -> int:
    from tinybot_migration.migration_run import run_migration

    report = run_migration(log_level=log_level)
    print_summary(report)
    return 0 if report.ok else 1


def print_summary(report) -> None:
    table = Table(title="tinybot migration")
    for column in ("asset", "old rows", "new rows", "written", "id collisions", "checks", "seconds"):
        table.add_column(column, justify="left" if column == "asset" else "right")
    for name, asset in report.assets.items():
        parity = next((c for c in asset.checks if c.name == "row_count_parity"), None)
        passed = sum(c.passed for c in asset.checks)
        checks = f"{passed}/{len(asset.checks)} passed" if asset.checks else "-"
        if asset.checks and passed < len(asset.checks):
            checks = f"[red]{checks}[/]"
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
        if "memories_written" in asset.metadata:
            console.print(_memory_line(name, asset.metadata))
    for check in report.failed_checks:
        console.print(f"[red]FAILED[/] {check.asset}.{check.name}: {check.description}")
    for note in report.notes:
        console.print(f"note: {note}")
    if report.failure:
        console.print(f"[red]run failed[/]: {report.failure}")
    checks = report.checks
    verdict = "[green]all checks passed[/]" if report.ok else "[red]migration NOT verified[/]"
    console.print(
        f"{verdict}: {sum(c.passed for c in checks)}/{len(checks)} checks, "
        f"total {report.seconds:.1f}s, runs {', '.join(report.run_ids)}"
    )


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
    line = (
        f"{name}: {m.get('dagster/row_count', 0):,} memories ({m['memories_written']:,} written, "
        f"{m.get('memories_already_present', 0):,} already present) from {m.get('exchanges', 0):,} "
        f"exchanges; embeddings ({m.get('embedding_model', '?')}): {m.get('cache_hits', 0):,} cache hits, "
        f"{m.get('provider_inputs', 0):,} texts embedded{_requests(m)}, {m.get('tokens', 0):,} tokens{cost}"
    )
    if m.get("exchanges_rejected"):
        line += f"; [red]{m['exchanges_rejected']:,} exchanges rejected by the provider[/]"
    return line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinybot-migration", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_demo_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--scale", type=int, default=1, help="1 = production's shape (4,364 messages)")
        command.add_argument("--seed", type=int, default=42, help="same seed, same data")
        command.add_argument("--replace", action="store_true", help="replace existing demo data")

    demo_data = commands.add_parser(
        "demo-data", help="fill the embedded old DB and write a shapes.inc export"
    )
    add_demo_options(demo_data)
    demo_data.set_defaults(func=cmd_demo_data)

    demo = commands.add_parser("demo", help="embedded DB + demo data + the whole migration + a summary")
    add_demo_options(demo)
    demo.set_defaults(func=cmd_demo)

    run = commands.add_parser("run", help="the whole migration against the configured databases")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_run)

    dev = commands.add_parser(
        "dev",
        help="serve the Dagster UI on the project's persistent instance (other options go to `dagster dev`)",
    )
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "dev":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.dagster_args = extra
    if getattr(args, "scale", 1) < 1:
        raise SystemExit("--scale must be 1 or more")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
