"""The relational copy: stream a table out of the old DB, re-key it, upsert it into the new DB.

Per table, in one new-DB transaction:
  old  `COPY (SELECT seed, columns in new form …) TO STDOUT` (text format)
  → Python: the seed field replaced by its id, uuid5(seed) with `:n` suffixes for colliding seeds
  → new  `COPY stage FROM STDIN` into a temporary staging table
  → `INSERT … SELECT … FROM stage ON CONFLICT (key) DO UPDATE … WHERE the row differs`.

The old server does everything it can on its own core: it remaps foreign keys (the parents' id
maps are passed in as arrays), hashes content, formats the seed, and converts timestamps with
text; both databases hold naive UTC `timestamp(3)`, so no session `TimeZone` can shift them (an
old `timestamptz` column is converted `AT TIME ZONE 'UTC'`). A column only the new database has
(one a later bot migration added) is left to its default when the old table lacks it.
Python only runs SHA-1 (the embedded server has none) and moves lines of COPY text: values are
never parsed, so bytes, JSON, numerics and NULLs arrive exactly as they left.

Loading into an empty table drops its foreign keys and secondary indexes first and rebuilds them
after the load, in the same transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tinybot_migration.lib import schema
from tinybot_migration.lib.ids import SeedAllocator
from tinybot_migration.lib.postgres import (
    ColumnType,
    column_types,
    copy_line_batches,
    copy_lines,
    copy_text_field,
    copy_text_fields,
    prepare_bulk_load,
    take_turns_in_transaction,
)
from tinybot_migration.lib.progress import Advanced, Progress, quiet, rate
from tinybot_migration.lib.relational.tables import TABLES_BY_NAME, TableSpec

PROGRESS_EVERY_ROWS = 100_000
# Rows cut, re-keyed and written at once (about 1.6 MB of conversation_history).
ROWS_PER_WRITE = 4096
MAX_REJECTION_SAMPLES = 20
# Text COPY is only unambiguous with fixed output styles; set them for every copy transaction.
TEXT_FORMAT_SETTINGS = ("SET LOCAL DateStyle = 'ISO, YMD'", "SET LOCAL bytea_output = 'hex'")


@dataclass
class CopyResult:
    table: str
    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    id_collisions_resolved: int = 0
    # Rows whose foreign key points at no row of the parent table: (key, reason, row as JSON).
    rejected_rows: list[tuple[str, str, str]] = field(default_factory=list)
    rejection_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_rejected(self) -> int:
        return len(self.rejected_rows)

    @property
    def rows_staged(self) -> int:
        return self.rows_read - self.rows_rejected

    @property
    def rows_unchanged(self) -> int:
        return self.rows_staged - self.rows_inserted - self.rows_updated

    @property
    def rows_written(self) -> int:
        return self.rows_inserted + self.rows_updated


# --- the old side: one query per table that does the re-keying work in SQL ---------------------


def _mapping_alias(column: str) -> sql.Identifier:
    return sql.Identifier(f"map_{column}")


@dataclass
class ParentJoins:
    """LEFT JOINs of the old table `t` to its parents' id maps (passed in as arrays).

    DISTINCT ON tells the planner each old id is there once: without it, it guesses that every row
    matches dozens of map entries and sorts or hashes the whole table for the join (at scale 100 this
    doubled the old server's CPU) instead of hashing the small map."""

    joins: sql.Composable
    params: list
    # One condition per foreign key: NULL, or its parent is in the map.
    parent_found: list[tuple[str, sql.Composable]]


def _parent_joins(spec: TableSpec, maps: dict[str, dict[str, str]]) -> ParentJoins:
    joins: list[sql.Composable] = []
    params: list = []
    found: list[tuple[str, sql.Composable]] = []
    for fk in spec.foreign_keys:
        alias, column = _mapping_alias(fk.column), sql.Identifier(fk.column)
        joins.append(
            sql.SQL(
                " LEFT JOIN (SELECT DISTINCT ON (old_id) old_id, new_id FROM unnest(%s::uuid[], %s::uuid[])"
                " AS m(old_id, new_id)) AS {alias} ON {alias}.old_id = t.{col}"
            ).format(alias=alias, col=column)
        )
        params += [list(maps[fk.parent].keys()), list(maps[fk.parent].values())]
        found.append(
            (
                fk.column,
                sql.SQL("(t.{col} IS NULL OR {alias}.new_id IS NOT NULL)").format(col=column, alias=alias),
            )
        )
    return ParentJoins(sql.Composed(joins), params, found)


def old_rows_query(
    spec: TableSpec,
    maps: dict[str, dict[str, str]],
    types: list[ColumnType],
    with_old_id: bool,
) -> tuple[sql.Composed, list]:
    """COPY query over the old table giving [seed, [old id,]] then the new-form columns of `types`
    (the id column, which Python fills in, excepted).

    Rows whose non-NULL foreign key has no parent in the map are left out (`count_missing_parents`
    counts them).
    """
    parents = _parent_joins(spec, maps)
    fk_columns = spec.foreign_key_columns

    def new_value(column: str) -> sql.Composable:
        if column in fk_columns:
            return sql.SQL("{}.new_id").format(_mapping_alias(column))
        return sql.SQL("t.{}").format(sql.Identifier(column))

    outputs: list[sql.Composable] = []
    if spec.has_id:
        seed = spec.seed_sql(*[new_value(c).as_string() for c in spec.seed_columns])
        outputs.append(sql.SQL("({})").format(sql.SQL(seed)))
        if with_old_id:
            outputs.append(sql.SQL("t.id"))
    for column in types:
        if spec.has_id and column.name == "id":
            continue
        value = new_value(column.name)
        outputs.append(sql.SQL("{} AT TIME ZONE 'UTC'").format(value) if column.is_zoned else value)
    conditions = [condition for _, condition in parents.parent_found]
    query = sql.SQL(
        "COPY (SELECT {outputs} FROM {table} AS t{joins}{where} ORDER BY {order}) TO STDOUT"
    ).format(
        outputs=sql.SQL(", ").join(outputs),
        table=sql.Identifier(spec.name),
        joins=parents.joins,
        where=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL(""),
        order=sql.SQL(", ").join(
            sql.SQL("t.{}").format(sql.Identifier(c.strip())) for c in spec.order_by.split(",")
        ),
    )
    return query, parents.params


def count_rejected_rows(
    old_conn: psycopg.Connection,
    spec: TableSpec,
    maps: dict[str, dict[str, str]],
    staged: int,
    result: CopyResult,
) -> None:
    """After the stream, in its snapshot: the old rows it left out for a missing parent.

    A plain count settles the usual case (none left out); only a difference pays for the query
    that joins every row to its parents' maps to name them.
    """
    if not spec.foreign_keys:
        return
    old_rows = old_conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.name))
    ).fetchone()[0]
    if old_rows != staged:
        count_missing_parents(old_conn, spec, maps, result)


