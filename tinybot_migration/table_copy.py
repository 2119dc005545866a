"""The relational copy: stream a table out of the old DB, re-key it, upsert it into the new DB.

Per table, in one new-DB transaction:
  old `COPY (SELECT … ORDER BY created_at, id) TO STDOUT (FORMAT BINARY)`
  → Python: remap every foreign key through the parents' id maps, allocate the deterministic id
  → new `COPY stage FROM STDIN (FORMAT BINARY)` into a temporary staging table
  → `INSERT … SELECT … FROM stage ON CONFLICT (key) DO UPDATE … WHERE row differs`.
Rows stream through; nothing but the id maps is held in memory. Timestamps stay naive in staging
and are converted with `AT TIME ZONE 'UTC'` in SQL, so neither server's nor client's `TimeZone`
can shift them; JSON travels as its text so numbers and keys survive byte for byte.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tinybot_migration.ids import SeedAllocator
from tinybot_migration.schema import NEW_SECONDARY_INDEXES
from tinybot_migration.tables import TABLES_BY_NAME, TableSpec

PROGRESS_EVERY_ROWS = 100_000
MAX_REJECTION_SAMPLES = 5

Log = Callable[[str], None]


@dataclass
class CopyResult:
    table: str
    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    id_collisions_resolved: int = 0
    rows_rejected: int = 0  # foreign key whose parent is not in the parent table
    rejection_samples: list[str] = field(default_factory=list)
    rebuilt_indexes: int = 0
    seconds: float = 0.0

    @property
    def rows_staged(self) -> int:
        return self.rows_read - self.rows_rejected

    @property
    def rows_unchanged(self) -> int:
        return self.rows_staged - self.rows_inserted - self.rows_updated

    @property
    def rows_written(self) -> int:
        return self.rows_inserted + self.rows_updated


@dataclass(frozen=True)
class ColumnType:
    name: str
    data_type: str  # information_schema data_type, e.g. "timestamp with time zone", "jsonb"

    @property
    def is_timestamp(self) -> bool:
        return self.data_type.startswith("timestamp")

    @property
    def is_json(self) -> bool:
        return self.data_type in ("json", "jsonb")


def column_types(conn: psycopg.Connection, table: str, columns: tuple[str, ...]) -> list[ColumnType]:
    rows = conn.execute(
        "SELECT column_name, data_type, udt_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    found = {
        name: (udt if data_type in ("USER-DEFINED", "ARRAY") else data_type) for name, data_type, udt in rows
    }
    missing = [c for c in columns if c not in found]
    if missing:
        raise RuntimeError(f"table {table} has no column(s) {', '.join(missing)} in {conn.info.dbname}")
    return [ColumnType(c, found[c]) for c in columns]


class IdMaps:
    """old id → new id for each parent table, computed on demand from the old DB.

    A map is rebuilt by running the same allocation the copy ran (same order, same seeds, same
    collision suffixes), so it agrees with the new DB without keeping old ids there.
    """

    def __init__(self, old_conn: psycopg.Connection) -> None:
        self._old_conn = old_conn
        self._maps: dict[str, dict[uuid.UUID, uuid.UUID]] = {}

    def remember(self, table: str, mapping: dict[uuid.UUID, uuid.UUID]) -> None:
        self._maps[table] = mapping

    def get(self, table: str) -> dict[uuid.UUID, uuid.UUID]:
        if table not in self._maps:
            spec = TABLES_BY_NAME[table]
            mapping: dict[uuid.UUID, uuid.UUID] = {}
            for old_id, row in remap_rows(self._old_conn, spec, self, CopyResult(spec.name)):
                mapping[old_id] = row[0]
            self._maps[table] = mapping
        return self._maps[table]


def _old_select(spec: TableSpec, types: list[ColumnType]) -> sql.Composed:
    exprs = [
        sql.SQL("{}::text").format(sql.Identifier(t.name)) if t.is_json else sql.Identifier(t.name)
        for t in types
    ]
    return sql.SQL("COPY (SELECT {} FROM {} ORDER BY {}) TO STDOUT (FORMAT BINARY)").format(
        sql.SQL(", ").join(exprs), sql.Identifier(spec.name), sql.SQL(spec.order_by)
    )


def binary_types(
    conn: psycopg.Connection, table: str, columns: tuple[str, ...], casts: list[str] | None = None
) -> list[int]:
    """Type oids of `columns` as a binary COPY carries them (after the given casts)."""
    casts = casts or [""] * len(columns)
    select = sql.SQL(", ").join(
        sql.SQL("{}{}").format(sql.Identifier(c), sql.SQL(cast))
        for c, cast in zip(columns, casts, strict=True)
    )
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} LIMIT 0").format(select, sql.Identifier(table)))
        return [d.type_code for d in cur.description]


def remap_rows(
    old_conn: psycopg.Connection, spec: TableSpec, id_maps: IdMaps, result: CopyResult
) -> Iterator[tuple[uuid.UUID | None, list]]:
    """Yield (old id, re-keyed row) for every old row whose parents all exist, in read order."""
    old_types = column_types(old_conn, spec.name, spec.columns)
    oids = binary_types(old_conn, spec.name, spec.columns, ["::text" if t.is_json else "" for t in old_types])
    fk_positions = [(spec.columns.index(fk.column), fk, id_maps.get(fk.parent)) for fk in spec.foreign_keys]
    seed_positions = [spec.columns.index(c) for c in spec.seed_columns]
    allocator = SeedAllocator() if spec.has_id else None
    seed = spec.seed
    with old_conn.transaction(), old_conn.cursor() as cur:
        # Sorting a large table for the collision order wants more than the default 4 MB.
        cur.execute("SET LOCAL work_mem = '256MB'")
        with cur.copy(_old_select(spec, old_types)) as copy:
            copy.set_types(oids)
            for record in copy.rows():
                result.rows_read += 1
                row = list(record)
                rejected = False
                for position, fk, mapping in fk_positions:
                    old_parent = row[position]
                    if old_parent is None:
                        continue
                    new_parent = mapping.get(old_parent)
                    if new_parent is None:
                        rejected = True
                        result.rows_rejected += 1
                        if len(result.rejection_samples) < MAX_REJECTION_SAMPLES:
                            result.rejection_samples.append(
                                f"{spec.name} row {row[0]}: {fk.column} {old_parent} is not in {fk.parent}"
                            )
                        break
                    row[position] = new_parent
                if rejected:
                    continue
                old_id = None
                if allocator is not None:
                    old_id = row[0]
                    row[0] = allocator.allocate(seed(*[row[i] for i in seed_positions]))
                yield old_id, row
    if allocator is not None:
        result.id_collisions_resolved = allocator.collisions


def copy_table(
    old_conn: psycopg.Connection,
    new_conn: psycopg.Connection,
    spec: TableSpec,
    id_maps: IdMaps,
    log: Log | None = None,
) -> CopyResult:
    """Copy one table old → new in a single new-DB transaction; a failure leaves the new DB as it was."""
    started = time.perf_counter()
    result = CopyResult(spec.name)
    new_types = column_types(new_conn, spec.name, spec.columns)
    stage = sql.Identifier(f"stage_{spec.name}")
    table = sql.Identifier(spec.name)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)
    mapping: dict[uuid.UUID, uuid.UUID] = {}

    with new_conn.transaction():
        new_conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                stage, sql.SQL(", ").join(_staging_column(t) for t in new_types)
            )
        )
        stage_oids = binary_types(new_conn, f"stage_{spec.name}", spec.columns)
        next_report = PROGRESS_EVERY_ROWS
        with new_conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, columns)
        ) as copy:
            copy.set_types(stage_oids)
            for old_id, row in remap_rows(old_conn, spec, id_maps, result):
                copy.write_row(row)
                if old_id is not None:
                    mapping[old_id] = row[0]
                if log is not None and result.rows_read >= next_report:
                    elapsed = time.perf_counter() - started
                    log(
                        f"{spec.name}: {result.rows_read:,} rows read ({result.rows_read / elapsed:,.0f} rows/s)"
                    )
                    next_report += PROGRESS_EVERY_ROWS

        target_was_empty = new_conn.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)
        ).fetchone()[0]
        secondary = NEW_SECONDARY_INDEXES.get(spec.name, {})
        if target_was_empty and secondary:
            # A bulk load into an empty table is faster with its secondary indexes built after it.
            for name in secondary:
                new_conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
        result.rows_inserted, result.rows_updated = new_conn.execute(_upsert(spec, new_types)).fetchone()
        if target_was_empty and secondary:
            for statement in secondary.values():
                new_conn.execute(statement)
            result.rebuilt_indexes = len(secondary)

    if result.rows_written:
        new_conn.execute(sql.SQL("ANALYZE {}").format(table))
    if spec.has_id:
        id_maps.remember(spec.name, mapping)
    result.seconds = time.perf_counter() - started
    if log is not None:
        log(
            f"{spec.name}: {result.rows_read:,} read, {result.rows_inserted:,} inserted, "
            f"{result.rows_updated:,} updated, {result.rows_unchanged:,} unchanged, "
            f"{result.id_collisions_resolved} id collisions, {result.rows_rejected} rejected "
            f"in {result.seconds:.2f}s"
        )
    return result


def _staging_column(column: ColumnType) -> sql.Composed:
    if column.is_timestamp:
        data_type = "timestamp"  # naive UTC from the old DB, converted explicitly on insert
    elif column.is_json or column.data_type == "character varying":
        data_type = "text"
    else:
        data_type = column.data_type
    return sql.SQL("{} {}").format(sql.Identifier(column.name), sql.SQL(data_type))


def _upsert(spec: TableSpec, types: list[ColumnType]) -> sql.Composed:
    def value(column: ColumnType) -> sql.Composable:
        ident = sql.Identifier(column.name)
        if column.is_timestamp:
            return sql.SQL("{} AT TIME ZONE 'UTC'").format(ident)
        if column.is_json:
            return sql.SQL("{}::{}").format(ident, sql.SQL(column.data_type))
        return ident

    updatable = [c for c in spec.columns if c not in spec.conflict_key]
    target = sql.Identifier(spec.name)
    return sql.SQL(
        "WITH written AS ("
        " INSERT INTO {target} ({columns}) SELECT {values} FROM {stage}"
        " ON CONFLICT ({key}) DO UPDATE SET {assignments}"
        " WHERE ({current}) IS DISTINCT FROM ({incoming})"
        " RETURNING (xmax = 0) AS inserted)"
        " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(
        target=target,
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns),
        values=sql.SQL(", ").join(value(t) for t in types),
        stage=sql.Identifier(f"stage_{spec.name}"),
        key=sql.SQL(", ").join(sql.Identifier(c) for c in spec.conflict_key),
        assignments=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updatable
        ),
        current=sql.SQL(", ").join(sql.SQL("{}.{}").format(target, sql.Identifier(c)) for c in updatable),
        incoming=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in updatable),
    )
