"""Benchmark: the DEV → PROD sync (`lib.sync.engine.sync_tables`) against the bot's old way and
`pg_dump | pg_restore`, on the same source, in one run.

    python benchmarks/db_sync.py                          # 100,000 memories
    python benchmarks/db_sync.py --rows 10000 --row-by-row-sample 1000 --index-threshold

The source (DEV) is a new DB on the embedded server (under benchmarks/.tinybot-bench unless --home
is given) holding `--rows` memories with random 1536-dim unit vectors (`--seed`), binary-COPYed as
`benchmarks/vector_index_build.py` loads them, spread over 50 personas (one user each) and 50
personalities. Its embedding cache is left empty and it has no other rows: memories are what is
measured. No target has the HNSW index but in the last measurement. Measured:
  empty       a fresh target with the schema applied: `sync_tables(dev, prod, SyncOptions())`, then
              the checks the CLI runs after a sync (`run.checks_after_sync`, timed apart)
  90%         a target already holding the first 90% of the memories by id (binary COPY from the
              source, parents synced first): the sync examines every row and inserts the other 10%
  row by row  the bot's old way: each source row read with `embedding::text` and written with one
              `INSERT ... ON CONFLICT (id) DO UPDATE` (`%s::vector`) in a transaction of its own, on
              `--row-by-row-sample` rows, extrapolated linearly to all of them
  pg_dump     `pg_dump -Fc -Z0 -t memories | pg_restore --no-owner --data-only` into a target with the
              schema and the parents (its B-trees are maintained row by row, as the sync's are)
  threshold   (--index-threshold) a target of `--threshold-base` memories with the HNSW index, synced
              with S × base new ones (S in 0.1, 0.25, 0.5, 1): (a) the index maintained row by row,
              (b) dropped first and built again after with `ensure_vector_index`; the share from which
              (b) is faster is what `vector_index.BULK_LOAD_SHARE` should be
After every sync the target's memory count must equal the source's and (but for the row-by-row
sample, checked on its own rows) every memory's `SyncTable.row_hash()` must be the same on both
sides. Reported as seconds, rows/s and ratios; figures also go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.relational_copy import fresh_database  # noqa: E402
from tinybot_migration.lib.database import open_read_only  # noqa: E402
from tinybot_migration.lib.embedded_postgres import binaries_dir, embedded_server  # noqa: E402
from tinybot_migration.lib.ids import deterministic_uuid, persona_seed, personality_seed, user_seed  # noqa: E402
from tinybot_migration.lib.memories.vector_index import (  # noqa: E402
    BULK_LOAD_SHARE,
    INDEX_NAME,
    ensure_vector_index,
    index_state,
)
from tinybot_migration.lib.new_database_schema import apply_new_schema  # noqa: E402
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS  # noqa: E402
from tinybot_migration.lib.sync.engine import SyncOptions, prepare_session, row_count, sync_tables  # noqa: E402
from tinybot_migration.lib.sync.results import TableSync  # noqa: E402
from tinybot_migration.lib.sync.run import checks_after_sync  # noqa: E402
from tinybot_migration.lib.sync.tables import SYNC_TABLES, SYNC_TABLES_BY_NAME  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DIM = EMBEDDING_DIMENSIONS
PEOPLE = 50  # personas (one user each) and personalities the memories are spread over
CREATED_AT = datetime(2026, 1, 1)  # naive UTC, as the bot's columns hold it; memory i is i seconds later
MEMORIES = SYNC_TABLES_BY_NAME["memories"]
PARENT_TABLES = tuple(t for t in SYNC_TABLES if t.name != MEMORIES.name)  # all empty but the parents
SHARES = (0.1, 0.25, 0.5, 1.0)
FILLER = (
    "User talked about the garden they are planting this spring: roses along the fence, tomatoes by "
    "the shed, and whether the soil needs more compost; the assistant suggested mulching early."
)


# --- databases ------------------------------------------------------------------------------------


def clone_database(name: str, template: str, home: Path) -> str:
    """`name` dropped and created again as a copy of `template` (which nobody may be connected to)."""
    server = embedded_server(home)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        )
    return server.get_uri(name)


def drop_database(name: str, home: Path) -> None:
    server = embedded_server(home)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def load(conn: psycopg.Connection, rows: int, seed: int) -> float:
    """The parents and `rows` memories with random unit vectors (ids from the same rng); seconds."""
    rng = np.random.default_rng(seed)
    personas, personalities = [], []
    for i in range(PEOPLE):
        user_id = deterministic_uuid(user_seed(str(100 + i)))
        persona_id = deterministic_uuid(persona_seed(user_id, f"Persona {i}"))
        personality_id = deterministic_uuid(personality_seed(f"bench-{i}"))
        conn.execute(
            "INSERT INTO users (id, discord_id, username, created_at, updated_at) VALUES (%s, %s, %s, %s, %s)",
            (user_id, str(100 + i), f"user {i}", CREATED_AT, CREATED_AT),
        )
        conn.execute(
            "INSERT INTO personas (id, name, content, owner_id, created_at, updated_at)"
            " VALUES (%s, %s, 'me', %s, %s, %s)",
            (persona_id, f"Persona {i}", user_id, CREATED_AT, CREATED_AT),
        )
        conn.execute(
            "INSERT INTO personalities (id, name, slug, character_info, personality_traits, created_at, updated_at)"
            " VALUES (%s, %s, %s, 'x', 'y', %s, %s)",
            (personality_id, f"Bench {i}", f"bench-{i}", CREATED_AT, CREATED_AT),
        )
        personas.append(persona_id)
        personalities.append(personality_id)
    started = time.perf_counter()
    copy_sql = (
        "COPY memories (id, persona_id, personality_id, content, embedding, canon_scope, summary_type,"
        " channel_id, guild_id, message_ids, created_at) FROM STDIN (FORMAT BINARY)"
    )
    types = [
        "uuid",
        "uuid",
        "uuid",
        "text",
        "vector",
        "text",
        "text",
        "text",
        "text",
        "text[]",
        "timestamp",
    ]
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.set_types(types)
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            block = rng.standard_normal((n, DIM), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            ids = rng.bytes(16 * n)
            for j, vector in enumerate(block):
                i = start + j
                copy.write_row(
                    (
                        uuid.UUID(bytes=ids[16 * j : 16 * j + 16], version=4),
                        personas[i % PEOPLE],
                        personalities[(i // PEOPLE) % PEOPLE],
                        f"memory {i}: {FILLER}",
                        vector,
                        "personal",
                        "conversation",
                        str(1000 + i % 7),
                        "2000",
                        [f"{i}-user", f"{i}-assistant"],
                        CREATED_AT + timedelta(seconds=i),
                    )
                )
    conn.execute("VACUUM (ANALYZE) memories")
    return time.perf_counter() - started


def copy_memories(source: psycopg.Connection, target: psycopg.Connection, order_by: str, limit: int) -> None:
    """The source's first `limit` memories in `order_by` order into the target, by binary COPY."""
    columns = sql.SQL(", ").join(map(sql.Identifier, MEMORIES.columns))
    with (
        source.cursor().copy(
            sql.SQL("COPY (SELECT {} FROM memories ORDER BY {} LIMIT {}) TO STDOUT (FORMAT BINARY)").format(
                columns, sql.Identifier(order_by), sql.Literal(limit)
            )
        ) as out,
        target.cursor().copy(
            sql.SQL("COPY memories ({}) FROM STDIN (FORMAT BINARY)").format(columns)
        ) as into,
    ):
        for data in out:
            into.write(data)
    target.execute("VACUUM (ANALYZE) memories")