def count_missing_parents(
    old_conn: psycopg.Connection, spec: TableSpec, maps: dict[str, dict[str, str]], result: CopyResult
) -> None:
    """Count (and sample) the old rows left out because a foreign key points at no parent."""
    parents = _parent_joins(spec, maps)
    problems = sql.SQL(", ").join(
        sql.SQL("CASE WHEN NOT {found} THEN {text} || t.{col} || {parent} END").format(
            found=found,
            text=sql.Literal(f"{column} "),
            col=sql.Identifier(column),
            parent=sql.Literal(f" is not in {spec.foreign_keys[i].parent}"),
        )
        for i, (column, found) in enumerate(parents.parent_found)
    )
    rows = old_conn.execute(
        sql.SQL(
            "SELECT {key}, concat_ws('; ', {problems}), to_jsonb(t)::text"
            " FROM {table} AS t{joins} WHERE NOT ({all_found})"
        ).format(
            key=spec.row_key_sql("t"),
            problems=problems,
            table=sql.Identifier(spec.name),
            joins=parents.joins,
            all_found=sql.SQL(" AND ").join(found for _, found in parents.parent_found),
        ),
        parents.params,
    ).fetchall()
    result.rejected_rows = rows
    result.rejection_samples = [
        f"{spec.name} row {key}: {problem}" for key, problem, _ in rows[:MAX_REJECTION_SAMPLES]
    ]


