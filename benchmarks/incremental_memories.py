"""Benchmark: what the incremental memory sensor's tick and the run it starts cost, at two scales.

    python benchmarks/incremental_memories.py --scales 10 100

Per scale, demo data is migrated into a new DB on the embedded server (relational tables) and its
memories are rebuilt in full with the offline hash embedder (which records the coverage marks).
Then, with the history complete:
  tick, idle        the sensor's tick (`memory_rebuild_sensor`, through `build_sensor_context` on
                    an instance with every personality registered) with nothing to do: the delta
                    tick (from the cursor a first tick left), and the full reconciliation (the only
                    tick there was before the marks)
  one exchange      one new exchange in the personality with the most history, then the delta
                    tick that finds it and the run it starts (`rebuild_memories(history="delta")`
                    plus the asset's three checks scoped to the delta), against the same run with
                    `history="full"` for another new exchange (how every incremental run paired
                    before the marks)
Each figure is the median of --repeats measurements. Results go to
benchmarks/results/incremental_memories.json with the scale-100 / scale-10 ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dagster import DagsterInstance, build_sensor_context, instance_for_test  # noqa: E402

from benchmarks.memory_rebuild import migrated_new_database  # noqa: E402
from tinybot_migration.defs.memories.sensor import memory_rebuild_sensor  # noqa: E402
from tinybot_migration.defs.partitions import personality_partitions  # noqa: E402
from tinybot_migration.defs.resources import NewDatabaseResource  # noqa: E402
from tinybot_migration.lib.embeddings.client import EmbeddingClient, EmbeddingSettings  # noqa: E402
from tinybot_migration.lib.memories.checks import (  # noqa: E402
    embeddings_present_with_right_dimensions,
    every_exchange_has_one_memory,
    no_duplicate_memories,
)
from tinybot_migration.lib.memories.coverage import HISTORY_DELTA, HISTORY_FULL  # noqa: E402
from tinybot_migration.lib.memories.rebuild import rebuild_memories  # noqa: E402
from tinybot_migration.lib.personalities import personality_slugs  # noqa: E402
from tinybot_migration.lib.schema import bot_timestamp  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROVIDER = EmbeddingClient(EmbeddingSettings(provider="hash"))


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def median_seconds(work, repeats: int) -> float:
    return statistics.median(timed(work)[0] for _ in range(repeats))


def tick(instance: DagsterInstance, url: str, cursor: str | None):
    resources = {"new_database": NewDatabaseResource(url=url)}
    with build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return memory_rebuild_sensor(context)


def busiest_personality(conn: psycopg.Connection) -> tuple[str, uuid.UUID, str, uuid.UUID, int]:
    """(slug, id, a channel, a persona, messages) of the personality with the most history."""
    return conn.execute(
        "SELECT p.slug, p.id, min(h.channel_id), (array_agg(h.persona_id))[1], count(*)"
        " FROM conversation_history h JOIN personalities p ON p.id = h.personality_id"
        " GROUP BY p.slug, p.id ORDER BY count(*) DESC, p.slug LIMIT 1"
    ).fetchone()


def add_exchange(conn: psycopg.Connection, personality_id, channel: str, persona_id, text: str) -> None:
    now = bot_timestamp()
    for role, content in (("user", f"{text}?"), ("assistant", f"{text}!")):
        conn.execute(
            "INSERT INTO conversation_history VALUES (%s, %s, NULL, %s, %s, %s, %s, %s)",
            (uuid.uuid4(), channel, personality_id, persona_id, role, content, now),
        )
        now += timedelta(milliseconds=1)  # created_at is timestamp(3): the answer a millisecond later


def run_as_the_asset(conn: psycopg.Connection, slug: str, history: str) -> int:
    """`rebuilt_memories`' work for one personality: the rebuild and its three checks."""
    report = rebuild_memories(conn, PROVIDER, [slug], history=history)
    personality_ids = list(report.personality_ids.values())
    only = report.expected_ids if history == HISTORY_DELTA else None
    outcomes = [
        every_exchange_has_one_memory(conn, report.expected_ids, personality_ids, only_ids=only),
        embeddings_present_with_right_dimensions(conn, personality_ids, PROVIDER.dimensions, only_ids=only),
        no_duplicate_memories(conn, personality_ids, only_ids=only),
    ]
    assert all(o.passed for o in outcomes), [o.description for o in outcomes if not o.passed]
    return report.memories_written


