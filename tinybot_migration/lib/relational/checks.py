"""The promises the relational migration makes, each a function that reads both databases.

The table assets answer these as their `check_specs` in the same run as the copy; tests call
them directly on deliberately corrupted data to prove each one can fail.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from tinybot_migration.lib.check_outcome import ERROR, WARN, CheckOutcome
from tinybot_migration.lib.ids import UUID_TEXT_WIDTH, expected_ids_for_group, uuid5_batch, uuid5_bytes
from tinybot_migration.lib.postgres import (
    ColumnType,
    Connect,
    column_types,
    copy_line_batches,
    copy_text_fields,
)
from tinybot_migration.lib.relational.tables import TableSpec
from tinybot_migration.lib.schema import RELATIONAL_REJECTS

ROW_COUNT_PARITY = "row_count_parity"
FOREIGN_KEYS_REMAPPED = "foreign_keys_remapped"
IDS_MATCH_SEEDS = "ids_match_seeds"
CONTENT_CHECKSUM_MATCHES = "content_checksum_matches"
# Rows of the id check hashed and compared at once.
ID_CHECK_BATCH_ROWS = 8192

CHECK_DESCRIPTIONS = {
    ROW_COUNT_PARITY: "The new table holds as many rows as the old one, less the rows left out for a "
    "missing parent, each recorded in tinybot_migration.relational_rejects (WARN when there are any).",
    FOREIGN_KEYS_REMAPPED: "Every foreign key was remapped: as many non-NULL references as in the old "
    "table, and none pointing at a missing parent.",
    IDS_MATCH_SEEDS: "Every id equals uuid5 of its seed (with :n suffixes for colliding natural keys).",
    CONTENT_CHECKSUM_MATCHES: "A checksum of the content columns (all but ids and foreign keys, which the"
    " other checks cover) is equal in the old and new table.",
}


def checks_for(spec: TableSpec) -> list[str]:
    names = [ROW_COUNT_PARITY]
    if spec.foreign_keys:
        names.append(FOREIGN_KEYS_REMAPPED)
    if spec.has_id:
        names.append(IDS_MATCH_SEEDS)
    names.append(CONTENT_CHECKSUM_MATCHES)
    return names


def run_table_checks(connect_old: Connect, connect_new: Connect, spec: TableSpec) -> list[CheckOutcome]:
    """Run every check of `spec` concurrently, each on its own connections.

    The checks are independent reads: the id check keeps Python busy hashing while the checksum
    keeps both servers busy, so running them side by side uses both cores.
    """

    def run(name: str) -> CheckOutcome:
        with connect_old() as old_conn, connect_new() as new_conn:
            if name == ROW_COUNT_PARITY:
                return row_count_parity(old_conn, new_conn, spec)
            if name == FOREIGN_KEYS_REMAPPED:
                return foreign_keys_remapped(old_conn, new_conn, spec)
            if name == IDS_MATCH_SEEDS:
                return ids_match_seeds(new_conn, spec)
            return content_checksum_matches(old_conn, new_conn, spec)

    names = checks_for(spec)
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix=f"check-{spec.name}") as pool:
        return list(pool.map(run, names))


def _count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]


def left_out_rows(new_conn: psycopg.Connection, spec: TableSpec) -> list[tuple[str, dict]]:
    """(old key, old row) of the rows the copy left out for a missing parent, as it recorded them."""
    return new_conn.execute(
        f"SELECT row_key, raw_row FROM {RELATIONAL_REJECTS.qualified} WHERE table_name = %s", (spec.name,)
    ).fetchall()


def row_count_parity(
    old_conn: psycopg.Connection, new_conn: psycopg.Connection, spec: TableSpec
) -> CheckOutcome:
    """Old rows = new rows + the rows left out for a missing parent. Those are the old DB's defect,
    accounted for in relational_rejects: a WARN that names them, never blocking; a difference they
    do not explain is an ERROR (the copy lost something)."""
    old_rows, new_rows = _count(old_conn, spec.name), _count(new_conn, spec.name)
    left_out = len(left_out_rows(new_conn, spec))
    description = f"{spec.name}: {old_rows:,} old rows, {new_rows:,} new rows"
    if left_out:
        description += f", {left_out:,} left out for a missing parent ({RELATIONAL_REJECTS.qualified})"
    accounted = old_rows == new_rows + left_out
    return CheckOutcome(
        ROW_COUNT_PARITY,
        accounted and not left_out,
        description,
        {
            "old_rows": old_rows,
            "new_rows": new_rows,
            "rows_left_out": left_out,
            "difference": new_rows + left_out - old_rows,
        },
        severity=WARN if accounted else ERROR,
    )


def foreign_keys_remapped(
    old_conn: psycopg.Connection, new_conn: psycopg.Connection, spec: TableSpec
) -> CheckOutcome:
    problems: list[str] = []
    metadata: dict[str, int] = {}
    left_out = [row for _, row in left_out_rows(new_conn, spec)]
    for fk in spec.foreign_keys:
        count_refs = sql.SQL("SELECT count({}) FROM {}").format(
            sql.Identifier(fk.column), sql.Identifier(spec.name)
        )
        old_refs = old_conn.execute(count_refs).fetchone()[0]
        new_refs = new_conn.execute(count_refs).fetchone()[0]
        orphans = new_conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {child} c WHERE c.{col} IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = c.{col})"
            ).format(
                child=sql.Identifier(spec.name),
                col=sql.Identifier(fk.column),
                parent=sql.Identifier(fk.parent),
            )
        ).fetchone()[0]
        metadata[f"{fk.column}_old_refs"] = old_refs
        metadata[f"{fk.column}_new_refs"] = new_refs
        metadata[f"{fk.column}_orphans"] = orphans
        left_out_refs = sum(row.get(fk.column) is not None for row in left_out)
        if old_refs != new_refs + left_out_refs:
            problems.append(
                f"{fk.column}: {old_refs:,} references in the old table, {new_refs:,} in the new"
                + (f" and {left_out_refs:,} in rows left out" if left_out_refs else "")
            )
        if orphans:
            problems.append(f"{fk.column}: {orphans:,} rows point at no row of {fk.parent}")
    description = "; ".join(problems) or f"{spec.name}: every foreign key remapped"
    return CheckOutcome(FOREIGN_KEYS_REMAPPED, not problems, description, metadata)


def ids_match_seeds(new_conn: psycopg.Connection, spec: TableSpec) -> CheckOutcome:
    """Recompute every id from the new row's own columns.

    The server formats each seed (ids.py's SQL mirror of the seed) and Python runs uuid5. A row
    whose id is uuid5(seed) is settled at once; the rest (suffixed collisions, or wrong ids) are
    grouped by seed: a group of k rows must hold exactly the ids of seed, seed:2 … seed:k.
    """
    assert spec.seed_sql is not None
    seed = spec.seed_sql(*[sql.Identifier(c).as_string(new_conn) for c in spec.seed_columns])
    query = sql.SQL("COPY (SELECT id, {} FROM {}) TO STDOUT").format(sql.SQL(seed), sql.Identifier(spec.name))
    # The ids that are their seed's uuid5 (not the seeds: ids are a fifth of their size).
    base_ids: set[bytes] = set()
    others: dict[bytes, list[str]] = defaultdict(list)
    rows = 0
    with new_conn.cursor() as cur, cur.copy(query) as copy:
        for lines in copy_line_batches(copy, ID_CHECK_BATCH_ROWS):
            rows += len(lines)
            _sort_ids_by_seed(lines, base_ids, others)
    mismatched = 0
    suffixed = 0
    samples: list[str] = []
    for seed, held in others.items():
        size = len(held) + (1 if uuid5_bytes(seed) in base_ids else 0)
        expected = {str(i) for i in expected_ids_for_group(seed.decode(), size)}
        wrong = [i for i in held if i not in expected]
        suffixed += len(held) - len(wrong)
        mismatched += len(wrong)
        samples.extend(f"id {i} does not follow from its seed" for i in wrong[: max(0, 3 - len(samples))])
    description = (
        f"{spec.name}: all {rows:,} ids follow from their seeds ({suffixed} with collision suffixes)"
        if not mismatched
        else f"{spec.name}: {mismatched:,} of {rows:,} ids do not follow from their seeds; "
        + "; ".join(samples)
    )
    return CheckOutcome(
        IDS_MATCH_SEEDS,
        mismatched == 0,
        description,
        {"rows_checked": rows, "ids_with_collision_suffix": suffixed, "ids_not_matching_seed": mismatched},
    )


def _sort_ids_by_seed(lines: list[bytes], base_ids: set[bytes], others: dict[bytes, list[str]]) -> None:
    """COPY lines `id<TAB>seed`: ids equal to their seed's uuid5 into `base_ids`, the rest by seed.

    The batch's uuid5s are computed at once and compared as a whole; only a batch that differs
    somewhere (a collision suffix, or a wrong id) is compared row by row.
    """
    held = [line[:UUID_TEXT_WIDTH] for line in lines]
    seeds = copy_text_fields([line[UUID_TEXT_WIDTH + 1 :] for line in lines])
    expected = uuid5_batch(seeds)
    if held == expected:
        base_ids.update(held)
        return
    for row_id, seed, own_id in zip(held, seeds, expected, strict=True):
        if row_id == own_id:
            base_ids.add(row_id)
        else:
            others[seed].append(row_id.decode())


def _checksum_expression(column: ColumnType) -> sql.Composable:
    ident = sql.Identifier(column.name)
    if column.is_timestamp:
        # Epoch microseconds: equal for naive-UTC and timestamptz values whatever the TimeZone.
        text = sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint::text").format(ident)
    elif column.data_type == "bytea":
        text = sql.SQL("md5({})").format(ident)
    elif column.data_type == "json":
        text = sql.SQL("{}::jsonb::text").format(ident)
    else:
        text = sql.SQL("{}::text").format(ident)
    return sql.SQL("quote_nullable({})").format(text)


def table_checksum(
    conn: psycopg.Connection, spec: TableSpec, columns: tuple[str, ...], leave_out: Sequence[str] = ()
) -> tuple[int, str]:
    """(rows, order-independent checksum of `columns`) for one database's copy of a table; without
    the rows whose conflict key (comma-joined, as relational_rejects records it) is in `leave_out`."""
    types = column_types(conn, spec.name, columns)
    row_text = sql.SQL("concat_ws(',', {})").format(
        sql.SQL(", ").join(_checksum_expression(t) for t in types)
    )
    where = sql.SQL(" WHERE NOT {} = ANY(%s)").format(spec.row_key_sql("t")) if leave_out else sql.SQL("")
    rows, total = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(('x' || substr(md5({}), 1, 15))::bit(60)::bigint), 0) FROM {} AS t{}"
        ).format(row_text, sql.Identifier(spec.name), where),
        (list(leave_out),) if leave_out else None,
    ).fetchone()
    return rows, f"{int(total) % (1 << 64):016x}"


def content_checksum_matches(
    old_conn: psycopg.Connection, new_conn: psycopg.Connection, spec: TableSpec
) -> CheckOutcome:
    # The columns the copy wrote: a column the old table lacks keeps its default.
    copied = spec.columns_in(old_conn)
    columns = tuple(c for c in spec.content_columns if c in copied)
    left_out = [key for key, _ in left_out_rows(new_conn, spec)]  # they have no copy to compare
    old_rows, old_sum = table_checksum(old_conn, spec, columns, left_out)
    new_rows, new_sum = table_checksum(new_conn, spec, columns)
    passed = old_sum == new_sum and old_rows == new_rows
    return CheckOutcome(
        CONTENT_CHECKSUM_MATCHES,
        passed,
        f"{spec.name}: checksum of {', '.join(columns)} "
        + ("matches" if passed else f"differs (old {old_sum}, new {new_sum})"),
        {"old_checksum": old_sum, "new_checksum": new_sum},
    )
