"""The bot's memory search and its one-memory write, for the CLI, the checks and the bot's services.

A search runs the bot's own statement (`bot_query.py`), so it returns the bot's rows in the bot's
order under the bot's names: a persona is required, a personality optional; memories at or after
`exclude_newer_than` are left out; distance below 1 − `min_similarity`; nearest first, `limit`
rows (`BotMemory.readable_content` replaces `{user}` and `{assistant}` as the bot does).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.ids import memory_id
from tinybot_migration.lib.memories.bot_query import (
    DEFAULT_LIMIT,
    DEFAULT_MIN_SIMILARITY,
    BotMemory,
    bot_memory_query,
)
from tinybot_migration.lib.memories.writer import SOURCE_BOT, NewMemory, embed_and_write
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS, bot_timestamp


@dataclass(frozen=True)
class SearchResult:
    memories: list[BotMemory]
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
        bot_query = bot_memory_query(
            vector, persona_id, personality_id, exclude_newer_than, limit, min_similarity
        )
        with self.pool.connection() as conn:
            started = time.perf_counter()
            rows = bot_query.run(conn)
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
