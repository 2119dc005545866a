"""Benchmark: wall seconds and peak memory of each stage of the migration, at several scales.

    python benchmarks/stage_footprint.py --scales 10 100
    python benchmarks/stage_footprint.py --scales 10 100 --stages relational memories shapes

Each stage runs in a process of its own, on the same new database, in the order of
`tinybot-migration run`: `relational` (every table copied and all 39 checks), `survey` (the
`shapes_export` asset's read of every export file, in the same Dagster run), `memories` (the
memory rebuild for every personality), `shapes` (the shapes.inc import for every personality),
`index` (the HNSW build over every memory). The two embedding stages talk to
benchmarks/fast_provider.py (100 ms a request, the cheap server), so what they measure is our
code. A process that only imports the package and connects (`baseline`) shows what any stage
starts from. Peak memory is the process's maximum resident set (`ru_maxrss` from wait4), exact,
not sampled. Demo data is shared with the other benchmarks (benchmarks/.tinybot-bench). Figures go
to benchmarks/results/stage_footprint_scales_<scales>[_<stages>].json.

What the figures should show: no stage holds a table in Python memory, so a stage's peak at
scale 100 exceeds its peak at scale 10 by no more than its chunks and per-personality state
explain, while its rows grow tenfold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

from memory_rebuild import KEY, ProviderProcess  # noqa: E402
from relational_copy import fresh_database, old_connection  # noqa: E402

from tinybot_migration.lib.demo_data import generate_demo_data, old_database_has_data  # noqa: E402
from tinybot_migration.lib.embedded_postgres import embedded_database_url  # noqa: E402

STAGES = ("relational", "survey", "memories", "shapes", "index")
RESULTS = BENCHMARKS / "results"
LATENCY_SECONDS = 0.1


# --- the stages, each run in a child process ---------------------------------------------------


def run_relational(old_url: str, new_url: str, **_) -> dict:
    from tinybot_migration.lib.new_database_schema import apply_new_schema
    from tinybot_migration.lib.relational.checks import run_table_checks
    from tinybot_migration.lib.relational.copy import IdMaps, copy_table
    from tinybot_migration.lib.relational.tables import RELATIONAL_TABLES

    with old_connection(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        apply_new_schema(new)
        results = [copy_table(old, new, spec, IdMaps(old)) for spec in RELATIONAL_TABLES]
    failed = [
        outcome.description
        for spec in RELATIONAL_TABLES
        for outcome in run_table_checks(
            lambda: old_connection(old_url), lambda: psycopg.connect(new_url, autocommit=True), spec
        )
        if not outcome.passed
    ]
    if failed:
        raise RuntimeError(f"checks failed: {failed}")
    return {"rows": sum(r.rows_read for r in results)}


def run_survey(export_dir: str, **_) -> dict:
    from tinybot_migration.lib.shapes.export import memory_folders, survey_export

    survey = survey_export(Path(export_dir), set(memory_folders(Path(export_dir))))
    return {"rows": sum(f.total for f in survey.files)}


def _provider(provider_url: str):
    from tinybot_migration.lib.embeddings.client import EmbeddingClient, EmbeddingSettings

    return EmbeddingClient(EmbeddingSettings(provider="openai", api_key=KEY, base_url=provider_url))


def _slugs(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]


def run_memories(new_url: str, provider_url: str, **_) -> dict:
    from tinybot_migration.lib.memories.rebuild import rebuild_memories

    with psycopg.connect(new_url, autocommit=True) as conn:
        report = rebuild_memories(
            conn,
            _provider(provider_url),
            _slugs(conn),
            connect=lambda: psycopg.connect(new_url, autocommit=True),
        )
    return {"rows": report.memories_written, "requests": report.requests}


def run_shapes(new_url: str, provider_url: str, export_dir: str, **_) -> dict:
    from tinybot_migration.lib.personalities import personality_ids_for
    from tinybot_migration.lib.shapes.importer import import_shapes_memories

    with psycopg.connect(new_url, autocommit=True) as conn:
        report = import_shapes_memories(
            conn,
            _provider(provider_url),
            Path(export_dir),
            personality_ids_for(conn, _slugs(conn)),
            connect=lambda: psycopg.connect(new_url, autocommit=True),
        )
    return {"rows": report.memories_written, "requests": report.requests}


def run_index(new_url: str, **_) -> dict:
    from tinybot_migration.lib.memories.vector_index import ensure_vector_index

    with psycopg.connect(new_url, autocommit=True) as conn:
        ensure_vector_index(conn)
        rows = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    return {"rows": rows}


def run_baseline(new_url: str, **_) -> dict:
    import tinybot_migration.definitions  # noqa: F401  (what every stage imports, Dagster included)

    with psycopg.connect(new_url, autocommit=True) as conn:
        conn.execute("SELECT 1")
    return {"rows": 0}


CHILDREN = {
    "baseline": run_baseline,
    "relational": run_relational,
    "survey": run_survey,
    "memories": run_memories,
    "shapes": run_shapes,
    "index": run_index,
}


# --- the parent: one child per stage, timed and measured ----------------------------------------


def measure(stage: str, arguments: dict) -> dict:
    """Run `stage` in a child process; its wall seconds, peak RSS and what it reported."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", stage, "--arguments", json.dumps(arguments)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=BENCHMARKS.parent,
    )
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {child.returncode})")
    reported = json.loads(output.strip().splitlines()[-1])
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        **reported,
    }


