"""The bot's memory search and its one-memory write, for the CLI, the checks and the bot's services.

The query lives once, as the SQL function `search_memories` installed with the new DB's schema
(`lib/memories/search_sql.py`),
so the bot's TypeScript services get exactly these rows with one `SELECT`; Python binds every value
as a parameter. A persona is required, a personality optional; memories newer than
`exclude_newer_than` are left out; score = 1 − cosine distance, at least `min_similarity`; best
first, `limit` rows; `{user}` and `{assistant}` in the text are replaced by the persona's and the
personality's names.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pgvector.psycopg import register_vector
from psycopg.rows import args_row
from psycopg_pool import ConnectionPool

from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.ids import memory_id
from tinybot_migration.lib.memories.search_sql import DEFAULT_LIMIT, DEFAULT_MIN_SIMILARITY
from tinybot_migration.lib.memories.writer import SOURCE_BOT, NewMemory, embed_and_write
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS, bot_timestamp


@dataclass(frozen=True)
class FoundMemory:
    id: uuid.UUID
    content: str  # with {user} and {assistant} replaced by the names
    score: float  # 1 - cosine distance
    created_at: datetime
    persona_id: uuid.UUID
    persona_name: str
    personality_id: uuid.UUID
    personality_name: str
    personality_slug: str
    source_system: str


@dataclass(frozen=True)
class SearchResult:
    memories: list[FoundMemory]
    seconds: float  # the query in the database, embedding the text not included


class MemorySearch:
    """Search and add memories through a connection pool, safe to share between threads."""

    def __init__(self, url: str, provider: EmbeddingClient, max_connections: int = 4) -> None:
        self.provider = provider
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},
            configure=register_vector,
            open=True,
        )

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> MemorySearch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def search_memories(
        self,
        query: str | Sequence[float] | np.ndarray,
        persona_id: uuid.UUID,
        personality_id: uuid.UUID | None = None,
        limit: int = DEFAULT_LIMIT,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
        exclude_newer_than: datetime | None = None,
    ) -> SearchResult:
        """Memories of `persona_id` nearest to `query` (a text, embedded here, or a vector)."""
        vector = self.embed(query)
        with self.pool.connection() as conn:
            started = time.perf_counter()
            with conn.cursor(row_factory=args_row(FoundMemory)) as cur:
                rows = cur.execute(
                    "SELECT * FROM tinybot_migration.search_memories(%s, %s, %s, %s, %s, %s)",
                    (vector, persona_id, personality_id, limit, min_similarity, exclude_newer_than),
                ).fetchall()
            return SearchResult(rows, time.perf_counter() - started)

    def add_memory(
        self,
        persona_id: uuid.UUID,
        personality_id: uuid.UUID,
        content: str,
        metadata: dict | None = None,
    ) -> uuid.UUID:
        """Write one memory in the bot's live format with its deterministic id, through the shared
        writer (embedded through the cache); writing it again changes nothing. `metadata` may set
        created_at, channel_id, guild_id, message_ids, canon_scope, summary_type and session_id."""
        extra = dict(metadata or {})
        unknown = set(extra) - _ADDABLE
        if unknown:
            raise ValueError(
                f"add_memory does not take {', '.join(sorted(unknown))}; it takes {', '.join(sorted(_ADDABLE))}"
            )
        memory = NewMemory(
            id=memory_id(persona_id, personality_id, content),
            persona_id=persona_id,
            personality_id=personality_id,
            content=content,
            is_summarized=False,
            created_at=bot_timestamp(extra.pop("created_at", None)),
            source_system=SOURCE_BOT,
            canon_scope=extra.pop("canon_scope", "personal"),
            summary_type=extra.pop("summary_type", "conversation"),
            **extra,
        )
        with self.pool.connection() as conn:
            for _ in embed_and_write(conn, None, self.provider, [memory]):
                pass
        return memory.id

    def embed(self, query: str | Sequence[float] | np.ndarray) -> np.ndarray:
        """The query's vector: a text embedded with the provider, or a vector checked for length."""
        if isinstance(query, str):
            return self.provider.embed([query]).vectors[0]
        vector = np.asarray(query, dtype=np.float32)
        if vector.shape != (EMBEDDING_DIMENSIONS,):
            raise ValueError(
                f"a query vector must have {EMBEDDING_DIMENSIONS} dimensions, not {vector.shape}"
            )
        return vector


_ADDABLE = {
    "created_at",
    "channel_id",
    "guild_id",
    "message_ids",
    "canon_scope",
    "summary_type",
    "session_id",
}
