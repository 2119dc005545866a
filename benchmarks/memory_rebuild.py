"""Benchmark: the memory rebuild against the old approach, a bare client and the floor, on the same data.

    python benchmarks/memory_rebuild.py --scale 10 [--server fast|test] [--profile]

Demo data at the given scale is migrated (relational tables) into a new DB on the embedded server,
and a local OpenAI-compatible server answers with `--latency` seconds per request (0.1 s by
default) from a process of its own, as a real provider would: `--server fast` (the default,
benchmarks/fast_provider.py) hands out pre-encoded vectors and does a few milliseconds of work per
request, so it is never the bottleneck; `--server test` is the test suite's server, which hashes
every text in Python and so is the floor itself. Then, on the same exchanges:
  pipeline   `rebuild_memories` (pairing, cache lookups, batched concurrent requests, binary COPY
             per chunk), from an empty memories table and an empty cache; then again (no request).
             Its wall time, its CPU time in this process (`time.process_time`: the servers are
             other processes) and the PostgreSQL server's CPU time (its processes' /proc figures)
  bare       the `openai` async client sending the same texts in batches of 2048 with the same
             requests in flight, then one binary COPY of the memories (timed on its own)
  floor      ceil(requests / concurrency) × latency (the pipeline's own request count) plus the
             bare COPY: what no client could beat against this server and this database
  old way    one request per memory, sequentially, and one INSERT per memory; timed on a sample of
             `--baseline-sample` memories and extrapolated linearly (at 0.1 s a request the whole
             scale-10 run would take about 40 minutes; --baseline-sample 0 runs it all)
  vectors    binary COPY versus `executemany` INSERT of `--vectors` random 1536-dim vectors into a
             table stored like `memories.embedding`; each method twice, alternating, best kept
Pipeline and bare run `--repeat` times, alternating; the best of each is reported. `--profile`
adds two pipeline runs: one with the CPU time of its parts added up in the threads running them,
grouped into pairing / cache lookups / provider requests / cache writes / COPY / other
(`pipeline_cpu_breakdown`), and one under cProfile in every thread for the functions' names
(stats also in benchmarks/results/memory_rebuild_scale_<scale>_<server>.prof).
Figures go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import pstats
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import openai
import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.relational_copy import fresh_database, old_connection  # noqa: E402
from tinybot_migration.lib.demo_data import generate_demo_data, old_database_has_data  # noqa: E402
from tinybot_migration.lib.embedded_postgres import embedded_database_url, pgdata_dir  # noqa: E402
from tinybot_migration.lib.embeddings import cache as cache_module  # noqa: E402
from tinybot_migration.lib.embeddings.client import EmbeddingClient, EmbeddingSettings  # noqa: E402
from tinybot_migration.lib.memories import rebuild as rebuild_module  # noqa: E402
from tinybot_migration.lib.memories import writer as writer_module  # noqa: E402
from tinybot_migration.lib.memories.pairing import pair_messages  # noqa: E402
from tinybot_migration.lib.memories.rebuild import load_messages, memory_of, rebuild_memories  # noqa: E402
from tinybot_migration.lib.memories.writer import write_memories  # noqa: E402
from tinybot_migration.lib.new_database_schema import apply_new_schema  # noqa: E402
from tinybot_migration.lib.relational.copy import IdMaps, copy_table  # noqa: E402
from tinybot_migration.lib.relational.tables import RELATIONAL_TABLES  # noqa: E402

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
    conn.execute("TRUNCATE memories, tinybot_migration.embedding_cache")


SERVERS = {
    "fast": [str(Path(__file__).resolve().parent / "fast_provider.py")],
    "test": ["-m", "tinybot_migration_tests.helpers.openai_server"],
}


class ProviderProcess:
    """A local embeddings server in a process of its own, so its work does not share our GIL:
    "test" the test suite's server, "fast" benchmarks/fast_provider.py."""

    def __init__(self, latency: float, kind: str = "test") -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, *SERVERS[kind], "--latency", str(latency)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            self.process.kill()
            raise RuntimeError(f"the {kind} server did not start (first line {self.base_url!r})")

    def stats(self) -> dict | None:
        """The fast server's running totals (requests, max in flight, its own work), else None."""
        if self.kind != "fast":
            return None
        with urllib.request.urlopen(f"{self.base_url}/stats", timeout=10) as answer:
            return json.loads(answer.read())

    def __enter__(self) -> ProviderProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait()