def demo_data(scale: int, home: Path) -> tuple[str, Path]:
    old_url = embedded_database_url(f"bench_old_scale_{scale}", home)
    export_dir = home / f"export_scale_{scale}"
    if not old_database_has_data(old_url) or not export_dir.exists():
        print(f"generating demo data at scale {scale} …", flush=True)
        generate_demo_data(old_url, export_dir, scale=scale, seed=42, replace=True)
    return old_url, export_dir


def measure_scale(scale: int, stages: list[str], home: Path, provider_url: str) -> dict:
    old_url, export_dir = demo_data(scale, home)
    new_url = fresh_database(f"bench_stages_scale_{scale}", home)
    arguments = {
        "old_url": old_url,
        "new_url": new_url,
        "provider_url": provider_url,
        "export_dir": str(export_dir),
    }
    figures = {"baseline": measure("baseline", arguments)}
    for stage in stages:
        figures[stage] = measure(stage, arguments)
        print(f"scale {scale} {stage}: {json.dumps(figures[stage])}", flush=True)
    return figures


def growth(by_scale: dict[str, dict], low: str, high: str) -> dict:
    """Per stage, scale `high` against scale `low`: rows, seconds and peak RSS ratios."""
    out = {}
    for stage, figures in by_scale[high].items():
        before = by_scale[low].get(stage)
        if before is None or stage == "baseline":
            continue
        out[stage] = {
            "rows": round(figures["rows"] / before["rows"], 1) if before["rows"] else None,
            "seconds": round(figures["seconds"] / before["seconds"], 1),
            "peak_rss_mb_added": round(figures["peak_rss_mb"] - before["peak_rss_mb"], 1),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--home", type=Path, default=BENCHMARKS / ".tinybot-bench")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](**json.loads(args.arguments))))
        return 0

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    by_scale: dict[str, dict] = {}
    with ProviderProcess(LATENCY_SECONDS, kind="fast") as server:
        for scale in args.scales:
            by_scale[str(scale)] = measure_scale(scale, args.stages, home, server.base_url)
    scales = [str(s) for s in args.scales]
    figures = {
        "stages": args.stages,
        "latency_seconds": LATENCY_SECONDS,
        "by_scale": by_scale,
        "growth": {
            f"{high}/{low}": growth(by_scale, low, high)
            for low, high in zip(scales, scales[1:], strict=False)
        },
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"stage_footprint_scales_{'_'.join(scales)}"
    if args.stages != list(STAGES):
        name += "_" + "_".join(args.stages)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
