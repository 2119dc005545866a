"""Benchmark: the relational migration against its baselines, on the same data, in one run.

    python benchmarks/relational_copy.py --scale 100

Measured on one embedded server (under benchmarks/.tinybot-bench unless --home is given):
  reference  `pg_dump -Fc -Z0 | pg_restore` of the old DB (no re-keying: the floor for moving bytes)
  pipeline   every table through `lib.relational.copy.copy_table` (binary COPY, re-key, staging + upsert),
             then every check (`run_table_checks`); then the same again, which must write nothing
  baseline   the old approach: the same re-keying, one INSERT statement per row
Reported as seconds, rows/s and ratios; figures also go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinybot_migration.lib.demo_data import generate_demo_data, old_database_has_data  # noqa: E402
from tinybot_migration.lib.embedded_postgres import binaries_dir, embedded_database_url, embedded_server  # noqa: E402
from tinybot_migration.lib.ids import SeedAllocator  # noqa: E402
from tinybot_migration.lib.new_database_schema import apply_new_schema  # noqa: E402
from tinybot_migration.lib.postgres import column_types  # noqa: E402
from tinybot_migration.lib.relational.checks import run_table_checks  # noqa: E402
from tinybot_migration.lib.relational.copy import IdMaps, copy_table  # noqa: E402
from tinybot_migration.lib.relational.tables import RELATIONAL_TABLES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def fresh_database(name: str, home: Path) -> str:
    server = embedded_server(home)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return embedded_database_url(name, home)


def old_connection(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True, options="-c default_transaction_read_only=on")
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # as OldDatabaseResource opens it
    return conn


def run_reference(old_url: str, home: Path) -> float:
    target = fresh_database("bench_pg_restore", home)
    bins = binaries_dir()
    started = time.perf_counter()
    dump = subprocess.Popen([str(bins / "pg_dump"), "-Fc", "-Z0", "-d", old_url], stdout=subprocess.PIPE)
    subprocess.run([str(bins / "pg_restore"), "--no-owner", "-d", target], stdin=dump.stdout, check=True)
    dump.stdout.close()
    if dump.wait() != 0:
        raise RuntimeError("pg_dump failed")
    return time.perf_counter() - started


def run_pipeline(old_url: str, new_url: str) -> dict:
    with old_connection(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        apply_new_schema(new)
        started = time.perf_counter()
        # A fresh IdMaps per table, as each asset has: parents' maps are rebuilt from the old DB.
        results = [copy_table(old, new, spec, IdMaps(old)) for spec in RELATIONAL_TABLES]
        copied = time.perf_counter()
        outcomes = [
            o
            for spec in RELATIONAL_TABLES
            for o in run_table_checks(
                lambda: old_connection(old_url), lambda: psycopg.connect(new_url, autocommit=True), spec
            )
        ]
        checked = time.perf_counter()
        failed = [o.description for o in outcomes if not o.passed]
        if failed:
            raise RuntimeError(f"checks failed: {failed}")
        rerun_started = time.perf_counter()
        rerun = [copy_table(old, new, spec, IdMaps(old)) for spec in RELATIONAL_TABLES]
        rerun_seconds = time.perf_counter() - rerun_started
    rewritten = sum(r.rows_written for r in rerun)
    if rewritten:
        raise RuntimeError(f"the re-run wrote {rewritten} rows")
    return {
        "rows": sum(r.rows_read for r in results),
        "copy_seconds": copied - started,
        "check_seconds": checked - copied,
        "seconds": checked - started,
        "checks": len(outcomes),
        "rerun_seconds": rerun_seconds,
        "per_table_seconds": {r.table: round(r.seconds, 3) for r in results},
    }


def run_row_by_row(old_url: str, new_url: str) -> dict:
    """The old approach: rows through Python, ids from the Python seeds, one INSERT per row.

    Its result must equal the pipeline's row for row, which also proves that the SQL seeds the
    pipeline builds agree with the Python seeds in ids.py at scale.
    """
    rows = 0
    with old_connection(old_url) as old, psycopg.connect(new_url) as new:
        apply_new_schema(new)
        new.commit()
        started = time.perf_counter()
        maps: dict[str, dict[uuid.UUID, uuid.UUID]] = {}
        for spec in RELATIONAL_TABLES:
            allocator = SeedAllocator()
            columns = spec.columns_in(old)  # a column the old table lacks keeps its default
            fk_parents = {fk.column: fk.parent for fk in spec.foreign_keys}
            # JSON travels as text: loading it into Python would turn a JSON null into SQL NULL.
            json_columns = {c.name for c in column_types(old, spec.name, columns) if c.data_type == "jsonb"}
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
                sql.Identifier(spec.name),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.SQL("%s::jsonb" if c in json_columns else "%s") for c in columns),
            )
            select = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::text" if c in json_columns else "{}").format(sql.Identifier(c))
                    for c in columns
                ),
                sql.Identifier(spec.name),
                sql.SQL(spec.order_by),
            )
            mapping: dict[uuid.UUID, uuid.UUID] = {}
            with old.cursor() as read, new.cursor() as write:
                for record in read.execute(select):
                    row = dict(zip(columns, record, strict=True))
                    for column, parent in fk_parents.items():
                        if row[column] is not None:
                            row[column] = maps[parent][row[column]]
                    if spec.has_id:
                        new_id = allocator.allocate(spec.seed(*[row[c] for c in spec.seed_columns]))
                        mapping[row["id"]] = new_id
                        row["id"] = new_id
                    write.execute(insert, list(row.values()))
                    rows += 1
            new.commit()
            maps[spec.name] = mapping
    return {"rows": rows, "seconds": time.perf_counter() - started}


def table_fingerprints(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return {
            spec.name: conn.execute(
                sql.SQL("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t").format(
                    sql.Identifier(spec.name)
                )
            ).fetchone()[0]
            for spec in RELATIONAL_TABLES
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--home", type=Path, default=Path(__file__).resolve().parent / ".tinybot-bench")
    parser.add_argument("--skip-row-by-row", action="store_true", help="skip the slow baseline")
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)

    old_url = embedded_database_url(f"bench_old_scale_{args.scale}", home)
    if not old_database_has_data(old_url):
        print(f"generating demo data at scale {args.scale} …", flush=True)
        summary = generate_demo_data(
            old_url, home / f"export_scale_{args.scale}", scale=args.scale, seed=args.seed
        )
        print(f"  {summary.seconds:.1f}s", flush=True)
    with psycopg.connect(old_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        messages = conn.execute("SELECT count(*) FROM conversation_history").fetchone()[0]

    print(f"scale {args.scale}: {messages:,} messages", flush=True)
    reference = run_reference(old_url, home)
    print(f"pg_dump -Z0 | pg_restore: {reference:.2f}s", flush=True)
    pipeline = run_pipeline(old_url, fresh_database("bench_pipeline", home))
    print(
        f"pipeline: {pipeline['seconds']:.2f}s ({pipeline['copy_seconds']:.2f}s copy + "
        f"{pipeline['check_seconds']:.2f}s for {pipeline['checks']} checks), "
        f"{pipeline['rows'] / pipeline['seconds']:,.0f} rows/s; idempotent re-run {pipeline['rerun_seconds']:.2f}s",
        flush=True,
    )
    figures = {
        "scale": args.scale,
        "messages": messages,
        "rows": pipeline["rows"],
        "pg_dump_restore_seconds": round(reference, 3),
        "pipeline": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in pipeline.items()},
        "pipeline_rows_per_second": round(pipeline["rows"] / pipeline["seconds"]),
        "pipeline_vs_pg_dump_restore": round(pipeline["seconds"] / reference, 2),
    }
    if not args.skip_row_by_row:
        baseline_url = fresh_database("bench_row_by_row", home)
        baseline = run_row_by_row(old_url, baseline_url)
        same = table_fingerprints(baseline_url) == table_fingerprints(
            embedded_database_url("bench_pipeline", home)
        )
        figures["row_by_row_result_identical"] = same
        if not same:
            print("WARNING: the row-by-row baseline and the pipeline disagree", flush=True)
        figures["row_by_row"] = {
            "seconds": round(baseline["seconds"], 3),
            "rows_per_second": round(baseline["rows"] / baseline["seconds"]),
        }
        figures["row_by_row_vs_pipeline"] = round(baseline["seconds"] / pipeline["seconds"], 1)
        print(
            f"row-by-row INSERT: {baseline['seconds']:.2f}s, {baseline['rows'] / baseline['seconds']:,.0f} rows/s",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"relational_copy_scale_{args.scale}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
