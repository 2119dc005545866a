"""The catalog facts of a schema (tables, columns, constraints, indexes) as JSON-able sorted lists, to
compare a database with the schema the bot's own Prisma migrations make (bot_catalog.json).

Definitions come from PostgreSQL's own deparsers (format_type, pg_get_expr, pg_get_constraintdef,
pg_get_indexdef), so two databases compare equal exactly when the server sees the same objects. Columns
are sorted by name, not attnum: a column added by a later ALTER TABLE is the same column wherever it sits.
"""

from __future__ import annotations

from typing import Any

import psycopg

EXCLUDED_TABLES = ("_prisma_migrations",)

_TABLES = """
SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname <> ALL(%s)
"""
_COLUMNS = f"""
SELECT t.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text
FROM ({_TABLES}) t JOIN pg_attribute a ON a.attrelid = t.oid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
"""
_CONSTRAINTS = f"""
SELECT t.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid)
FROM ({_TABLES}) t JOIN pg_constraint k ON k.conrelid = t.oid
"""
_INDEXES = f"""
SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid)
FROM ({_TABLES}) t JOIN pg_index x ON x.indrelid = t.oid JOIN pg_class i ON i.oid = x.indexrelid
"""


def read_catalog(conn: psycopg.Connection, schema: str = "public") -> dict[str, list[Any]]:
    """`tables`, `columns`, `constraints` and `indexes` of `schema`, sorted by (table, name)."""
    params = (schema, list(EXCLUDED_TABLES))

    def rows(query: str) -> list[list[Any]]:
        return sorted((list(r) for r in conn.execute(query, params).fetchall()), key=lambda r: (r[0], r[1]))

    return {
        "tables": sorted(r[1] for r in conn.execute(_TABLES, params).fetchall()),
        "columns": rows(_COLUMNS),
        "constraints": rows(_CONSTRAINTS),
        "indexes": rows(_INDEXES),
    }


def catalog_differences(
    expected: dict[str, Any], actual: dict[str, Any], allow_added_indexes: bool = True
) -> list[str]:
    """Human-readable differences of `actual` from `expected` (both from read_catalog). Objects of a
    missing or extra table are reported as that table only; extra indexes are allowed by default."""
    want_tables, have_tables = set(expected["tables"]), set(actual["tables"])
    out = [f"missing table {t}" for t in sorted(want_tables - have_tables)]
    out += [f"extra table {t}" for t in sorted(have_tables - want_tables)]
    common = want_tables & have_tables
    for kind in ("columns", "constraints", "indexes"):
        noun = kind[:-1] if kind != "indexes" else "index"
        want = {(r[0], r[1]): r[2:] for r in expected[kind] if r[0] in common}
        have = {(r[0], r[1]): r[2:] for r in actual[kind] if r[0] in common}
        for key in sorted(want.keys() | have.keys()):
            name = f"{key[0]}.{key[1]}"
            if key not in have:
                out.append(f"missing {noun} {name}: {want[key]}")
            elif key not in want:
                if not (kind == "indexes" and allow_added_indexes):
                    out.append(f"extra {noun} {name}: {have[key]}")
            elif want[key] != have[key]:
                out.append(f"different {noun} {name}: expected {want[key]}, got {have[key]}")
    return out


def prisma_migrations(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(migration_name, checksum) of the finished, not rolled back rows of public._prisma_migrations,
    by name; empty when the table does not exist."""
    if conn.execute("SELECT to_regclass('public._prisma_migrations')").fetchone()[0] is None:
        return []
    return conn.execute(
        "SELECT migration_name, checksum FROM public._prisma_migrations"
        " WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name"
    ).fetchall()