def server_delta(before: dict | None, after: dict | None) -> dict | None:
    """What the fast server did between two `stats()` readings (max_in_flight: since start)."""
    if before is None or after is None:
        return None
    summed = ("requests", "inputs", "receive_seconds", "work_seconds", "work_cpu_seconds", "send_seconds")
    delta = {key: round(after[key] - before[key], 3) for key in summed}
    delta["max_in_flight"] = after["max_in_flight"]
    delta["max_work_seconds"] = after["max_work_seconds"]
    return delta


_TICK = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(home: Path) -> float | None:
    """CPU seconds of the embedded server so far: the postmaster's own and its reaped children's
    (cutime, cstime) plus those of its children still running. None where /proc cannot tell."""
    try:
        postmaster = int((pgdata_dir(home) / "postmaster.pid").read_text().split()[0])
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            pid, ppid = int(entry.name), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / _TICK
    except (OSError, ValueError, IndexError):
        return None


class Meter:
    """Wall, this process's CPU and the PostgreSQL server's CPU over a `with` block."""

    def __init__(self, home: Path, server: ProviderProcess) -> None:
        self.home, self.server = home, server

    def __enter__(self) -> Meter:
        self._server_before = self.server.stats()
        self._pg_before = postgres_cpu_seconds(self.home)
        self._cpu_before = time.process_time()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._started
        self.cpu_seconds = time.process_time() - self._cpu_before
        pg_after = postgres_cpu_seconds(self.home)
        self.postgres_cpu_seconds = (
            pg_after - self._pg_before if pg_after is not None and self._pg_before is not None else None
        )
        self.server_work = server_delta(self._server_before, self.server.stats())

    def figures(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "postgres_cpu_seconds": None
            if self.postgres_cpu_seconds is None
            else round(self.postgres_cpu_seconds, 2),
            "server": self.server_work,
        }


def pipeline_provider(server: ProviderProcess, concurrency: int) -> EmbeddingClient:
    return EmbeddingClient(
        EmbeddingSettings(
            provider="openai", api_key=KEY, base_url=server.base_url, max_concurrent_requests=concurrency
        )
    )


def run_pipeline(
    conn, url: str, server: ProviderProcess, slugs: list[str], concurrency: int, home: Path
) -> dict:
    reset(conn)
    provider = pipeline_provider(server, concurrency)

    def connect():
        return psycopg.connect(url, autocommit=True)

    with Meter(home, server) as meter:
        report = rebuild_memories(conn, provider, slugs, connect=connect)
    started = time.perf_counter()
    again = rebuild_memories(conn, provider, slugs, connect=connect)
    rerun = time.perf_counter() - started
    assert again.memories_written == 0 and again.requests == 0, "the re-run must not write or request"
    return {
        **meter.figures(),
        "memories": report.memories_written,
        "requests": report.requests,
        "rerun_seconds": round(rerun, 3),
    }


async def _bare_embed(texts: list[str], server: ProviderProcess, concurrency: int) -> tuple[np.ndarray, int]:
    gate = asyncio.Semaphore(concurrency)
    starts = range(0, len(texts), 2048)
    async with openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0) as client:

        async def one(start: int) -> list:
            async with gate:
                response = await client.embeddings.create(
                    model=MODEL, input=texts[start : start + 2048], dimensions=1536
                )
            return [d.embedding for d in response.data]

        parts = await asyncio.gather(*(one(s) for s in starts))
    return np.asarray([v for part in parts for v in part], dtype=np.float32), len(starts)


