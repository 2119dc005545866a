"""The Qdrant store the migration replaces, as a Dagster resource: where it is (the key from the
environment, never shown) over the core's `lib.qdrant.source`. Unconfigured (neither a URL nor a
path) is a state, not an error: the Qdrant assets then say so and everything else runs as before."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from dagster import ConfigurableResource
from pydantic import Field
from qdrant_client import QdrantClient

from tinybot_migration.lib.progress import Progress
from tinybot_migration.lib.qdrant.source import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT_SECONDS,
    QdrantLocation,
    opened_store,
)
from tinybot_migration.lib.settings import (
    DEFAULT_QDRANT_EMBEDDING_MODEL,
    DEMO_QDRANT_EMBEDDING_MODEL,
    QDRANT_EMBEDDING_MODEL,
)


class QdrantStoreResource(ConfigurableResource):
    """QDRANT_URL (+ QDRANT_API_KEY) for a server or Qdrant Cloud, or QDRANT_PATH for a local-mode
    store folder; read only."""

    url: str | None = Field(default=None, description="env QDRANT_URL: a Qdrant server or Qdrant Cloud")
    api_key: str | None = Field(default=None, description="env QDRANT_API_KEY")
    path: str | None = Field(default=None, description="env QDRANT_PATH: a local-mode store folder")
    timeout_seconds: int = Field(
        default=DEFAULT_TIMEOUT_SECONDS, description="the longest one request may take"
    )
    page_size: int = Field(
        default=DEFAULT_PAGE_SIZE, description="points per scroll page (halved on a timeout, down to a floor)"
    )
    embedding_model: str = Field(
        default=DEFAULT_QDRANT_EMBEDDING_MODEL,
        description=f"env {QDRANT_EMBEDDING_MODEL}: the model the store's vectors were made with (no payload "
        "names it); they are reused only when it is the model embedding now",
    )

    def location(self) -> QdrantLocation | None:
        """Where the store is: as configured (both set is an error); unset, the demo's store when
        `tinybot-migration demo` wrote one; else None."""
        if not self.url and not self.path:
            return QdrantLocation.demo()
        return QdrantLocation(self.url, self.api_key, self.path, self.timeout_seconds)

    def declared_model(self) -> str:
        """The model the store's vectors were made with: the demo store's is the offline embedder's."""
        location = self.location()
        if (
            location is not None
            and location.is_demo
            and self.embedding_model == DEFAULT_QDRANT_EMBEDDING_MODEL
        ):
            return DEMO_QDRANT_EMBEDDING_MODEL
        return self.embedding_model

    @contextmanager
    def open(
        self, log: Progress | None = None, conn: psycopg.Connection | None = None
    ) -> Iterator[QdrantClient | None]:
        """A client on the store for the block (closed after; runs sharing the new DB `conn` take
        turns on a local store), or None when no Qdrant is configured."""
        location = self.location()
        if location is None:
            yield None
            return
        with opened_store(location, conn, log) as client:
            yield client
