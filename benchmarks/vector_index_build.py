"""Benchmark: building the HNSW index with maintenance_work_mem sized from the table (what
`memory_vector_index` does) against PostgreSQL's default 64 MB, on the same rows, in one run.

    python benchmarks/vector_index_build.py                 # 30,000 memories
    python benchmarks/vector_index_build.py --rows 10000 --home /tmp/bench-index

Rows: `--rows` random 1536-dim unit vectors (`--seed`) binary-COPYed into the project's
`memories` table (the new DB's schema, so the same storage and B-trees). Each build is timed with
the same m and ef_construction (16, 64) and the server's own max_parallel_maintenance_workers:
  sized    `lib.memories.vector_index.ensure_vector_index` (maintenance_work_mem from `build_memory_mb`)
  default  CREATE INDEX with maintenance_work_mem = 64MB (PostgreSQL's default): the graph outgrows
           memory after a few thousand vectors and the rest is inserted on disk, page by page
The index is dropped between builds; `default` runs first so the sized build gets no warmer cache.
Figures go to benchmarks/results/vector_index_build.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.relational_copy import fresh_database  # noqa: E402
from tinybot_migration.lib.memories.vector_index import (  # noqa: E402
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    INDEX_NAME,
    MIN_BUILD_MEMORY_MB,
    ensure_vector_index,
    index_state,
)
from tinybot_migration.lib.new_database_schema import apply_new_schema  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 1536
CREATED_AT = datetime(2026, 1, 1)  # naive UTC, as the bot's timestamp(3) columns hold it


def load(conn: psycopg.Connection, rows: int, seed: int) -> float:
    """`rows` memories of one persona-less personality with random unit vectors; seconds taken."""
    rng = np.random.default_rng(seed)
    personality = uuid.uuid4()
    conn.execute(
        "INSERT INTO personalities (id, name, slug, character_info, personality_traits, created_at, updated_at)"
        " VALUES (%s, 'Bench', 'bench', 'c', 't', now(), now())",
        (personality,),
    )
    started = time.perf_counter()
    with conn.cursor() as cur:
        copy_sql = (
            "COPY memories (id, personality_id, content, embedding, created_at) FROM STDIN (FORMAT BINARY)"
        )
        with cur.copy(copy_sql) as copy:
            copy.set_types(["uuid", "uuid", "text", "vector", "timestamp"])
            for start in range(0, rows, 10_000):
                block = rng.standard_normal((min(10_000, rows - start), DIM), dtype=np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                for i, vector in enumerate(block):
                    copy.write_row((uuid.uuid4(), personality, f"memory {start + i}", vector, CREATED_AT))
    conn.execute("VACUUM (ANALYZE) memories")
    return time.perf_counter() - started


def build_default(conn: psycopg.Connection) -> float:
    started = time.perf_counter()
    conn.execute(f"SET maintenance_work_mem = '{MIN_BUILD_MEMORY_MB}MB'")
    conn.execute(
        f"CREATE INDEX {INDEX_NAME} ON memories USING hnsw (embedding vector_cosine_ops)"
        f" WITH (m = {DEFAULT_M}, ef_construction = {DEFAULT_EF_CONSTRUCTION})"
    )
    conn.execute("RESET maintenance_work_mem")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--home", type=Path, default=Path(__file__).resolve().parent / ".tinybot-bench")
    parser.add_argument("--out", type=Path, default=RESULTS / "vector_index_build.json")
    args = parser.parse_args()

    url = fresh_database("bench_index_build", args.home.resolve())
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
        register_vector(conn)
        load_seconds = load(conn, args.rows, args.seed)
        workers = conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0]
        print(
            f"loaded {args.rows:,} memories in {load_seconds:.1f} s; parallel maintenance workers {workers}"
        )
        default_seconds = build_default(conn)
        default_bytes = index_state(conn).size_bytes
        print(f"default ({MIN_BUILD_MEMORY_MB} MB): {default_seconds:.1f} s", flush=True)
        conn.execute(f"DROP INDEX {INDEX_NAME}")
        sized = ensure_vector_index(conn)
        print(f"sized ({sized.maintenance_work_mem_mb} MB): {sized.seconds:.1f} s", flush=True)
    report = {
        "rows": args.rows,
        "m": DEFAULT_M,
        "ef_construction": DEFAULT_EF_CONSTRUCTION,
        "max_parallel_maintenance_workers": int(workers),
        "default": {
            "maintenance_work_mem_mb": MIN_BUILD_MEMORY_MB,
            "seconds": round(default_seconds, 1),
            "index_bytes": default_bytes,
        },
        "sized": {
            "maintenance_work_mem_mb": sized.maintenance_work_mem_mb,
            "seconds": round(sized.seconds, 1),
            "index_bytes": sized.state.size_bytes,
        },
        "speedup": round(default_seconds / sized.seconds, 2),
    }
    print(f"sized build {report['speedup']}× faster than the default")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