def target_with_parents(name: str, source: psycopg.Connection, home: Path) -> str:
    """A fresh target with the schema and every table but memories synced from the source."""
    url = fresh_database(name, home)
    with psycopg.connect(url, autocommit=True) as target:
        apply_new_schema(target)
        sync_tables(source, target, SyncOptions(), tables=PARENT_TABLES)
    return url


# --- checks ---------------------------------------------------------------------------------------


def memory_digests(conn: psycopg.Connection) -> dict[uuid.UUID, str]:
    """id -> `SyncTable.row_hash()` of every memory, in the session the sync uses."""
    prepare_session(conn)
    query = sql.SQL("SELECT id, {} FROM memories").format(MEMORIES.row_hash())
    return dict(conn.execute(query).fetchall())


def memory_count(conn: psycopg.Connection) -> int:
    return row_count(conn, MEMORIES)


def same_memories(target: psycopg.Connection, expected: dict[uuid.UUID, str], what: str) -> None:
    count = memory_count(target)
    if count != len(expected):
        raise RuntimeError(f"{what}: the target holds {count:,} memories, the source {len(expected):,}")
    if memory_digests(target) != expected:
        raise RuntimeError(f"{what}: the target's memories differ from the source's")


def memories_result(results: list[TableSync]) -> TableSync:
    return {r.table: r for r in results}[MEMORIES.name]


