"""Syncing one new database into another (DEV → PROD or back), table by table in foreign-key order.

Per table, in key order and in batches:
1. *Fingerprints*: each side's rows as (key, md5 of the content, updated_at, size, natural keys,
   foreign keys), a few dozen bytes a row whatever the row's size (`SyncTable.row_hash`).
2. *Classify* every source row against the target's rows of the same key range: insert, update
   (the newer `updated_at` wins; ties keep the target), unchanged, target newer, or a conflict
   (append-only content that differs, a natural key the target holds under another id, a parent
   that could not be synced). Rows only on the target are counted, never deleted.
3. *Apply* (not in a dry run): the rows to write stream from the source with binary COPY (vectors
   as pgvector's binary form, never as text) into a staging table on the target, in chunks sized
   by bytes; each chunk is upserted in a transaction of its own.

Every write is guarded again in SQL (insert only what is missing, update only what is older or,
with prefer=source, different), so a sync killed at any point and started again ends where an
uninterrupted one would: what was applied reads as unchanged the second time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tinybot_migration.lib.sync.progress import SILENT, SyncProgress
from tinybot_migration.lib.sync.results import Conflict, TableSync
from tinybot_migration.lib.sync.tables import SYNC_TABLES, SyncTable

FINGERPRINT_BATCH_ROWS = 5_000
# A chunk of rows copied and upserted in one transaction: about 10,000 memories of 1536 floats.
DEFAULT_BATCH_BYTES = 64 * 2**20
PREFER = ("target", "source")


@dataclass(frozen=True)
class Fingerprint:
    key: tuple
    digest: str
    updated_at: object
    size: int
    natural: tuple[tuple, ...]  # one value tuple per natural key of the table
    parents: tuple  # the foreign-key columns' values, in SyncTable.foreign_keys order


@dataclass(frozen=True)
class SyncOptions:
    dry_run: bool = False
    prefer: str = "target"  # who wins an append-only row whose content differs on the two sides
    batch_bytes: int = DEFAULT_BATCH_BYTES

    def __post_init__(self) -> None:
        if self.prefer not in PREFER:
            raise ValueError(f"prefer must be one of {', '.join(PREFER)}, not {self.prefer!r}")
        if self.batch_bytes < 1:
            raise ValueError(f"batch_bytes must be positive, not {self.batch_bytes}")


@dataclass
class Plan:
    """What one fingerprint batch asks of the target."""

    inserts: list[Fingerprint] = field(default_factory=list)
    updates: list[Fingerprint] = field(default_factory=list)


def prepare_session(conn: psycopg.Connection) -> None:
    """The same text forms on both sides, so that equal rows hash equally."""
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET DateStyle = 'ISO, YMD'")
    conn.execute("SET IntervalStyle = 'postgres'")
    conn.execute("SET extra_float_digits = 1")


def _ident_list(names: Sequence[str], alias: str | None = None) -> sql.Composable:
    if alias is None:
        return sql.SQL(", ").join(map(sql.Identifier, names))
    return sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)


def _fingerprint_query(table: SyncTable, where: sql.Composable, limit: bool) -> sql.Composable:
    natural = [c for key in table.natural_keys for c in key]
    parents = [column for column, _ in table.foreign_keys]
    extra = natural + parents
    return sql.SQL(
        "SELECT {key}, {digest}, {updated_at}, pg_column_size(t.*){extra} FROM {table} t"
        " WHERE {where} ORDER BY {key}{limit}"
    ).format(
        key=_ident_list(table.key),
        digest=table.row_hash(),
        updated_at=sql.Identifier(table.version_column) if table.versioned else sql.SQL("NULL"),
        extra=sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(c)) for c in extra),
        table=table.identifier,
        where=where,
        limit=sql.SQL(" LIMIT %s") if limit else sql.SQL(""),
    )


def _row_to_fingerprint(table: SyncTable, row: tuple) -> Fingerprint:
    width = len(table.key)
    key, (digest, updated_at, size), rest = row[:width], row[width : width + 3], row[width + 3 :]
    natural, offset = [], 0
    for unique in table.natural_keys:
        natural.append(tuple(rest[offset : offset + len(unique)]))
        offset += len(unique)
    return Fingerprint(tuple(key), digest, updated_at, size, tuple(natural), tuple(rest[offset:]))


def _key_tuple(table: SyncTable) -> sql.Composable:
    return sql.SQL("({})").format(_ident_list(table.key))


def _placeholders(n: int) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join([sql.Placeholder()] * n))


def source_fingerprints(
    conn: psycopg.Connection, table: SyncTable, batch_rows: int = FINGERPRINT_BATCH_ROWS
) -> Iterator[list[Fingerprint]]:
    """The source's rows in key order, a batch at a time (keyset pagination: each batch starts
    after the last key of the one before)."""
    after: tuple | None = None
    while True:
        if after is None:
            query, params = _fingerprint_query(table, sql.SQL("true"), limit=True), (batch_rows,)
        else:
            where = sql.SQL("{} > {}").format(_key_tuple(table), _placeholders(len(after)))
            query, params = _fingerprint_query(table, where, limit=True), (*after, batch_rows)
        batch = [_row_to_fingerprint(table, row) for row in conn.execute(query, params).fetchall()]
        if not batch:
            return
        yield batch
        after = batch[-1].key


def target_fingerprints(
    conn: psycopg.Connection, table: SyncTable, first: tuple, last: tuple
) -> dict[tuple, Fingerprint]:
    """The target's rows whose keys lie in [first, last]."""
    n = len(first)
    where = sql.SQL("{key} >= {lo} AND {key} <= {hi}").format(
        key=_key_tuple(table), lo=_placeholders(n), hi=_placeholders(n)
    )
    rows = conn.execute(_fingerprint_query(table, where, limit=False), (*first, *last)).fetchall()
    return {fp.key: fp for fp in (_row_to_fingerprint(table, row) for row in rows)}