def record_rejected_rows(new_conn: psycopg.Connection, spec: TableSpec, result: CopyResult) -> None:
    """Make `relational_rejects` hold exactly this copy's left-out rows of the table (a row whose
    parent has since appeared, or that is gone from the old DB, leaves it)."""
    rejects = schema.RELATIONAL_REJECTS.qualified
    keys = [key for key, _, _ in result.rejected_rows]
    new_conn.execute(
        f"DELETE FROM {rejects} WHERE table_name = %s AND NOT row_key = ANY(%s)", (spec.name, keys)
    )
    if result.rejected_rows:
        with new_conn.cursor() as cur:
            cur.executemany(  # a row rejected again for the same reason keeps its rejected_at
                f"INSERT INTO {rejects} (table_name, row_key, reason, raw_row) VALUES (%s, %s, %s, %s::jsonb)"
                " ON CONFLICT (table_name, row_key) DO UPDATE SET reason = EXCLUDED.reason,"
                " raw_row = EXCLUDED.raw_row, rejected_at = now()"
                f" WHERE ({schema.RELATIONAL_REJECTS.name}.reason, {schema.RELATIONAL_REJECTS.name}.raw_row)"
                " IS DISTINCT FROM (EXCLUDED.reason, EXCLUDED.raw_row)",
                [(spec.name, key, reason, raw) for key, reason, raw in result.rejected_rows],
            )


class IdMaps:
    """old id → new id (both as text) for each parent table, computed on demand from the old DB.

    A map is rebuilt by running the same allocation the copy ran (same order, same seeds, same
    collision suffixes), so it agrees with the new DB without keeping old ids there.
    """

    def __init__(self, old_conn: psycopg.Connection) -> None:
        self._old_conn = old_conn
        self._maps: dict[str, dict[str, str]] = {}

    def get(self, table: str) -> dict[str, str]:
        if table not in self._maps:
            spec = TABLES_BY_NAME[table]
            maps = self.for_parents_of(spec)
            query, params = old_rows_query(spec, maps, [], with_old_id=True)
            allocator = SeedAllocator()
            mapping: dict[str, str] = {}
            with self._old_conn.cursor() as cur, cur.copy(query, params) as copy:
                for line in copy_lines(copy):
                    seed, old_id = line.split(b"\t")
                    mapping[old_id.decode()] = allocator.allocate_text(copy_text_field(seed))
            self._maps[table] = mapping
        return self._maps[table]

    def for_parents_of(self, spec: TableSpec) -> dict[str, dict[str, str]]:
        return {fk.parent: self.get(fk.parent) for fk in spec.foreign_keys}


# --- the new side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """Where a table's rows are streamed: the table itself (bulk load into an empty table, with the
    statements that rebuild what was dropped) or a staging table to upsert from."""

    target: sql.Identifier
    bulk: bool
    columns: tuple[str, ...]  # the columns written (those the old table has too)
    rebuild: tuple[sql.Composable, ...] = ()


def copy_table(
    old_conn: psycopg.Connection,
    new_conn: psycopg.Connection,
    spec: TableSpec,
    id_maps: IdMaps,
    log: Progress | None = None,
) -> CopyResult:
    """Copy one table old → new in a single new-DB transaction; a failure leaves the new DB as it was.

    Into an empty table the rows are copied directly (see `prepare_bulk_load`); otherwise into a
    staging table and then upserted, rewriting only rows that differ.
    """
    started = time.perf_counter()
    log = log or quiet
    result = CopyResult(spec.name)
    columns = spec.columns_in(old_conn)
    old_types = column_types(old_conn, spec.name, columns)
    allocator = SeedAllocator()
    # One old-DB transaction (REPEATABLE READ, as the resource opens it) for the parents' maps,
    # the rows and the count of rows left out: all three see the same snapshot.
    with old_conn.transaction():
        maps = id_maps.for_parents_of(spec)
        query, params = old_rows_query(spec, maps, old_types, with_old_id=False)
        with new_conn.transaction():
            take_turns_in_transaction(new_conn, spec.name)
            configure_copy_sessions(old_conn, new_conn)
            destination = open_destination(new_conn, spec, columns)
            staged = stream_rekeyed_rows(
                old_conn, new_conn, spec, (query, params), destination, allocator, log
            )
            count_rejected_rows(old_conn, spec, maps, staged, result)
            record_rejected_rows(new_conn, spec, result)
            result.rows_read = staged + result.rows_rejected
            if destination.bulk:
                result.rows_inserted = staged
                for statement in destination.rebuild:
                    new_conn.execute(statement)
            else:
                result.rows_inserted, result.rows_updated = new_conn.execute(
                    _upsert(spec, columns)
                ).fetchone()
    if result.rows_written:
        new_conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(spec.name)))
    result.id_collisions_resolved = allocator.collisions
    result.seconds = time.perf_counter() - started
    log(
        f"{spec.name}: {result.rows_read:,} read, {result.rows_inserted:,} inserted, "
        f"{result.rows_updated:,} updated, {result.rows_unchanged:,} unchanged, "
        f"{result.id_collisions_resolved} id collisions, {result.rows_rejected} rejected "
        f"in {result.seconds:.2f}s" + (" (bulk load into an empty table)" if destination.bulk else "")
    )
    return result


def configure_copy_sessions(old_conn: psycopg.Connection, new_conn: psycopg.Connection) -> None:
    """Settings local to the copy's transactions on both sides."""
    for statement in TEXT_FORMAT_SETTINGS:
        old_conn.execute(statement)
        new_conn.execute(statement)
    # Sorting a large table into collision order wants more than the default 4 MB.
    old_conn.execute("SET LOCAL work_mem = '256MB'")
    new_conn.execute("SET LOCAL maintenance_work_mem = '512MB'")