def run_bare(conn, server: ProviderProcess, exchanges: list, concurrency: int, home: Path) -> dict:
    """The same texts, a bare async client and one COPY: what the provider and the DB cost."""
    reset(conn)
    texts = [e.content for e in exchanges]
    memories = [memory_of(e) for e in exchanges]
    with Meter(home, server) as embedding:
        vectors, requests = asyncio.run(_bare_embed(texts, server, concurrency))
    with Meter(home, server) as copying:
        write_memories(conn, memories, vectors)
    return {
        "seconds": round(embedding.seconds + copying.seconds, 3),
        "requests": requests,
        "embed": embedding.figures(),
        "copy": copying.figures(),
    }


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
            " VALUES (%s, %s, %s, %s, %s, 'personal', 'conversation', %s, %s, %s, %s, 'tzurot-v3')",
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


# Where the pipeline's CPU goes: each bucket is the CPU time (of the thread running it) of the
# functions named here, less the buckets nested in it; "other" is the rest of the process's CPU.
# A function is (module or class, attribute), looked up and replaced where its callers find it.
BUCKETS = [
    ("pairing", rebuild_module, "pair_personalities"),  # loading the history and pairing it
    ("pairing", rebuild_module, "distinct_exchanges"),
    ("pairing", rebuild_module, "missing_memories"),  # the ids present, the memories to write
    ("cache lookups", writer_module, "embed_with_cache"),  # hashing, the SELECT, copying vectors out
    ("provider requests", EmbeddingClient, "embed"),  # the openai client, the checks
    ("cache writes", cache_module, "_store"),
    ("COPY into memories", writer_module, "write_memories"),
]
NESTED = {"cache lookups": ("provider requests", "cache writes")}
# Functions worth naming in the cProfile listing, by (file name ending, name).
DETAILS = [
    ("memories/rebuild.py", "load_messages"),
    ("memories/pairing.py", "pair_messages"),
    ("memories/pairing.py", "content"),
    ("memories/rebuild.py", "memory_of"),
    ("memories/writer.py", "memory_ids"),
    ("memories/writer.py", "chunks_by_text"),
    ("tinybot_migration/lib/ids.py", "content_hash"),
    ("embeddings/batches.py", "truncate_for_embedding"),
    ("embeddings/batches.py", "plan_batches"),
    ("openai/_utils/_transform.py", "async_maybe_transform"),
    ("openai/_base_client.py", "_process_response"),
    ("openai/_models.py", "construct_type"),
    ("_parsing/_embeddings.py", "parse_embedding_response"),
    ("~", "<method 'tolist' of 'numpy.ndarray' objects>"),
    ("~", "<built-in method binascii.a2b_base64>"),
    ("json/__init__.py", "loads"),
    ("resources/embedding_provider.py", "_checked_vectors"),
    ("resources/embedding_provider.py", "vector_problem"),
    ("~", "<built-in method numpy.asarray>"),
    ("psycopg/_copy.py", "write_row"),
    ("pgvector/vector.py", "_to_db_binary"),
    ("psycopg/cursor.py", "fetchall"),
]


def _matching(stats: pstats.Stats, wanted: tuple[str, str]) -> list[tuple]:
    suffix, name = wanted
    return [key for key in stats.stats if key[2] == name and key[0].replace(os.sep, "/").endswith(suffix)]


def _cumulative(stats: pstats.Stats, wanted: tuple[str, str]) -> float:
    return sum(stats.stats[key][3] for key in _matching(stats, wanted))