def natural_key_owners(
    conn: psycopg.Connection, table: SyncTable, rows: Sequence[Fingerprint]
) -> dict[tuple[int, tuple], tuple]:
    """(natural key index, values) -> the target's key for the rows' natural keys it holds."""
    owners: dict[tuple[int, tuple], tuple] = {}
    for index, unique in enumerate(table.natural_keys):
        values = [fp.natural[index] for fp in rows if None not in fp.natural[index]]
        if not values:
            continue
        columns = list(zip(*values, strict=True))
        query = sql.SQL(
            "SELECT {cols}, {key} FROM {table} WHERE ({cols}) IN (SELECT * FROM unnest({arrays}))"
        ).format(
            cols=_ident_list(unique),
            key=_ident_list(table.key),
            table=table.identifier,
            arrays=sql.SQL(", ").join(table.typed_array(c) for c in unique),
        )
        for row in conn.execute(query, [list(c) for c in columns]).fetchall():
            owners[(index, tuple(row[: len(unique)]))] = tuple(row[len(unique) :])
    return owners


def classify(
    table: SyncTable,
    batch: Sequence[Fingerprint],
    on_target: dict[tuple, Fingerprint],
    owners: dict[tuple[int, tuple], tuple],
    unsynced_parents: dict[str, set[tuple]],
    options: SyncOptions,
    result: TableSync,
) -> Plan:
    """Sort one batch of source rows into what to write; counts and conflicts go into `result`.
    A row that is not on the target and will not be written goes into `unsynced_parents` (its
    children cannot be written either)."""
    plan = Plan()
    unsynced = unsynced_parents.setdefault(table.name, set())
    for fp in batch:
        there = on_target.get(fp.key)
        if there is not None and there.digest == fp.digest:
            result.unchanged += 1
            continue
        problem = _natural_key_problem(table, fp, owners) or _parent_problem(table, fp, unsynced_parents)
        if there is None:
            if problem:
                reason, target_key = problem
                result.add_conflict(Conflict(table.name, fp.key, reason, target_key))
                unsynced.add(fp.key)
            else:
                plan.inserts.append(fp)
            continue
        if table.versioned:
            if (
                fp.updated_at is not None
                and there.updated_at is not None
                and fp.updated_at <= there.updated_at
            ):
                result.target_newer += 1  # a tie keeps the target too
                continue
        elif options.prefer != "source":
            result.add_conflict(Conflict(table.name, fp.key, "content differs on the two sides"))
            continue
        if problem:
            reason, target_key = problem
            result.add_conflict(Conflict(table.name, fp.key, reason, target_key))
        else:
            plan.updates.append(fp)
    return plan


