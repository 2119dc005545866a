"""Benchmark: the memory rebuild against the old approach and a bare client, on the same data.

    python benchmarks/memory_rebuild.py --scale 10

Demo data at the given scale is migrated (relational tables) into a new DB on the embedded server,
and a local OpenAI-compatible server answers with `--latency` seconds per request (0.1 s by
default) from a process of its own, as a real provider would. Then, on the same exchanges:
  pipeline   `rebuild_memories` (pairing, cache lookups, batched concurrent requests, binary COPY
             per chunk), from an empty memories table and an empty cache; then again (no request)
  bare       the floor for our code: the `openai` async client sending the same texts in batches of
             2048 with the same requests in flight, then one binary COPY of the memories
  old way    one request per memory, sequentially, and one INSERT per memory; timed on a sample of
             `--baseline-sample` memories and extrapolated linearly (at 0.1 s a request the whole
             scale-10 run would take about 40 minutes; --baseline-sample 0 runs it all)
  vectors    binary COPY versus `executemany` INSERT of `--vectors` random 1536-dim vectors into a
             table stored like `memories.embedding`; each method twice, alternating, best kept
Figures go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import openai
import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.relational_copy import fresh_database, old_connection  # noqa: E402
from tinybot_migration.demo_data import generate_demo_data, old_database_has_data  # noqa: E402
from tinybot_migration.memories.pairing import pair_messages  # noqa: E402
from tinybot_migration.memories.rebuild import load_messages, memory_of, rebuild_memories  # noqa: E402
from tinybot_migration.memories.writer import write_memories  # noqa: E402
from tinybot_migration.relational.copy import IdMaps, copy_table  # noqa: E402
from tinybot_migration.relational.tables import RELATIONAL_TABLES  # noqa: E402
from tinybot_migration.resources.embedding_provider import EmbeddingProviderResource  # noqa: E402
from tinybot_migration.runtime.embedded_postgres import embedded_database_url  # noqa: E402
from tinybot_migration.schema import apply_new_schema  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "text-embedding-3-small"
KEY = "sk-benchmark"


def export_folder(home: Path, scale: int) -> Path:
    return home / f"export_scale_{scale}"


def migrated_new_database(scale: int, seed: int, home: Path, regenerate: bool, name: str = "memories") -> str:
    """Demo data at `scale` (generated once, or again with `regenerate`), its relational tables
    migrated into the fresh database `bench_<name>_scale_<scale>`."""
    old_url = embedded_database_url(f"bench_old_scale_{scale}", home)
    if regenerate or not old_database_has_data(old_url) or not export_folder(home, scale).is_dir():
        print(f"generating demo data at scale {scale} …", flush=True)
        generate_demo_data(old_url, export_folder(home, scale), scale=scale, seed=seed, replace=True)
    new_url = fresh_database(f"bench_{name}_scale_{scale}", home)
    with old_connection(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        apply_new_schema(new)
        for spec in RELATIONAL_TABLES:
            copy_table(old, new, spec, IdMaps(old))
        new.execute("VACUUM ANALYZE")
    return new_url


def embedding_benchmark_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark against the local embeddings server takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the server waits per request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--baseline-sample", type=int, default=300, help="0 = the whole old-way run")
    parser.add_argument(
        "--regenerate", action="store_true", help="rewrite the demo data (kept between runs otherwise)"
    )
    parser.add_argument("--home", type=Path, default=Path(__file__).resolve().parent / ".tinybot-bench")
    return parser


def reset(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE memories, embedding_cache")


class ProviderProcess:
    """The local test server in a process of its own, so its work does not share our GIL."""

    def __init__(self, latency: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tinybot_migration_tests.helpers.openai_server",
                "--latency",
                str(latency),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.base_url = self.process.stdout.readline().strip()

    def __enter__(self) -> ProviderProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait()


def run_pipeline(conn, url: str, server: ProviderProcess, slugs: list[str], concurrency: int) -> dict:
    reset(conn)
    provider = EmbeddingProviderResource(
        provider="openai", api_key=KEY, base_url=server.base_url, max_concurrent_requests=concurrency
    )

    def connect():
        return psycopg.connect(url, autocommit=True)

    started = time.perf_counter()
    report = rebuild_memories(conn, provider, slugs, connect=connect)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = rebuild_memories(conn, provider, slugs, connect=connect)
    rerun = time.perf_counter() - started
    assert again.memories_written == 0 and again.requests == 0, "the re-run must not write or request"
    return {
        "seconds": seconds,
        "memories": report.memories_written,
        "requests": report.requests,
        "rerun_seconds": rerun,
    }


async def _bare_embed(texts: list[str], server: ProviderProcess, concurrency: int) -> np.ndarray:
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0) as client:

        async def one(start: int) -> list:
            async with gate:
                response = await client.embeddings.create(
                    model=MODEL, input=texts[start : start + 2048], dimensions=1536
                )
            return [d.embedding for d in response.data]

        parts = await asyncio.gather(*(one(s) for s in range(0, len(texts), 2048)))
    return np.asarray([v for part in parts for v in part], dtype=np.float32)


def run_bare(conn, server: ProviderProcess, exchanges: list, concurrency: int) -> float:
    """The same texts, a bare async client and one COPY: what the provider and the DB cost."""
    reset(conn)
    texts = [e.content for e in exchanges]
    started = time.perf_counter()
    vectors = asyncio.run(_bare_embed(texts, server, concurrency))
    write_memories(conn, [memory_of(e) for e in exchanges], vectors)
    return time.perf_counter() - started


def run_old_way(conn, server: ProviderProcess, exchanges: list) -> float:
    """One request per memory, sequentially, one INSERT per memory (the approach being replaced)."""
    reset(conn)
    register_vector(conn)
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    started = time.perf_counter()
    for e in exchanges:
        vector = client.embeddings.create(model=MODEL, input=e.content, dimensions=1536).data[0].embedding
        a = e.answer
        conn.execute(
            "INSERT INTO memories (id, persona_id, personality_id, content, embedding, canon_scope,"
            " summary_type, channel_id, guild_id, message_ids, created_at, source_system)"
            " VALUES (%s, %s, %s, %s, %s, 'personal', 'conversation', %s, %s, %s, %s, 'tinybot')",
            (
                e.memory_id,
                a.persona_id,
                a.personality_id,
                e.content,
                np.asarray(vector, dtype=np.float32),
                a.channel_id,
                a.guild_id,
                e.message_ids,
                a.created_at,
            ),
        )
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def run_vectors(conn, count: int) -> dict:
    register_vector(conn)
    rng = np.random.default_rng(7)
    rows = [(uuid.uuid4(), rng.standard_normal(1536).astype(np.float32)) for _ in range(count)]
    results: dict = {"copy": {"seconds": float("inf")}, "executemany": {"seconds": float("inf")}}
    for method in ("copy", "executemany", "copy", "executemany"):
        conn.execute("DROP TABLE IF EXISTS bench_vectors")
        conn.execute("CREATE TABLE bench_vectors (id uuid PRIMARY KEY, embedding vector(1536))")
        conn.execute("ALTER TABLE bench_vectors ALTER COLUMN embedding SET STORAGE PLAIN")  # as memories
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with conn.transaction():
            if method == "copy":
                with conn.cursor().copy("COPY bench_vectors FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["uuid", "vector"])
                    for row in rows:
                        copy.write_row(row)
            else:
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO bench_vectors VALUES (%s, %s)", rows)
        seconds = time.perf_counter() - started
        print(f"  {method}: {seconds:.2f}s, {count / seconds:,.0f} rows/s", flush=True)
        if seconds < results[method]["seconds"]:
            results[method] = {"seconds": round(seconds, 3), "rows_per_second": round(count / seconds)}
    conn.execute("DROP TABLE bench_vectors")
    results["copy_speedup"] = round(results["executemany"]["seconds"] / results["copy"]["seconds"], 1)
    return results


def main() -> int:
    parser = embedding_benchmark_parser(__doc__)
    parser.add_argument("--vectors", type=int, default=100_000)
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)

    new_url = migrated_new_database(args.scale, args.seed, home, args.regenerate)
    figures: dict = {"scale": args.scale, "latency_seconds": args.latency, "concurrency": args.concurrency}
    with (
        psycopg.connect(new_url, autocommit=True) as conn,
        ProviderProcess(args.latency) as server,
    ):
        slugs = [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]
        [ids] = conn.execute("SELECT array_agg(id) FROM personalities").fetchone()
        by_id = {e.memory_id: e for e in pair_messages(load_messages(conn, ids)).exchanges}
        exchanges = sorted(by_id.values(), key=lambda e: (e.answer.created_at, e.answer.id))
        figures["memories"] = len(exchanges)
        print(f"scale {args.scale}: {len(exchanges):,} memories, server latency {args.latency}s", flush=True)

        pipeline = run_pipeline(conn, new_url, server, slugs, args.concurrency)
        print(
            f"pipeline: {pipeline['seconds']:.2f}s, {pipeline['requests']} requests, "
            f"{pipeline['memories'] / pipeline['seconds']:,.0f} memories/s; re-run {pipeline['rerun_seconds']:.2f}s",
            flush=True,
        )
        bare = run_bare(conn, server, exchanges, args.concurrency)
        print(f"bare async client + COPY: {bare:.2f}s", flush=True)
        sample = exchanges if args.baseline_sample <= 0 else exchanges[: args.baseline_sample]
        old_sample = run_old_way(conn, server, sample)
        old_total = old_sample * len(exchanges) / len(sample)
        print(
            f"old way: {old_sample:.2f}s for {len(sample):,} memories → {old_total:,.0f}s for all"
            + (" (extrapolated)" if len(sample) < len(exchanges) else ""),
            flush=True,
        )
        figures.update(
            pipeline={k: round(v, 3) if isinstance(v, float) else v for k, v in pipeline.items()},
            pipeline_memories_per_second=round(pipeline["memories"] / pipeline["seconds"]),
            bare_client_and_copy_seconds=round(bare, 3),
            pipeline_vs_bare=round(pipeline["seconds"] / bare, 2),
            old_way={
                "sample_memories": len(sample),
                "sample_seconds": round(old_sample, 3),
                "seconds_for_all": round(old_total, 1),
                "extrapolated": len(sample) < len(exchanges),
            },
            old_way_vs_pipeline=round(old_total / pipeline["seconds"], 1),
        )
        print(f"binary COPY vs executemany, {args.vectors:,} vectors of 1536 dims:", flush=True)
        figures["vectors"] = {"count": args.vectors, **run_vectors(conn, args.vectors)}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"memory_rebuild_scale_{args.scale}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
