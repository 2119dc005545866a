"""What the sync needs to know of each table, derived from schema.py's descriptions.

Every table of the new DB but the schema's own bookkeeping, in foreign-key order, plus the
embedding cache (so that a target never pays again for a text the source already embedded), the
rejects and the rebuild's coverage marks (so the target shows what was rejected, and its sensor
starts where the source's left off). Not the bot's `pending_memories` (the bot's own queue after
cutover) nor the pending-memory outcomes that describe it. Rows match by primary key: deterministic ids give the same logical row
the same key on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from psycopg import sql

from tinybot_migration.lib import schema

UPDATED_AT = "updated_at"
VERSION_COLUMNS = (UPDATED_AT, "rejected_at")


@dataclass(frozen=True)
class SyncTable:
    table: schema.Table

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def identifier(self) -> sql.Identifier:
        """The table qualified by its schema: the bot's in public, the embedding cache in ours."""
        return sql.Identifier(self.table.schema, self.table.name)

    @property
    def key(self) -> tuple[str, ...]:
        return self.table.primary_key

    @property
    def columns(self) -> tuple[str, ...]:
        return self.table.column_names

    @property
    def version_column(self) -> str | None:
        """The column saying when a row last changed (`updated_at`, or a reject's `rejected_at`)."""
        return next((c for c in VERSION_COLUMNS if c in self.table.column_names), None)

    @property
    def versioned(self) -> bool:
        """Rows carry a version column: the newer side wins. Otherwise the table is append-only: a
        row's content never changes, so two different contents under one key are a conflict."""
        return self.version_column is not None

    @property
    def natural_keys(self) -> tuple[tuple[str, ...], ...]:
        """Unique keys besides the primary key (discord id, slug, …)."""
        return self.table.unique

    @property
    def foreign_keys(self) -> tuple[tuple[str, str], ...]:
        return self.table.foreign_keys

    def typed_array(self, column: str) -> sql.Composable:
        """A placeholder for an array of this column's values, cast to its type (psycopg sends
        strings untyped, which `unnest` cannot resolve)."""
        [kind] = [c.type for c in self.table.columns if c.name == column]
        return sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(kind))

    @cached_property
    def vector_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.table.columns if c.type.startswith("vector"))

    def row_hash(self) -> sql.Composable:
        """An md5 of the row's copied columns, the same on both sides for the same content. Vectors
        are hashed from their binary form: formatting 1,536 floats as text would cost more than the
        rest of the sync."""
        plain = [c for c in self.columns if c not in self.vector_columns]
        parts = [sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(map(sql.Identifier, plain)))]
        parts += [
            sql.SQL("coalesce(md5(vector_send({})), 'null')").format(sql.Identifier(c))
            for c in self.vector_columns
        ]
        return sql.SQL("md5({})").format(sql.SQL(" || ").join(parts))


SYNC_TABLES: tuple[SyncTable, ...] = tuple(
    SyncTable(table)
    for table in (
        *schema.RELATIONAL_TABLES,
        schema.MEMORIES,
        schema.SHAPES_PERSONA_MAPPINGS,
        schema.EMBEDDING_CACHE,
        # What the migration rejected and how far the rebuild has covered: the target shows them too.
        schema.SHAPES_REJECTS,
        schema.RELATIONAL_REJECTS,
        schema.MEMORY_COVERAGE,
    )
)
SYNC_TABLES_BY_NAME = {t.name: t for t in SYNC_TABLES}