def _natural_key_problem(
    table: SyncTable, fp: Fingerprint, owners: dict[tuple[int, tuple], tuple]
) -> tuple[str, tuple] | None:
    for index, unique in enumerate(table.natural_keys):
        owner = owners.get((index, fp.natural[index]))
        if owner is not None and owner != fp.key:
            values = ", ".join(f"{c}={v}" for c, v in zip(unique, fp.natural[index], strict=True))
            return f"{values} is another row on the target", owner
    return None


def _parent_problem(
    table: SyncTable, fp: Fingerprint, unsynced_parents: dict[str, set[tuple]]
) -> tuple[str, None] | None:
    for (column, parent), value in zip(table.foreign_keys, fp.parents, strict=True):
        if value is not None and (value,) in unsynced_parents.get(parent, ()):
            return f"its {column} {value} ({parent}) is not on the target and was not synced", None
    return None


def chunks_by_bytes(rows: Sequence[Fingerprint], budget: int) -> Iterator[list[Fingerprint]]:
    chunk: list[Fingerprint] = []
    size = 0
    for fp in rows:
        chunk.append(fp)
        size += fp.size
        if size >= budget:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _keys_in(table: SyncTable, alias: str | None, rows: Sequence[Fingerprint]) -> tuple[sql.Composable, list]:
    """`(key columns) IN (the rows' keys)` and its parameters: one array per key column."""
    condition = sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(
        _ident_list(table.key, alias), sql.SQL(", ").join(table.typed_array(c) for c in table.key)
    )
    return condition, [list(column) for column in zip(*(fp.key for fp in rows), strict=True)]


def _stage_name(table: SyncTable) -> str:
    return f"sync_stage_{table.name}"


def apply_chunk(
    source: psycopg.Connection,
    target: psycopg.Connection,
    table: SyncTable,
    inserts: Sequence[Fingerprint],
    updates: Sequence[Fingerprint],
    options: SyncOptions,
) -> tuple[int, int, int]:
    """Copy these rows into the target's staging table and upsert them, in one transaction.
    Returns (inserted, updated, bytes copied)."""
    stage = sql.Identifier(_stage_name(table))
    columns = _ident_list(table.columns)
    rows = [*inserts, *updates]
    selected, params = _keys_in(table, None, rows)
    copied = 0
    with target.transaction():
        _create_stage(target, table, stage, columns)
        target.execute(sql.SQL("TRUNCATE {}").format(stage))
        with (
            source.cursor().copy(
                sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT BINARY)").format(
                    columns, table.identifier, selected
                ),
                params,
            ) as out,
            target.cursor().copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, columns)
            ) as into,
        ):
            for data in out:
                copied += len(data)
                into.write(data)
        inserted = _insert_missing(target, table, stage, inserts) if inserts else 0
        updated = _update_changed(target, table, stage, updates, options) if updates else 0
    return inserted, updated, copied


def _create_stage(
    conn: psycopg.Connection, table: SyncTable, stage: sql.Identifier, columns: sql.Composable
) -> None:
    """The session's staging table for `table`, its vectors kept inline as in the table itself
    (CREATE TABLE AS would give them pgvector's default out-of-line storage: a TOAST write and read
    per 6 kB vector)."""
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
            stage, columns, table.identifier
        )
    )
    for column in table.vector_columns:
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE PLAIN").format(stage, sql.Identifier(column))
        )