def open_destination(new_conn: psycopg.Connection, spec: TableSpec, columns: tuple[str, ...]) -> Destination:
    """Lock the table, then choose the bulk load (empty table) or a staging table (rows present)."""
    table = sql.Identifier(spec.name)
    # No other writer may slip in between the emptiness test and the load.
    new_conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table))
    empty = new_conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()[0]
    if empty:
        return Destination(table, True, columns, tuple(prepare_bulk_load(new_conn, spec.name)))
    stage = sql.Identifier(f"stage_{spec.name}")
    new_conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            stage, _column_list(columns), table
        )
    )
    return Destination(stage, False, columns)


def stream_rekeyed_rows(
    old_conn: psycopg.Connection,
    new_conn: psycopg.Connection,
    spec: TableSpec,
    old_query: tuple[sql.Composed, list],
    destination: Destination,
    allocator: SeedAllocator,
    log: Progress,
) -> int:
    """Stream the old rows into `destination`, each seed turned into its id; returns the rows sent."""
    started = time.perf_counter()
    query, params = old_query
    rows, next_report = 0, PROGRESS_EVERY_ROWS
    with (
        old_conn.cursor() as old_cur,
        old_cur.copy(query, params) as source,
        new_conn.cursor() as new_cur,
        new_cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(destination.target, _column_list(destination.columns))
        ) as target,
    ):
        for lines in copy_line_batches(source, ROWS_PER_WRITE):
            target.write(_rekey_lines(lines, allocator) if spec.has_id else b"\n".join(lines) + b"\n")
            rows += len(lines)
            if rows >= next_report:
                log(
                    Advanced(
                        spec.name, rows, None, "rows streamed", rate(rows, time.perf_counter() - started)
                    )
                )
                next_report += PROGRESS_EVERY_ROWS
    return rows


def _rekey_lines(lines: list[bytes], allocator: SeedAllocator) -> bytes:
    """COPY lines `seed<TAB>rest` as the COPY rows `id<TAB>rest`: each line's bytes pass through as
    they came, and the whole batch goes through the allocator at once, with no Python per row
    beyond cutting off the seed (see `SeedAllocator.allocate_batch`)."""
    tabs = [line.index(b"\t") for line in lines]
    seeds = copy_text_fields([line[:tab] for line, tab in zip(lines, tabs, strict=True)])
    pieces = [b"\n"] * (3 * len(lines))
    pieces[0::3] = allocator.allocate_batch(seeds)
    pieces[1::3] = [line[tab:] for line, tab in zip(lines, tabs, strict=True)]
    return b"".join(pieces)


def _column_list(columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def _upsert(spec: TableSpec, columns: tuple[str, ...]) -> sql.Composed:
    updatable = [c for c in columns if c not in spec.conflict_key]
    target = sql.Identifier(spec.name)
    return sql.SQL(
        "WITH written AS ("
        " INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage}"
        " ON CONFLICT ({key}) DO UPDATE SET {assignments}"
        " WHERE ({current}) IS DISTINCT FROM ({incoming})"
        " RETURNING (xmax = 0) AS inserted)"
        " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(
        target=target,
        columns=_column_list(columns),
        stage=sql.Identifier(f"stage_{spec.name}"),
        key=sql.SQL(", ").join(sql.Identifier(c) for c in spec.conflict_key),
        assignments=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updatable
        ),
        current=sql.SQL(", ").join(sql.SQL("{}.{}").format(target, sql.Identifier(c)) for c in updatable),
        incoming=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in updatable),
    )
