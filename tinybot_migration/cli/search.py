"""`tinybot-migration search`: the bot's memory search from the command line."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import click
import psycopg
from rich.table import Table

from tinybot_migration.cli.summary import console
from tinybot_migration.lib.settings import NEW_DATABASE

CONTENT_CHARS = 90
_DISCORD_ID = re.compile(r"[0-9]{1,20}")


class Timestamp(click.ParamType):
    """An ISO 8601 time; UTC when it gives no zone."""

    name = "time"

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2025-06-01T12:00)", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("search", help="search a persona's memories as the bot does (DATABASE_URL)")
@click.argument("text")
@click.option("--persona", required=True, help="a persona id, or a discord id (its default persona)")
@click.option("--personality", default=None, help="only this personality (its slug)")
@click.option("--limit", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--min-similarity", type=float, default=0.15, show_default=True)
@click.option(
    "--before",
    type=Timestamp(),
    default=None,
    help="leave out memories newer than this (ISO 8601; UTC if no zone)",
)
def search_command(
    text: str,
    persona: str,
    personality: str | None,
    limit: int,
    min_similarity: float,
    before: datetime | None,
) -> int:
    from tinybot_migration.defs.resources import NewDatabaseResource
    from tinybot_migration.lib.embeddings.client import EmbeddingClient
    from tinybot_migration.lib.memories.search import MemorySearch

    database = NewDatabaseResource(url=NEW_DATABASE.configured_url())
    with database.connect() as conn:
        persona_id = resolve_persona(conn, persona)
        personality_id = resolve_personality(conn, personality) if personality else None
    with MemorySearch(
        database.resolved_url(), EmbeddingClient.from_environment(), max_connections=1
    ) as search:
        vector = search.embed(text)
        query = (vector, persona_id, personality_id, limit, min_similarity, before)
        first = search.search_memories(*query)
        # A new connection's first query loads the catalogue and plans; the bot's pooled
        # connections pay that once, so the figure that matters is the second.
        result = search.search_memories(*query)
    table = Table(title=f"memories of persona {persona_id} nearest to {text!r}")
    for column in ("rank", "score", "personality", "created_at", "content"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, memory in enumerate(result.memories, 1):
        content = " ".join(memory.readable_content().split())
        table.add_row(
            str(rank),
            f"{memory.score:.3f}",
            memory.personality_name,
            memory.created_at.strftime("%Y-%m-%d %H:%M"),  # naive UTC
            content if len(content) <= CONTENT_CHARS else content[: CONTENT_CHARS - 1] + "…",
        )
    console.print(table)
    console.print(
        f"{len(result.memories)} memories in {result.seconds * 1000:.1f} ms (the query in the database, "
        f"on a warm connection; {first.seconds * 1000:.1f} ms as a new connection's first query)"
    )
    return 0


def resolve_persona(conn: psycopg.Connection, given: str) -> uuid.UUID:
    """A persona id as given, or the default persona of the user with that discord id."""
    try:
        persona_id = uuid.UUID(given)
    except ValueError:
        if not _DISCORD_ID.fullmatch(given):
            raise SystemExit(f"--persona {given!r} is neither a persona id (UUID) nor a discord id") from None
        row = conn.execute(
            "SELECT d.persona_id FROM users u LEFT JOIN user_default_personas d ON d.user_id = u.id"
            " WHERE u.discord_id = %s",
            (given,),
        ).fetchone()
        if row is None:
            raise SystemExit(f"no user has the discord id {given}") from None
        if row[0] is None:
            raise SystemExit(
                f"the user with discord id {given} has no default persona: pass a persona id"
            ) from None
        return row[0]
    if conn.execute("SELECT 1 FROM personas WHERE id = %s", (persona_id,)).fetchone() is None:
        raise SystemExit(f"no persona has the id {persona_id}")
    return persona_id


def resolve_personality(conn: psycopg.Connection, slug: str) -> uuid.UUID:
    row = conn.execute("SELECT id FROM personalities WHERE slug = %s", (slug,)).fetchone()
    if row is None:
        raise SystemExit(f"no personality has the slug {slug!r}")
    return row[0]