def _insert_missing(
    conn: psycopg.Connection, table: SyncTable, stage: sql.Identifier, rows: Sequence[Fingerprint]
) -> int:
    # DO NOTHING on any unique key: a row the target gained since it was fingerprinted stays.
    selected, params = _keys_in(table, "s", rows)
    query = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} s WHERE {selected} ON CONFLICT DO NOTHING"
    )
    return conn.execute(
        query.format(table=table.identifier, cols=_ident_list(table.columns), stage=stage, selected=selected),
        params,
    ).rowcount


def _update_changed(
    conn: psycopg.Connection,
    table: SyncTable,
    stage: sql.Identifier,
    rows: Sequence[Fingerprint],
    options: SyncOptions,
) -> int:
    selected, params = _keys_in(table, "s", rows)
    changed = [c for c in table.columns if c not in table.key]
    guard = (
        sql.SQL("s.{u} > t.{u}").format(u=sql.Identifier(table.version_column))
        if table.versioned
        else sql.SQL("({}) IS DISTINCT FROM ({})").format(
            _ident_list(changed, "s"), _ident_list(changed, "t")
        )
    )
    query = sql.SQL(
        "UPDATE {table} t SET {assign} FROM {stage} s WHERE {join} AND {selected} AND {guard}"
    ).format(
        table=table.identifier,
        assign=sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in changed),
        stage=stage,
        join=sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in table.key),
        selected=selected,
        guard=guard,
    )
    return conn.execute(query, params).rowcount


def row_count(conn: psycopg.Connection, table: SyncTable) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.identifier)).fetchone()[0]


def sync_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    table: SyncTable,
    options: SyncOptions,
    unsynced_parents: dict[str, set[tuple]],
    progress: SyncProgress = SILENT,
) -> TableSync:
    started = time.perf_counter()
    result = TableSync(table.name)
    result.target_rows_before = row_count(target, table)
    result.source_rows = row_count(source, table)
    progress.table_started(result)
    matched = 0
    for batch in source_fingerprints(source, table):
        on_target = target_fingerprints(target, table, batch[0].key, batch[-1].key)
        matched += sum(fp.key in on_target for fp in batch)
        candidates = [
            fp for fp in batch if on_target.get(fp.key) is None or on_target[fp.key].digest != fp.digest
        ]
        owners = natural_key_owners(target, table, candidates) if table.natural_keys else {}
        plan = classify(table, batch, on_target, owners, unsynced_parents, options, result)
        if options.dry_run:
            result.inserted += len(plan.inserts)
            result.updated += len(plan.updates)
        else:
            _apply_plan(source, target, table, plan, on_target, options, result, progress)
        result.examined += len(batch)
        progress.batch_done(result)
    result.only_on_target = result.target_rows_before - matched
    result.seconds = time.perf_counter() - started
    return result


def _apply_plan(
    source: psycopg.Connection,
    target: psycopg.Connection,
    table: SyncTable,
    plan: Plan,
    on_target: dict[tuple, Fingerprint],
    options: SyncOptions,
    result: TableSync,
    progress: SyncProgress,
) -> None:
    for chunk in chunks_by_bytes([*plan.inserts, *plan.updates], options.batch_bytes):
        inserts = [fp for fp in chunk if fp.key not in on_target]
        updates = [fp for fp in chunk if fp.key in on_target]
        inserted, updated, copied = apply_chunk(source, target, table, inserts, updates, options)
        result.inserted += inserted
        result.updated += updated
        result.bytes_copied += copied
        result.chunks += 1
        progress.chunk_applied(result, inserted, updated, copied)


def sync_tables(
    source: psycopg.Connection,
    target: psycopg.Connection,
    options: SyncOptions,
    tables: Sequence[SyncTable] = SYNC_TABLES,
    progress: SyncProgress = SILENT,
) -> list[TableSync]:
    """Every table in foreign-key order. `source` is read-only; `target` too in a dry run. Both
    connections must be in autocommit mode (each chunk is a transaction of its own)."""
    for conn in (source, target):
        prepare_session(conn)
    unsynced_parents: dict[str, set[tuple]] = {}
    results = []
    for table in tables:
        result = sync_table(source, target, table, options, unsynced_parents, progress)
        progress.table_done(result)
        results.append(result)
    return results