# --- the measurements -----------------------------------------------------------------------------


def run_empty(source: psycopg.Connection, home: Path, digests: dict) -> dict:
    url = fresh_database("bench_sync_empty", home)
    with psycopg.connect(url, autocommit=True) as target:
        apply_new_schema(target)
        started = time.perf_counter()
        results = sync_tables(source, target, SyncOptions())
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        checks = checks_after_sync(source, target, results)
        check_seconds = time.perf_counter() - started
        failed = [f"{c.name}: {c.description}" for c in checks if not c.passed]
        if failed:
            raise RuntimeError(f"checks after the sync failed: {failed}")
        same_memories(target, digests, "sync into an empty target")
    memories = memories_result(results)
    if memories.inserted != len(digests):
        raise RuntimeError(f"the sync inserted {memories.inserted:,} memories of {len(digests):,}")
    return {
        "seconds": seconds,
        "rows_per_second": len(digests) / seconds,
        "memories_table_seconds": memories.seconds,
        "chunks": memories.chunks,
        "mb_copied": memories.bytes_copied / 2**20,
        "checks_after_sync_seconds": check_seconds,
    }


def run_ninety(source: psycopg.Connection, home: Path, digests: dict) -> dict:
    rows = len(digests)
    present = int(rows * 0.9)
    url = target_with_parents("bench_sync_90", source, home)
    with psycopg.connect(url, autocommit=True) as target:
        copy_memories(source, target, "id", present)
        started = time.perf_counter()
        results = sync_tables(source, target, SyncOptions())
        seconds = time.perf_counter() - started
        same_memories(target, digests, "sync into a target with 90%")
    memories = memories_result(results)
    if (memories.inserted, memories.unchanged) != (rows - present, present):
        raise RuntimeError(
            f"expected {rows - present:,} inserted and {present:,} unchanged, got "
            f"{memories.inserted:,} and {memories.unchanged:,}"
        )
    return {
        "present": present,
        "inserted": memories.inserted,
        "seconds": seconds,
        "examined_rows_per_second": rows / seconds,
        "inserted_rows_per_second": memories.inserted / seconds,
    }


def run_row_by_row(source: psycopg.Connection, home: Path, digests: dict, sample: int) -> dict:
    """One SELECT streaming the sample with the vector as text, one autocommitted upsert per row."""
    columns = MEMORIES.columns
    vectors = set(MEMORIES.vector_columns)
    select = sql.SQL("SELECT {} FROM memories ORDER BY id LIMIT {}").format(
        sql.SQL(", ").join(
            sql.SQL("{}::text" if c in vectors else "{}").format(sql.Identifier(c)) for c in columns
        ),
        sql.Literal(sample),
    )
    insert = sql.SQL("INSERT INTO memories ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.SQL("%s::vector" if c in vectors else "%s") for c in columns),
        sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns if c != "id"
        ),
    )
    url = target_with_parents("bench_sync_row_by_row", source, home)
    with psycopg.connect(url, autocommit=True) as target:
        started = time.perf_counter()
        with source.cursor() as read, target.cursor() as write:
            for record in read.stream(select):
                write.execute(insert, record)
        seconds = time.perf_counter() - started
        written = memory_digests(target)
    first = sorted(digests)[:sample]
    if sorted(written) != first or any(written[k] != digests[k] for k in first):
        raise RuntimeError("row by row: the target's memories differ from the source's sample")
    return {
        "sample": sample,
        "seconds": seconds,
        "rows_per_second": sample / seconds,
        "extrapolated_seconds": seconds * len(digests) / sample,
    }


def pg_dump_restore(source_url: str, target_url: str, restore_args: list[str]) -> tuple[float, int, str]:
    bins = binaries_dir()
    started = time.perf_counter()
    dump = subprocess.Popen(
        [str(bins / "pg_dump"), "-Fc", "-Z0", "-t", "memories", "-d", source_url], stdout=subprocess.PIPE
    )
    restore = subprocess.run(
        [str(bins / "pg_restore"), "--no-owner", *restore_args, "-d", target_url],
        stdin=dump.stdout,
        capture_output=True,
        text=True,
    )
    dump.stdout.close()
    if dump.wait() != 0:
        raise RuntimeError("pg_dump failed")
    return time.perf_counter() - started, restore.returncode, restore.stderr.strip()


