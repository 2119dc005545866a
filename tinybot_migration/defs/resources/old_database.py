"""The old bot database: read-only to this project, always."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from pydantic import Field

from tinybot_migration.defs.resources.database import PostgresDatabaseResource
from tinybot_migration.lib.database import open_read_only
from tinybot_migration.lib.settings import OLD_DATABASE_NAME


class OldDatabaseResource(PostgresDatabaseResource):
    """Connections to the old database (env `OLD_DATABASE_URL`; embedded `tinybot_old` when unset).

    Every connection is opened with `default_transaction_read_only=on` and marked read-only, so
    the server itself rejects any write, whatever code runs on it.
    """

    embedded_database: str = Field(default=OLD_DATABASE_NAME)

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        conn = open_read_only(self.resolved_url(), "old database")
        # A multi-statement read (id maps, then rows) sees one consistent snapshot.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            yield conn
        finally:
            conn.close()
