"""Crafted conversation histories written straight into a new database, for the memory tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import psycopg

from tinybot_migration.lib.ids import deterministic_uuid, persona_seed, personality_seed, user_seed

T0 = datetime(2025, 3, 1, 12, 0)  # naive UTC, as the bot's timestamp(3)


class Conversations:
    """One user with one persona, any number of personalities, messages added one by one."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.user_id = deterministic_uuid(user_seed("100"))
        self.persona_id = deterministic_uuid(persona_seed(self.user_id, "Me"))
        conn.execute(
            "INSERT INTO users VALUES (%s, '100', 'someone', %s, %s) ON CONFLICT DO NOTHING",
            (self.user_id, T0, T0),
        )
        conn.execute(
            "INSERT INTO personas (id, name, content, owner_id, created_at, updated_at)"
            " VALUES (%s, 'Me', 'me', %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.persona_id, self.user_id, T0, T0),
        )
        self.personalities: dict[str, uuid.UUID] = {}

    def personality(self, slug: str) -> uuid.UUID:
        if slug not in self.personalities:
            personality_id = deterministic_uuid(personality_seed(slug))
            self.conn.execute(
                "INSERT INTO personalities (id, name, slug, character_info, personality_traits,"
                " created_at, updated_at) VALUES (%s, %s, %s, 'x', 'y', %s, %s) ON CONFLICT DO NOTHING",
                (personality_id, slug.title(), slug, T0, T0),
            )
            self.personalities[slug] = personality_id
        return self.personalities[slug]

    def say(
        self,
        slug: str,
        role: str,
        content: str,
        seconds: float,
        channel: str = "1000",
        guild: str | None = "2000",
        message_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        message_id = message_id or uuid.uuid4()
        self.conn.execute(
            "INSERT INTO conversation_history VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                message_id,
                channel,
                guild,
                self.personality(slug),
                self.persona_id,
                role,
                content,
                T0 + timedelta(seconds=seconds),
            ),
        )
        return message_id

    def exchanges(self, slug: str, count: int, start: float = 0.0, channel: str = "1000") -> None:
        for i in range(count):
            at = start + i * 10
            self.say(slug, "user", f"{slug} question {i} about gardens", at, channel)
            self.say(slug, "assistant", f"{slug} answer {i} about roses", at + 1, channel)
