"""Benchmark: how much of `tinybot-migration run` is Dagster's bookkeeping rather than the assets' work.

    python benchmarks/dagster_share.py --scale 10

Makes a fresh TINYBOT_HOME (benchmarks/.tinybot-bench/dagster_share_scale_<scale>), fills it with
`tinybot-migration demo-data --scale <scale>`, times `tinybot-migration run` (embedding offline
with the hash embedder, as on a machine without an API key), then reads the runs back from the
instance's event log. A step's own work is from its STEP_START to its first ASSET_MATERIALIZATION
(the asset function has returned by then, checks included); everything else (the run's start, the
planned events, the per-partition materializations, the CLI starting and moving between stages)
is counted as bookkeeping. Figures go to benchmarks/results/dagster_share_scale_<scale>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))

RESULTS = BENCHMARKS / "results"
CLI = str(Path(sys.executable).parent / "tinybot-migration")
CONFIGURED = ("OLD_DATABASE_URL", "DATABASE_URL", "DAGSTER_HOME", "DAGSTER_STORAGE_URL", "SHAPES_EXPORT_DIR")


def cli_environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED and not k.startswith("OPENAI_")}
    env["TINYBOT_HOME"] = str(home)
    return env


def timed_cli(home: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([CLI, *args], env=cli_environment(home), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tinybot-migration {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started


def step_work(home: Path) -> dict:
    """Per run and step, from the instance's event log: the run's span and each step's own work."""
    os.environ["TINYBOT_HOME"] = str(home)
    from dagster import DagsterEventType, DagsterInstance

    from tinybot_migration.runtime.dagster_instance import prepare_instance

    prepare_instance()
    runs = []
    with DagsterInstance.get() as instance:
        for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
            run = record.dagster_run
            events = instance.all_logs(run.run_id)
            started: dict[str, float] = {}
            returned: dict[str, float] = {}
            materializations: dict[str, int] = defaultdict(int)
            for entry in events:
                event = entry.dagster_event
                if event is None or entry.step_key is None:
                    continue
                if event.event_type == DagsterEventType.STEP_START:
                    started[entry.step_key] = entry.timestamp
                elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                    returned.setdefault(entry.step_key, entry.timestamp)
                    materializations[entry.step_key] += 1
            steps = {key: round(returned[key] - started[key], 2) for key in started if key in returned}
            runs.append(
                {
                    "job": run.job_name,
                    "span_seconds": round(events[-1].timestamp - events[0].timestamp, 2),
                    "events": len(events),
                    "steps_work_seconds": steps,
                    "materializations": dict(materializations),
                }
            )
    return {"runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    home = BENCHMARKS / ".tinybot-bench" / f"dagster_share_scale_{args.scale}"
    shutil.rmtree(home, ignore_errors=True)
    print(f"demo data at scale {args.scale} …", flush=True)
    timed_cli(home, "demo-data", "--scale", str(args.scale))
    print("tinybot-migration run …", flush=True)
    wall = timed_cli(home, "run")
    figures = step_work(home)
    work = sum(sum(run["steps_work_seconds"].values()) for run in figures["runs"])
    figures |= {
        "scale": args.scale,
        "run_wall_seconds": round(wall, 2),
        "assets_work_seconds": round(work, 2),
        "bookkeeping_seconds": round(wall - work, 2),
        "bookkeeping_share": round((wall - work) / wall, 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dagster_share_scale_{args.scale}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
