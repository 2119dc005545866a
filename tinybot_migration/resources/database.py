"""What both database resources share: URL resolution (embedded default) and opening
connections without ever leaking a password into an error."""

from __future__ import annotations

import psycopg
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from tinybot_migration.passwords import redact_url, scrub, unencoded_password_problem


class DatabaseConnectionError(RuntimeError):
    pass


def open_connection(url: str, role: str, **kwargs) -> psycopg.Connection:
    problem = unencoded_password_problem(url)
    if problem is not None:
        raise DatabaseConnectionError(f"cannot use the {role} URL {redact_url(url)}: {problem}")
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.Error as exc:
        raise DatabaseConnectionError(
            f"cannot connect to the {role} at {redact_url(url)}: {scrub(str(exc), url).strip()}"
        ) from None


def open_read_only(url: str, role: str) -> psycopg.Connection:
    """An autocommit connection the server itself refuses writes on."""
    conn = open_connection(url, role, autocommit=True, options="-c default_transaction_read_only=on")
    conn.read_only = True
    return conn


class PostgresDatabaseResource(ConfigurableResource):
    """A PostgreSQL database given by `url`, or a database on the embedded server when unset.

    The URL is resolved (and the embedded server started) on first use, never at import.
    """

    url: str | None = Field(default=None, description="PostgreSQL URL; unset means the embedded server")
    embedded_database: str = Field(description="database on the embedded server used when url is unset")

    _resolved_url: str | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        if self._resolved_url is None:
            if self.url:
                self._resolved_url = self.url
            else:
                from tinybot_migration.runtime.embedded_postgres import embedded_database_url

                self._resolved_url = embedded_database_url(self.embedded_database)
        return self._resolved_url

    def display_url(self) -> str:
        """The URL with its password masked: the only form that may reach logs or metadata."""
        return redact_url(self.resolved_url())
