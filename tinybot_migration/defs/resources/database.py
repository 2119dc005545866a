"""What both database resources share: the URL (the embedded server's when unset), resolved on first
use, and shown only masked."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from tinybot_migration.lib.database import database_url
from tinybot_migration.lib.passwords import redact_url


class PostgresDatabaseResource(ConfigurableResource):
    """A PostgreSQL database given by `url`, or a database on the embedded server when unset.

    The URL is resolved (and the embedded server started) on first use, never at import.
    """

    url: str | None = Field(default=None, description="PostgreSQL URL; unset means the embedded server")
    embedded_database: str = Field(description="database on the embedded server used when url is unset")

    _resolved_url: str | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        if self._resolved_url is None:
            self._resolved_url = database_url(self.url, self.embedded_database)
        return self._resolved_url

    def display_url(self) -> str:
        """The URL with its password masked: the only form that may reach logs or metadata."""
        return redact_url(self.resolved_url())