def run_pg_dump(source: psycopg.Connection, source_url: str, home: Path, digests: dict) -> dict:
    url = target_with_parents("bench_sync_pg_restore", source, home)
    seconds, code, errors = pg_dump_restore(source_url, url, ["--data-only"])
    mode = "--data-only into the schema, parents present"
    if code != 0:
        # The fallback: the schema and the parents, no memories table; pg_restore creates it,
        # loads it, then builds its indexes and constraints.
        print(f"  pg_restore --data-only failed ({errors.splitlines()[-1] if errors else code})", flush=True)
        url = target_with_parents("bench_sync_pg_restore", source, home)
        with psycopg.connect(url, autocommit=True) as target:
            target.execute("DROP TABLE memories CASCADE")
        seconds, code, errors = pg_dump_restore(source_url, url, [])
        mode = "full restore of memories into the schema without it, parents present"
        if code != 0:
            raise RuntimeError(f"pg_restore failed: {errors}")
    with psycopg.connect(url, autocommit=True) as target:
        same_memories(target, digests, "pg_dump | pg_restore")
    return {"mode": mode, "seconds": seconds, "rows_per_second": len(digests) / seconds}


def run_threshold(home: Path, base: int, seed: int, keep: bool) -> dict:
    """Per share: a source of base + extra memories (a copy of one of 2 × base, cut by created_at)
    and, twice, a copy of a target holding the first `base` with the HNSW index."""
    extras = {share: round(share * base) for share in SHARES}
    full = "bench_sync_threshold_dev"
    with psycopg.connect(fresh_database(full, home), autocommit=True) as conn:
        apply_new_schema(conn)
        register_vector(conn)
        load(conn, base + max(extras.values()), seed + 1)
    template = "bench_sync_threshold_base"
    with (
        open_read_only(embedded_server(home).get_uri(full), "threshold source") as source,
        psycopg.connect(target_with_parents(template, source, home), autocommit=True) as target,
    ):
        copy_memories(source, target, "created_at", base)
        build = ensure_vector_index(target)
    print(f"  target of {base:,} memories, HNSW index built in {build.seconds:.2f}s", flush=True)
    figures: dict = {"base": base, "index_build_seconds": build.seconds, "shares": []}
    for share, extra in extras.items():
        source_url = clone_database("bench_sync_threshold_src", full, home)
        with psycopg.connect(source_url, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM memories WHERE created_at >= %s", (CREATED_AT + timedelta(seconds=base + extra),)
            )
            conn.execute("VACUUM (ANALYZE) memories")
        seconds = {}
        with open_read_only(source_url, "threshold source") as source:
            digests = memory_digests(source)  # also brings the source's pages into the cache
            for mode in ("maintained", "rebuilt"):
                target_url = clone_database("bench_sync_threshold_target", template, home)
                with psycopg.connect(target_url, autocommit=True) as target:
                    started = time.perf_counter()
                    if mode == "rebuilt":
                        target.execute(f"DROP INDEX {INDEX_NAME}")
                    results = sync_tables(source, target, SyncOptions())
                    if mode == "rebuilt":
                        ensure_vector_index(target)
                    seconds[mode] = time.perf_counter() - started
                    if memories_result(results).inserted != extra or not index_state(target).valid:
                        raise RuntimeError(
                            f"threshold {share}, {mode}: not {extra:,} inserted and a valid index"
                        )
                    same_memories(target, digests, f"threshold {share}, {mode}")
        figures["shares"].append(
            {
                "share": share,
                "new_memories": extra,
                "index_maintained_seconds": seconds["maintained"],
                "drop_and_rebuild_seconds": seconds["rebuilt"],
            }
        )
        print(
            f"  + {share:.0%} ({extra:,} memories): index maintained {seconds['maintained']:.2f}s, "
            f"dropped and rebuilt {seconds['rebuilt']:.2f}s",
            flush=True,
        )
    faster = [
        s["share"] for s in figures["shares"] if s["drop_and_rebuild_seconds"] < s["index_maintained_seconds"]
    ]
    figures["rebuild_faster_from_share"] = faster[0] if faster else None
    figures["engine_bulk_load_share"] = BULK_LOAD_SHARE
    if not keep:
        for name in (full, template, "bench_sync_threshold_src", "bench_sync_threshold_target"):
            drop_database(name, home)
    return figures


def rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="memories in the source")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--home", type=Path, default=Path(__file__).resolve().parent / ".tinybot-bench")
    parser.add_argument(
        "--row-by-row-sample",
        type=int,
        default=5_000,
        help="rows the old way is timed on (then extrapolated)",
    )
    parser.add_argument(
        "--index-threshold",
        action="store_true",
        help="also time maintaining the HNSW index against rebuilding it",
    )
    parser.add_argument("--threshold-base", type=int, default=20_000, help="memories in the indexed target")
    parser.add_argument("--keep-databases", action="store_true", help="keep the targets (dropped by default)")
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    sample = max(1, min(args.row_by_row_sample, args.rows))

    source_url = fresh_database("bench_sync_dev", home)
    with psycopg.connect(source_url, autocommit=True) as conn:
        apply_new_schema(conn)
        register_vector(conn)
        load_seconds = load(conn, args.rows, args.seed)
    print(
        f"source: {args.rows:,} memories over {PEOPLE} personas and {PEOPLE} personalities, "
        f"loaded in {load_seconds:.1f}s",
        flush=True,
    )
    with open_read_only(source_url, "source") as source:
        digests = memory_digests(source)
        empty = run_empty(source, home, digests)
        print(
            f"sync into an empty target: {empty['seconds']:.2f}s, {empty['rows_per_second']:,.0f} memories/s "
            f"({empty['chunks']} chunks, {empty['mb_copied']:,.0f} MB); "
            f"checks after it {empty['checks_after_sync_seconds']:.2f}s",
            flush=True,
        )
        ninety = run_ninety(source, home, digests)
        print(
            f"sync into a target with 90%: {ninety['seconds']:.2f}s, {ninety['examined_rows_per_second']:,.0f} "
            f"rows examined/s, {ninety['inserted_rows_per_second']:,.0f} inserted/s ({ninety['inserted']:,} inserted)",
            flush=True,
        )
        row_by_row = run_row_by_row(source, home, digests, sample)
        print(
            f"row-at-a-time upsert with the vector as text: {row_by_row['seconds']:.2f}s for {sample:,} rows, "
            f"{row_by_row['rows_per_second']:,.0f} rows/s; all {args.rows:,}: "
            f"{row_by_row['extrapolated_seconds']:.1f}s" + (" (extrapolated)" if sample < args.rows else ""),
            flush=True,
        )
        dump = run_pg_dump(source, source_url, home, digests)
        print(
            f"pg_dump -t memories | pg_restore ({dump['mode']}): {dump['seconds']:.2f}s, "
            f"{dump['rows_per_second']:,.0f} rows/s",
            flush=True,
        )
    figures = {
        "rows": args.rows,
        "seed": args.seed,
        "load_seconds": load_seconds,
        "sync_into_empty": empty,
        "sync_into_90_percent": ninety,
        "row_by_row": row_by_row,
        "pg_dump_restore": dump,
        "row_by_row_extrapolated_vs_sync": row_by_row["extrapolated_seconds"] / empty["seconds"],
        "sync_vs_pg_dump_restore": empty["seconds"] / dump["seconds"],
        "sync_90_percent_vs_empty": ninety["seconds"] / empty["seconds"],
    }
    print(
        f"the sync is {figures['row_by_row_extrapolated_vs_sync']:.1f}× faster than row by row and takes "
        f"{figures['sync_vs_pg_dump_restore']:.2f}× the time of pg_dump | pg_restore",
        flush=True,
    )
    if not args.keep_databases:
        for name in ("bench_sync_empty", "bench_sync_90", "bench_sync_row_by_row", "bench_sync_pg_restore"):
            drop_database(name, home)
    if args.index_threshold:
        print(f"index threshold on {args.threshold_base:,} indexed memories:", flush=True)
        threshold = run_threshold(home, args.threshold_base, args.seed, args.keep_databases)
        figures["index_threshold"] = threshold
        share = threshold["rebuild_faster_from_share"]
        print(
            "  dropping and rebuilding is faster "
            + (f"from a share of {share:.0%}" if share is not None else "at no share measured")
            + f" (the engine drops it from {BULK_LOAD_SHARE:.0%})",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"db_sync_{args.rows}.json"
    out.write_text(json.dumps(rounded(figures), indent=2) + "\n")
    print(f"figures in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
