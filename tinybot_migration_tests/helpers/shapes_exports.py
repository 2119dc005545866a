"""Crafted shapes.inc exports for the import tests: folders, records and mappings written by hand,
plus the users, personas and personalities of a new database they refer to."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tinybot_migration.lib.ids import deterministic_uuid, persona_seed, personality_seed, user_seed

T0 = datetime(2024, 3, 1, 12, 0)  # naive UTC, as the bot's timestamp(3)
SENDERS = [str(uuid.UUID(int=0xA0 + i, version=4)) for i in range(8)]


def record(
    senders: list[str],
    result: str,
    *,
    seconds: float = 0.0,
    deleted: bool = False,
    channel: str = "111111111111111111",
    guild: str = "",
    summary_type: str = "automatic",
    msg_ids: list[str] | None = None,
    record_id: str | None = None,
) -> dict:
    """One export record in the shape docs/design.md §4 gives."""
    created = T0.replace(tzinfo=UTC).timestamp() + seconds
    msg_ids = msg_ids if msg_ids is not None else ["900000000000000001", "900000000000000002"]
    return {
        "id": record_id or f"{msg_ids[0]}/{msg_ids[-1]}",
        "shape_id": "5a0e0000-0000-4000-8000-000000000000",
        "senders": list(senders),
        "result": result,
        "summary_type": summary_type,
        "deleted": deleted,
        "metadata": {
            "discord_channel_id": channel,
            "discord_guild_id": guild,
            "group": len(senders) > 1,
            "senders": list(senders),
            "msg_ids": msg_ids,
            "start_ts": created - 60,
            "end_ts": created - 30,
            "created_at": created,
        },
    }


class ShapesExport:
    """An export folder under `folder`, and the rows of `conn` (a new DB) its mappings point at."""

    def __init__(self, folder: Path, conn: psycopg.Connection) -> None:
        self.folder = folder
        self.conn = conn
        self.mappings: dict[str, dict[str, str]] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def person(self, discord_id: str, name: str = "Me", default_persona: bool = True) -> uuid.UUID:
        """A user with one persona (its default unless told otherwise); returns the persona id."""
        user_id = deterministic_uuid(user_seed(discord_id))
        persona_id = deterministic_uuid(persona_seed(user_id, name))
        self.conn.execute(
            "INSERT INTO users VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (user_id, discord_id, f"user {discord_id}", T0, T0),
        )
        self.conn.execute(
            "INSERT INTO personas (id, name, content, owner_id, created_at, updated_at)"
            " VALUES (%s, %s, 'about me', %s, %s, %s) ON CONFLICT DO NOTHING",
            (persona_id, name, user_id, T0, T0),
        )
        if default_persona:
            self.conn.execute(
                "INSERT INTO user_default_personas VALUES (%s, %s, %s)"
                " ON CONFLICT (user_id) DO UPDATE SET persona_id = EXCLUDED.persona_id",
                (user_id, persona_id, T0),
            )
        return persona_id

    def personality(self, slug: str) -> uuid.UUID:
        personality_id = deterministic_uuid(personality_seed(slug))
        self.conn.execute(
            "INSERT INTO personalities (id, name, slug, character_info, personality_traits, created_at,"
            " updated_at) VALUES (%s, %s, %s, 'x', 'y', %s, %s) ON CONFLICT DO NOTHING",
            (personality_id, slug.title(), slug, T0, T0),
        )
        return personality_id

    def map(self, sender: str, discord_id: str, note: str = "matched by discord id") -> None:
        self.mappings[sender] = {"discordId": discord_id, "note": note}
        self.write_mappings()

    def write_mappings(self) -> None:
        (self.folder / "uuid-mappings.json").write_text(json.dumps({"mappings": self.mappings}, indent=2))

    def write(self, slug: str, records: list) -> Path:
        """`<slug>/<slug>_memories.json` holding `records` (the personality is created too)."""
        self.personality(slug)
        return self.write_text(slug, json.dumps(records, ensure_ascii=False, indent=2))

    def write_text(self, slug: str, text: str) -> Path:
        path = self.folder / slug / f"{slug}_memories.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path
