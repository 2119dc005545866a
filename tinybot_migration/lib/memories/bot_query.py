"""The bot's memory query as the bot runs it after cutover (BOT_SCHEMA.md, "The bot's memory
query": `PgvectorMemoryAdapter.queryMemories` at the schema version the migration targets).

This is the one statement the project's search, its checks and its benchmark run, so what they
measure is what production runs. Its shape is the bot's: the query vector spliced into the text
as a literal (twice), everything else a bound parameter; `persona_id` always, `personality_id`
and `created_at < cutoff::timestamptz` only when given; `embedding <=> q < 1 - min_similarity`;
`ORDER BY distance ASC LIMIT k`; the persona's `name` and `coalesce(display_name, name)` of the
personality.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.rows import class_row

DEFAULT_LIMIT = 15  # the llm config's memory_limit when it has none
DEFAULT_MIN_SIMILARITY = 0.15  # its memory_score_threshold when it has none
PERSONA_INDEX = "memories_persona_id_idx"  # the bot's B-tree on memories.persona_id

_SELECT = """
            SELECT
              m.id,
              m.persona_id,
              m.personality_id,
              m.content,
              m.embedding <=> '{vector}'::vector AS distance,
              m.session_id,
              m.canon_scope,
              m.summary_type,
              m.channel_id,
              m.guild_id,
              m.message_ids,
              m.senders,
              m.created_at,
              persona.name as persona_name,
              COALESCE(personality.display_name, personality.name) as personality_name
            FROM memories m
            JOIN personas persona ON m.persona_id = persona.id
            JOIN personalities personality ON m.personality_id = personality.id
            WHERE """
_PERSONA = "m.persona_id = %(persona)s::uuid"
_PERSONALITY = "m.personality_id = %(personality)s::uuid"
_CUTOFF = "m.created_at < %(cutoff)s::timestamptz"
_NEAREST = """
              AND m.embedding <=> '{vector}'::vector < %(max_distance)s
            ORDER BY distance ASC
            LIMIT %(limit)s
          """


@dataclass(frozen=True)
class BotMemory:
    """One row of the bot's memory query, under the names it selects them as."""

    id: uuid.UUID
    persona_id: uuid.UUID
    personality_id: uuid.UUID
    content: str
    distance: float
    session_id: str | None
    canon_scope: str | None
    summary_type: str | None
    channel_id: str | None
    guild_id: str | None
    message_ids: list[str] | None
    senders: list[str] | None
    created_at: datetime
    persona_name: str
    personality_name: str

    @property
    def score(self) -> float:
        """What the bot calls the memory's score: 1 - distance."""
        return 1 - self.distance

    def readable_content(self) -> str:
        """The text as the bot shows it: `{user}` and `{assistant}` replaced by the names."""
        return self.content.replace("{user}", self.persona_name).replace("{assistant}", self.personality_name)


def vector_literal(vector: Sequence[float]) -> str:
    """`[x,y,…]` as the bot writes it (`queryEmbedding.join(',')`: each number in its shortest
    round-trip form)."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def bot_memory_statement(vector: Sequence[float], *, personality: bool, cutoff: bool) -> str:
    """The statement's text for one query vector, with the filters the bot adds when given."""
    conditions = [_PERSONA] + [_PERSONALITY] * personality + [_CUTOFF] * cutoff
    literal = vector_literal(vector)
    return (_SELECT + " AND ".join(conditions) + _NEAREST).replace("{vector}", literal)


def bot_memory_parameters(
    persona: uuid.UUID,
    personality: uuid.UUID | None = None,
    cutoff: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> dict:
    """The bound parameters, as the bot passes them (the cutoff as `toISOString()` would write a
    naive UTC or aware time)."""
    params: dict = {"persona": str(persona), "max_distance": 1 - min_similarity, "limit": limit}
    if personality is not None:
        params["personality"] = str(personality)
    if cutoff is not None:
        aware = cutoff if cutoff.tzinfo is not None else cutoff.replace(tzinfo=UTC)
        params["cutoff"] = aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return params


@dataclass(frozen=True)
class BotMemoryQuery:
    """One query as the bot sends it: the statement's text and its bound parameters."""

    statement: str
    params: dict

    def run(self, conn: psycopg.Connection) -> list[BotMemory]:
        with conn.cursor(row_factory=class_row(BotMemory)) as cur:
            return cur.execute(self.statement, self.params).fetchall()

    def explain(self, conn: psycopg.Connection) -> str:
        """The plan PostgreSQL chooses for it (EXPLAIN, text)."""
        return "\n".join(row[0] for row in conn.execute("EXPLAIN " + self.statement, self.params).fetchall())


def bot_memory_query(
    vector: Sequence[float],
    persona: uuid.UUID,
    personality: uuid.UUID | None = None,
    cutoff: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> BotMemoryQuery:
    """The bot's memory query for the persona's (and personality's) memories older than `cutoff`
    whose similarity to `vector` is above `min_similarity`, nearest first, at most `limit`."""
    return BotMemoryQuery(
        bot_memory_statement(vector, personality=personality is not None, cutoff=cutoff is not None),
        bot_memory_parameters(persona, personality, cutoff, limit, min_similarity),
    )