def measure_scale(scale: int, seed: int, home: Path, regenerate: bool, repeats: int) -> dict:
    url = migrated_new_database(scale, seed, home, regenerate, name="incremental")
    figures: dict = {"scale": scale}
    with psycopg.connect(url, autocommit=True) as conn, instance_for_test() as instance:
        conn.execute("TRUNCATE memories, tinybot_migration.memory_coverage")
        slugs = personality_slugs(conn)
        figures["personalities"] = len(slugs)
        figures["messages"] = conn.execute("SELECT count(*) FROM conversation_history").fetchone()[0]
        seconds, report = timed(lambda: rebuild_memories(conn, PROVIDER, slugs))
        figures["full_rebuild"] = {"seconds": round(seconds, 2), "memories": report.memories_written}
        print(f"scale {scale}: {figures['messages']:,} messages, full rebuild {seconds:.1f}s", flush=True)
        instance.add_dynamic_partitions(personality_partitions.name, slugs)
        conn.execute("VACUUM ANALYZE conversation_history")
        conn.execute("VACUUM ANALYZE memories")
        conn.execute("VACUUM ANALYZE tinybot_migration.memory_coverage")

        # A delta tick carries on from the cursor the one before it left (the newest message seen).
        first = tick(instance, url, None)
        assert first.run_requests == []
        cursor = first.cursor
        figures["tick_idle_delta_seconds"] = median_seconds(lambda: tick(instance, url, cursor), repeats)
        figures["tick_idle_full_seconds"] = median_seconds(lambda: tick(instance, url, None), repeats)

        slug, personality_id, channel, persona_id, messages = busiest_personality(conn)
        figures["personality"] = {"slug": slug, "messages": messages}
        delta_ticks, delta_runs, full_runs = [], [], []
        for i in range(repeats):
            add_exchange(conn, personality_id, channel, persona_id, f"benchmark delta {i}")
            seconds, result = timed(lambda c=cursor: tick(instance, url, c))
            assert [r.partition_key for r in result.run_requests] == [slug], result.run_requests
            cursor = result.cursor
            delta_ticks.append(seconds)
            seconds, written = timed(lambda: run_as_the_asset(conn, slug, HISTORY_DELTA))
            assert written == 1, written
            delta_runs.append(seconds)
            add_exchange(conn, personality_id, channel, persona_id, f"benchmark full {i}")
            seconds, written = timed(lambda: run_as_the_asset(conn, slug, HISTORY_FULL))
            assert written == 1, written
            full_runs.append(seconds)
        figures["one_exchange"] = {
            "delta_tick_seconds": statistics.median(delta_ticks),
            "delta_run_seconds": statistics.median(delta_runs),
            "full_run_seconds": statistics.median(full_runs),
        }
    print(json.dumps(figures, indent=2), flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--regenerate", action="store_true", help="generate the demo data again")
    parser.add_argument("--home", type=Path, default=Path(__file__).resolve().parent / ".tinybot-bench")
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    by_scale = {
        scale: measure_scale(scale, args.seed, home, args.regenerate, args.repeats) for scale in args.scales
    }
    out: dict = {"scales": by_scale}
    if len(args.scales) >= 2:
        low, high = by_scale[min(args.scales)], by_scale[max(args.scales)]
        out["ratio_high_to_low"] = {
            "tick_idle_delta": round(high["tick_idle_delta_seconds"] / low["tick_idle_delta_seconds"], 2),
            "tick_idle_full": round(high["tick_idle_full_seconds"] / low["tick_idle_full_seconds"], 2),
            **{
                key: round(high["one_exchange"][key] / low["one_exchange"][key], 2)
                for key in ("delta_tick_seconds", "delta_run_seconds", "full_run_seconds")
            },
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "incremental_memories.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out.get("ratio_high_to_low", {}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