def cpu_by_bucket(work):
    """(work()'s result, CPU seconds per bucket of BUCKETS, exclusive, and "other"): each bucket's
    functions replaced, for the call, by ones adding up the CPU time of their thread."""
    totals = dict.fromkeys([name for name, _, _ in BUCKETS], 0.0)
    lock = threading.Lock()
    originals = [(owner, attribute, getattr(owner, attribute)) for _, owner, attribute in BUCKETS]

    def timed(bucket: str, function):
        def wrapper(*args, **kwargs):
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with lock:
                    totals[bucket] += spent

        return wrapper

    for (bucket, owner, attribute), (_, _, function) in zip(BUCKETS, originals, strict=True):
        setattr(owner, attribute, timed(bucket, function))
    cpu = time.process_time()
    try:
        result = work()
    finally:
        cpu = time.process_time() - cpu
        for owner, attribute, function in originals:
            setattr(owner, attribute, function)
    buckets = dict(totals)
    for outer, inner in NESTED.items():
        buckets[outer] -= sum(totals[name] for name in inner)
    buckets["other"] = cpu - sum(buckets.values())
    return result, cpu, buckets


def profile_in_every_thread(work):
    """(work()'s result, pstats of every thread it ran in, threads), in each thread's CPU time."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(*_):  # the first profile event of a new thread: profile it from here on
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()

    main = cProfile.Profile(time.thread_time)
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        result = work()
    finally:
        main.disable()
        threading.setprofile(None)
    stats = pstats.Stats(main)
    for profile in profiles:
        stats.add(profile)
    return result, stats, 1 + len(profiles)


def run_profile(
    conn, url: str, server: ProviderProcess, slugs: list[str], concurrency: int, memories: int, out: Path
) -> dict:
    """Two more pipeline runs from empty: one with each bucket's CPU time added up (cheap: a
    few dozen calls are timed), one under cProfile in every thread for the functions' names
    (its timer, a system call per event, makes call-heavy code look several times dearer)."""
    provider = pipeline_provider(server, concurrency)

    def connect():
        return psycopg.connect(url, autocommit=True)

    def rebuild():
        return rebuild_memories(conn, provider, slugs, connect=connect)

    reset(conn)
    started = time.perf_counter()
    report, cpu, buckets = cpu_by_bucket(rebuild)
    seconds = time.perf_counter() - started
    print(f"pipeline run with its CPU by bucket: {seconds:.2f}s wall, {cpu:.2f}s CPU here", flush=True)
    for name, value in buckets.items():
        print(
            f"  {name:<20} {value:6.2f}s  {value / cpu:5.1%}  {value / memories * 10_000:5.2f}s per 10k memories",
            flush=True,
        )

    reset(conn)
    started = time.perf_counter()
    _, stats, threads = profile_in_every_thread(rebuild)
    profiled_seconds = time.perf_counter() - started
    stats.dump_stats(out)
    print(
        f"pipeline run under cProfile: {profiled_seconds:.2f}s wall, {stats.total_tt:.2f}s CPU "
        f"attributed over {threads} threads (stats in {out.name})",
        flush=True,
    )
    details = {}
    for wanted in DETAILS:
        if _matching(stats, wanted):
            details[f"{wanted[0]}:{wanted[1]}"] = round(_cumulative(stats, wanted), 3)
    print("  named functions (cumulative profiled CPU s, all threads):", flush=True)
    for name, value in details.items():
        print(f"    {value:6.2f}  {name}", flush=True)
    stats.sort_stats("cumulative")
    print("top cumulative entries (profiled CPU s, all threads):", flush=True)
    stats.print_stats(30)
    stats.sort_stats("tottime")
    print("top entries by own time:", flush=True)
    stats.print_stats(20)

    def top(column: int, count: int) -> list[dict]:  # column 2: own time, 3: cumulative
        rows = sorted(stats.stats.items(), key=lambda item: item[1][column], reverse=True)
        return [
            {
                "function": pstats.func_std_string(func),
                "calls": nc,
                "own_seconds": round(tt, 3),
                "cumulative_seconds": round(ct, 3),
            }
            for func, (_cc, nc, tt, ct, _callers) in rows[:count]
        ]

    return {
        "memories": report.memories_written,
        "requests": report.requests,
        "wall_seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "buckets_cpu_seconds": {name: round(value, 3) for name, value in buckets.items()},
        "buckets_share": {name: round(value / cpu, 3) for name, value in buckets.items()},
        "buckets_cpu_seconds_per_10k_memories": {
            name: per_10k(value, memories) for name, value in buckets.items()
        },
        "profiled": {
            "wall_seconds": round(profiled_seconds, 3),
            "cpu_seconds_attributed": round(stats.total_tt, 3),
            "threads": threads,
            "timer": "time.thread_time in each thread; the profiler's overhead inflates call-heavy code",
            "stats_file": str(out),
            "named_functions_cumulative_seconds": details,
            "top_cumulative": top(3, 25),
            "top_own": top(2, 20),
        },
    }


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


def per_10k(seconds: float | None, memories: int) -> float | None:
    return None if seconds is None or not memories else round(seconds / memories * 10_000, 3)


def main() -> int:
    parser = embedding_benchmark_parser(__doc__)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--server", choices=sorted(SERVERS), default="fast", help="the embeddings server")
    parser.add_argument("--repeat", type=int, default=3, help="pipeline and bare runs each; the best kept")
    parser.add_argument(
        "--profile", action="store_true", help="two more pipeline runs: CPU by bucket, cProfile"
    )
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)

    new_url = migrated_new_database(args.scale, args.seed, home, args.regenerate)
    figures: dict = {
        "scale": args.scale,
        "server": args.server,
        "latency_seconds": args.latency,
        "concurrency": args.concurrency,
    }
    with (
        psycopg.connect(new_url, autocommit=True) as conn,
        ProviderProcess(args.latency, args.server) as server,
    ):
        slugs = [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]
        [ids] = conn.execute("SELECT array_agg(id) FROM personalities").fetchone()
        by_id = {e.memory_id: e for e in pair_messages(load_messages(conn, ids)).exchanges}
        exchanges = sorted(by_id.values(), key=lambda e: (e.answer.created_at, e.answer.id))
        memories = len(exchanges)
        figures["memories"] = memories
        print(
            f"scale {args.scale}: {memories:,} memories, {args.server} server, latency {args.latency}s, "
            f"{args.concurrency} requests in flight",
            flush=True,
        )

        pipelines, bares = [], []
        for _ in range(max(1, args.repeat)):
            pipeline = run_pipeline(conn, new_url, server, slugs, args.concurrency, home)
            pipelines.append(pipeline)
            print(
                f"pipeline: {pipeline['seconds']:.2f}s, {pipeline['requests']} requests, "
                f"{pipeline['memories'] / pipeline['seconds']:,.0f} memories/s, CPU {pipeline['cpu_seconds']:.2f}s "
                f"here + {pipeline['postgres_cpu_seconds']}s PostgreSQL; re-run {pipeline['rerun_seconds']:.2f}s",
                flush=True,
            )
            bare = run_bare(conn, server, exchanges, args.concurrency, home)
            bares.append(bare)
            print(
                f"bare async client + COPY: {bare['seconds']:.2f}s ({bare['embed']['seconds']:.2f}s for "
                f"{bare['requests']} requests, COPY {bare['copy']['seconds']:.2f}s), CPU "
                f"{bare['embed']['cpu_seconds'] + bare['copy']['cpu_seconds']:.2f}s here",
                flush=True,
            )
        pipeline = min(pipelines, key=lambda p: p["seconds"])
        bare = min(bares, key=lambda b: b["seconds"])
        copy_seconds = min(b["copy"]["seconds"] for b in bares)
        requests_floor = math.ceil(pipeline["requests"] / args.concurrency) * args.latency
        floor = requests_floor + copy_seconds
        bare_cpu = bare["embed"]["cpu_seconds"] + bare["copy"]["cpu_seconds"]
        bare_pg = [bare[part]["postgres_cpu_seconds"] for part in ("embed", "copy")]
        print(
            f"floor: ceil({pipeline['requests']} requests / {args.concurrency}) × {args.latency}s = "
            f"{requests_floor:.2f}s + COPY {copy_seconds:.2f}s = {floor:.2f}s; best pipeline {pipeline['seconds']:.2f}s "
            f"= {pipeline['seconds'] / bare['seconds']:.2f}× bare ({bare['seconds']:.2f}s), "
            f"{pipeline['seconds'] / floor:.2f}× floor; pipeline CPU "
            f"{per_10k(pipeline['cpu_seconds'], memories)}s per 10k memories here, "
            f"{per_10k(pipeline['postgres_cpu_seconds'], memories)}s in PostgreSQL",
            flush=True,
        )
        sample = exchanges if args.baseline_sample <= 0 else exchanges[: args.baseline_sample]
        old_sample = run_old_way(conn, server, sample)
        old_total = old_sample * len(exchanges) / len(sample)
        print(
            f"old way: {old_sample:.2f}s for {len(sample):,} memories → {old_total:,.0f}s for all"
            + (" (extrapolated)" if len(sample) < len(exchanges) else ""),
            flush=True,
        )
        figures.update(
            pipeline=pipeline,
            pipeline_runs_seconds=[p["seconds"] for p in pipelines],
            pipeline_memories_per_second=round(pipeline["memories"] / pipeline["seconds"]),
            pipeline_cpu_seconds_per_10k_memories=per_10k(pipeline["cpu_seconds"], memories),
            pipeline_postgres_cpu_seconds_per_10k_memories=per_10k(
                pipeline["postgres_cpu_seconds"], memories
            ),
            bare=bare,
            bare_runs_seconds=[b["seconds"] for b in bares],
            bare_client_and_copy_seconds=bare["seconds"],
            bare_cpu_seconds_per_10k_memories=per_10k(bare_cpu, memories),
            bare_postgres_cpu_seconds_per_10k_memories=per_10k(
                None if None in bare_pg else sum(bare_pg), memories
            ),
            floor={
                "requests": pipeline["requests"],
                "requests_seconds": round(requests_floor, 3),
                "copy_seconds": copy_seconds,
                "seconds": round(floor, 3),
            },
            pipeline_vs_bare=round(pipeline["seconds"] / bare["seconds"], 2),
            pipeline_vs_floor=round(pipeline["seconds"] / floor, 2),
            bare_vs_floor=round(bare["seconds"] / floor, 2),
            old_way={
                "sample_memories": len(sample),
                "sample_seconds": round(old_sample, 3),
                "seconds_for_all": round(old_total, 1),
                "extrapolated": len(sample) < len(exchanges),
            },
            old_way_vs_pipeline=round(old_total / pipeline["seconds"], 1),
        )
        if args.profile:
            RESULTS.mkdir(exist_ok=True)
            figures["pipeline_cpu_breakdown"] = run_profile(
                conn,
                new_url,
                server,
                slugs,
                args.concurrency,
                memories,
                RESULTS / f"memory_rebuild_scale_{args.scale}_{args.server}.prof",
            )
        print(f"binary COPY vs executemany, {args.vectors:,} vectors of 1536 dims:", flush=True)
        figures["vectors"] = {"count": args.vectors, **run_vectors(conn, args.vectors)}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"memory_rebuild_scale_{args.scale}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    summary = {k: v for k, v in figures.items() if k != "pipeline_cpu_breakdown"}
    if "pipeline_cpu_breakdown" in figures:
        breakdown = figures["pipeline_cpu_breakdown"]
        profiled = {k: v for k, v in breakdown["profiled"].items() if not k.startswith("top_")}
        summary["pipeline_cpu_breakdown"] = {**breakdown, "profiled": profiled}
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
