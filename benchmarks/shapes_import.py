"""Benchmark: the shapes.inc legacy memory import against the old approach, on the same export.

    python benchmarks/shapes_import.py --scale 10

Demo data at the given scale (the old DB and its shapes.inc export folder) is generated once, the
relational tables are migrated into a new DB of this benchmark's own on the embedded server, and a
local OpenAI-compatible server answers with `--latency` seconds per request (0.1 s by default) from
a process of its own, as a real provider would. Then, on the same export:
  pipeline   `import_shapes_memories` for every personality (parse and check each file, map the
             senders to personas, one memory per sender, cache lookups, batched concurrent
             requests, binary COPY per chunk), from empty memories, cache, persona mappings and
             rejects; where its time goes (parse, map, embed and write; and within the last, the
             thread-seconds chunks spent waiting for the cache and provider and in COPY + INSERT);
             then again, which must neither request nor write
  old way    what the old importer did: one request per memory with the sync `openai` client,
             sequentially, and one INSERT per memory, for the first sender of each record only;
             timed on a sample of `--baseline-sample` memories and extrapolated linearly to the
             pipeline's memories (--baseline-sample 0 runs them all)
Figures go to benchmarks/results/shapes_import_scale_<N>.json.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import openai
import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.memory_rebuild import (  # noqa: E402
    KEY,
    MODEL,
    RESULTS,
    ProviderProcess,
    embedding_benchmark_parser,
    export_folder,
    migrated_new_database,
    reset,
)
from tinybot_migration.lib.embeddings.client import EmbeddingClient, EmbeddingSettings  # noqa: E402
from tinybot_migration.lib.memories.writer import NewMemory  # noqa: E402
from tinybot_migration.lib.personalities import personality_ids_for  # noqa: E402
from tinybot_migration.lib.shapes.export import parse_memories_file  # noqa: E402
from tinybot_migration.lib.shapes.importer import import_shapes_memories, memory_of  # noqa: E402

COLUMNS = [f.name for f in fields(NewMemory)]  # the columns the pipeline writes, but the embedding
OLD_INSERT = (
    f"INSERT INTO memories ({', '.join(COLUMNS)}, embedding)"
    f" VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))}) ON CONFLICT (id) DO NOTHING"
)


def run_pipeline(
    conn, url: str, server: ProviderProcess, export_dir: Path, slugs: list[str], concurrency: int
) -> dict:
    conn.execute(
        "TRUNCATE memories, tinybot_migration.embedding_cache, shapes_persona_mappings, tinybot_migration.shapes_rejects"
    )
    provider = EmbeddingClient(
        EmbeddingSettings(
            provider="openai", api_key=KEY, base_url=server.base_url, max_concurrent_requests=concurrency
        )
    )

    def connect():
        return psycopg.connect(url, autocommit=True)

    personality_ids = personality_ids_for(conn, slugs)
    started = time.perf_counter()
    report = import_shapes_memories(conn, provider, export_dir, personality_ids, connect=connect)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = import_shapes_memories(conn, provider, export_dir, personality_ids, connect=connect)
    rerun = time.perf_counter() - started
    assert again.memories_written == 0, f"the re-run wrote {again.memories_written} memories"
    assert again.requests == 0, f"the re-run sent {again.requests} requests"
    records = report.total("records")
    return {
        "seconds": seconds,
        "records": records,
        "records_per_second": round(records / seconds),
        "memories_written": report.memories_written,
        "memories_per_second": round(report.memories_written / seconds),
        "requests": report.requests,
        "cache_hits": report.cache_hits,
        "rejected_records": report.total("rejected"),
        "phase_seconds": {k: round(v, 3) for k, v in report.phase_seconds.items()},
        "embed_thread_seconds": report.embed_seconds,
        "write_thread_seconds": report.write_seconds,
        "rerun_seconds": rerun,
        "rerun_phase_seconds": {k: round(v, 3) for k, v in again.phase_seconds.items()},
    }


def old_way_memories(
    export_dir: Path, slugs: list[str], personality_ids: dict, sample: int
) -> list[NewMemory]:
    """The memories the old importer wrote: the first sender of each kept record only, oldest first;
    files are read slug by slug until there are `sample` of them (0: every file)."""
    by_id: dict = {}
    for slug in slugs:
        if not (export_dir / slug).is_dir():
            continue
        for record in parse_memories_file(export_dir, slug).records:
            memory = memory_of(record, record.senders[0], personality_ids[slug], None)
            by_id.setdefault(memory.id, memory)
        if sample and len(by_id) >= sample:
            break
    memories = sorted(by_id.values(), key=lambda m: (m.created_at, m.id))
    return memories[:sample] if sample else memories


def run_old_way(conn, server: ProviderProcess, memories: list[NewMemory]) -> float:
    """One request per memory, sequentially, one INSERT per memory (the approach being replaced)."""
    reset(conn)
    register_vector(conn)
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    started = time.perf_counter()
    for memory in memories:
        vector = (
            client.embeddings.create(model=MODEL, input=[memory.content], dimensions=1536).data[0].embedding
        )
        values = [getattr(memory, c) for c in COLUMNS]
        conn.execute(OLD_INSERT, (*values, np.asarray(vector, dtype=np.float32)))
    seconds = time.perf_counter() - started
    client.close()
    written = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    assert written == len(memories), f"the old way wrote {written} of {len(memories)} memories"
    return seconds


def print_table(figures: dict) -> None:
    p, o = figures["pipeline"], figures["old_way"]
    phases = p["phase_seconds"]
    rows = [
        ("records in the export", f"{p['records']:,}"),
        ("memories written", f"{p['memories_written']:,}"),
        ("provider requests", f"{p['requests']:,}"),
        ("pipeline wall seconds", f"{p['seconds']:.2f}"),
        ("  records/s", f"{p['records_per_second']:,}"),
        ("  memories/s", f"{p['memories_per_second']:,}"),
        ("  plan: parse, map senders, plan memories (wall s)", f"{phases.get('plan', 0):.2f}"),
        ("  apply: write the sender mappings (wall s)", f"{phases.get('apply', 0):.2f}"),
        ("  embed and write (wall s)", f"{phases.get('embed_and_write', 0):.2f}"),
        ("    cache + provider (thread-s)*", f"{p['embed_thread_seconds']:.2f}"),
        ("    COPY + INSERT (thread-s)*", f"{p['write_thread_seconds']:.2f}"),
        ("  accounting and rejects (wall s)", f"{phases.get('account', 0):.2f}"),
        ("re-run seconds (0 requests, 0 written)", f"{p['rerun_seconds']:.2f}"),
        (f"old way, {o['sample_memories']:,} memories (s)", f"{o['sample_seconds']:.2f}"),
        (
            "old way, all memories (s)" + (" extrapolated" if o["extrapolated"] else ""),
            f"{o['seconds_for_all']:,.0f}",
        ),
        ("speed-up of the pipeline over the old way", f"{figures['old_way_vs_pipeline']:,.1f}x"),
    ]
    width = max(len(name) for name, _ in rows)
    print(
        f"\nshapes.inc import, scale {figures['scale']}, latency {figures['latency_seconds']}s, "
        f"{figures['concurrency']} requests in flight"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>12}")
    print(
        f"  * summed over chunks running {figures['concurrency']} side by side: thread-seconds, not wall time\n",
        flush=True,
    )


def main() -> int:
    parser = embedding_benchmark_parser(__doc__)
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)

    new_url = migrated_new_database(args.scale, args.seed, home, args.regenerate, name="shapes")
    export_dir = export_folder(home, args.scale)
    figures: dict = {
        "scale": args.scale,
        "latency_seconds": args.latency,
        "concurrency": args.concurrency,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with (
        psycopg.connect(new_url, autocommit=True) as conn,
        ProviderProcess(args.latency) as server,
    ):
        slugs = [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]
        print(f"scale {args.scale}: {len(slugs)} personalities, server latency {args.latency}s", flush=True)

        pipeline = run_pipeline(conn, new_url, server, export_dir, slugs, args.concurrency)
        print(
            f"pipeline: {pipeline['seconds']:.2f}s for {pipeline['records']:,} records "
            f"({pipeline['memories_written']:,} memories, {pipeline['requests']} requests); "
            f"re-run {pipeline['rerun_seconds']:.2f}s",
            flush=True,
        )
        memories = old_way_memories(export_dir, slugs, personality_ids_for(conn, slugs), args.baseline_sample)
        old_sample = run_old_way(conn, server, memories)
        total = pipeline["memories_written"]
        old_total = old_sample * total / len(memories)
        print(
            f"old way: {old_sample:.2f}s for {len(memories):,} memories → {old_total:,.0f}s for {total:,}",
            flush=True,
        )
        figures.update(
            pipeline={k: round(v, 3) if isinstance(v, float) else v for k, v in pipeline.items()},
            old_way={
                "sample_memories": len(memories),
                "sample_seconds": round(old_sample, 3),
                "seconds_for_all": round(old_total, 1),
                "extrapolated": len(memories) < total,
            },
            old_way_vs_pipeline=round(old_total / pipeline["seconds"], 1),
        )
    print_table(figures)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"shapes_import_scale_{args.scale}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
