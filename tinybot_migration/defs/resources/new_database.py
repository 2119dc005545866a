"""The new database (PostgreSQL + pgvector), whose schema the pipeline applies itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from pydantic import Field, PrivateAttr

from tinybot_migration.defs.resources.database import PostgresDatabaseResource
from tinybot_migration.lib.database import open_connection
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration.lib.settings import NEW_DATABASE_NAME


class NewDatabaseResource(PostgresDatabaseResource):
    """Connections to the new database (env `DATABASE_URL`; embedded `tinybot_new` when unset).

    The schema is applied idempotently before the first connection is handed out.
    """

    embedded_database: str = Field(default=NEW_DATABASE_NAME)

    _schema_version: int | None = PrivateAttr(default=None)

    def ensure_schema(self) -> int:
        if self._schema_version is None:
            with open_connection(self.resolved_url(), "new database") as conn:
                self._schema_version = apply_new_schema(conn)
        return self._schema_version

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        self.ensure_schema()
        # Autocommit: every write happens inside an explicit `conn.transaction()` block.
        conn = open_connection(self.resolved_url(), "new database", autocommit=True)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def connect_read_only(self) -> Iterator[psycopg.Connection]:
        """A connection that cannot write, without applying the schema first (for dry runs: a
        fresh database stays untouched; `new_database_schema.has_new_schema` tells whether it has tables yet)."""
        conn = open_connection(
            self.resolved_url(),
            "new database",
            autocommit=True,
            options="-c default_transaction_read_only=on",
        )
        conn.read_only = True
        try:
            yield conn
        finally:
            conn.close()
