"""Conversation history → exchanges → memory texts (docs/design.md §4), in one place.

A context is (channel, personality, persona). Its messages are taken in created_at order, a user
message before an assistant message at the same instant, then by id. Each run of consecutive user
messages is joined with a newline and paired with the next assistant message, so nothing is
dropped. An assistant message with no user message before it (the bot spoke first, or twice) makes
no exchange; a trailing run of user messages waits for its answer. Empty or whitespace-only
messages are left out (the embeddings API refuses empty input) and counted.

The rebuild and its checks pair through `pair_context`, so what is embedded and what is checked
are the same thing. The incremental sensor and the pending-memory accounting ask the database
instead, through the same rule written once in SQL (`is_answer`), so a tick never loads the
history into Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from tinybot_migration.lib.ids import memory_id
from tinybot_migration.lib.schema import MEMORY_ANSWER_ID

USER_TOKEN = "{user}"
ASSISTANT_TOKEN = "{assistant}"


@dataclass(frozen=True)
class Message:
    id: uuid.UUID
    channel_id: str
    guild_id: str | None
    personality_id: uuid.UUID
    persona_id: uuid.UUID
    role: str
    content: str
    created_at: datetime

    @property
    def context(self) -> tuple[str, uuid.UUID, uuid.UUID]:
        return (self.channel_id, self.personality_id, self.persona_id)


@dataclass(frozen=True)
class Exchange:
    user_messages: tuple[Message, ...]
    answer: Message

    # Cached: the rebuild, its checks and the COPY all ask (a frozen dataclass still has a __dict__).
    @cached_property
    def content(self) -> str:
        return memory_content([m.content for m in self.user_messages], self.answer.content)

    @cached_property
    def memory_id(self) -> uuid.UUID:
        return memory_id(self.answer.persona_id, self.answer.personality_id, self.content)

    @property
    def message_ids(self) -> list[str]:
        return [str(m.id) for m in (*self.user_messages, self.answer)]


@dataclass
class PairingStats:
    contexts: int = 0
    messages: int = 0
    exchanges: int = 0
    empty_messages_skipped: int = 0
    unanswered_user_messages: int = 0  # trailing user messages still waiting for their answer
    assistant_messages_without_user: int = 0
    other_roles_skipped: int = 0  # 'system' messages are not part of any exchange

    def add(self, other: PairingStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Pairing:
    exchanges: list[Exchange] = field(default_factory=list)
    stats: PairingStats = field(default_factory=PairingStats)


def memory_content(user_texts: list[str], assistant_text: str) -> str:
    """The bot's live memory format; the bot swaps the tokens for names when it reads a memory."""
    return f"{USER_TOKEN}: {chr(10).join(user_texts)}\n{ASSISTANT_TOKEN}: {assistant_text}"


def _sort_key(message: Message) -> tuple:
    return (message.created_at, message.role == "assistant", message.id)


def pair_context(messages: Iterable[Message], stats: PairingStats | None = None) -> list[Exchange]:
    """The exchanges of one context's messages (sorted here, so any order is accepted)."""
    stats = stats if stats is not None else PairingStats()
    exchanges: list[Exchange] = []
    waiting: list[Message] = []
    for message in sorted(messages, key=_sort_key):
        stats.messages += 1
        if message.role not in ("user", "assistant"):
            stats.other_roles_skipped += 1
        elif not message.content.strip():
            stats.empty_messages_skipped += 1
        elif message.role == "user":
            waiting.append(message)
        elif waiting:
            exchanges.append(Exchange(tuple(waiting), message))
            waiting = []
        else:
            stats.assistant_messages_without_user += 1
    stats.unanswered_user_messages += len(waiting)
    stats.exchanges += len(exchanges)
    return exchanges


def pair_messages(messages: Iterable[Message]) -> Pairing:
    """Exchanges of every context in `messages`, contexts in first-seen order."""
    pairing = Pairing()
    for context_messages in _by_context(messages):
        pairing.stats.contexts += 1
        pairing.exchanges += pair_context(context_messages, pairing.stats)
    return pairing


def _by_context(messages: Iterable[Message]) -> Iterator[list[Message]]:
    groups: dict[tuple, list[Message]] = {}
    for message in messages:
        groups.setdefault(message.context, []).append(message)
    yield from groups.values()


# The pairing rule in SQL, written once: message `h` answers when it is a non-empty assistant
# message whose previous non-empty user or assistant message in its context, in pair_context's
# order (created_at, a user message before an assistant message at the same instant, then id), is a
# user message. One probe of the bot's (channel_id, personality_id, created_at) index per message, so it serves a whole history and a few messages alike. Tested against pair_context on
# rich histories (ties, empty and system messages, assistant-first, contexts sharing a channel).
NON_EMPTY = "content ~ '[^[:space:]]'"


def is_answer(h: str) -> str:
    """The SQL condition that message `h` (a conversation_history alias) is an answer."""
    return f"""{h}.role = 'assistant' AND {h}.{NON_EMPTY} AND (
      SELECT q.role FROM conversation_history q
      WHERE q.channel_id = {h}.channel_id AND q.personality_id = {h}.personality_id
        AND q.persona_id = {h}.persona_id AND q.role IN ('user', 'assistant') AND q.{NON_EMPTY}
        AND q.created_at <= {h}.created_at
        AND (q.created_at, q.role = 'assistant', q.id) < ({h}.created_at, true, {h}.id)
      ORDER BY q.created_at DESC, q.role = 'assistant' DESC, q.id DESC
      LIMIT 1
  ) = 'user'"""


# Answers that no memory covers yet, per personality (the sensor's full reconciliation). A memory's
# last message id is its answer (`schema.MEMORY_ANSWER_ID`, indexed). An exchange whose text repeats
# an earlier one shares its memory and stays listed here; the sensor's run keys make that harmless.
_UNCOVERED_ANSWERS_SQL = f"""
SELECT p.slug, count(*) AS answers, max(h.created_at) AS newest
FROM conversation_history h
JOIN personalities p ON p.id = h.personality_id
WHERE {is_answer("h")}{{scope}}
  AND NOT EXISTS (SELECT 1 FROM memories m WHERE m.{MEMORY_ANSWER_ID} = h.id::text)
GROUP BY p.slug
ORDER BY p.slug
"""
UNCOVERED_ANSWERS_SQL = _UNCOVERED_ANSWERS_SQL.format(scope="")
# The same for some personalities only (`%s`: their ids).
UNCOVERED_ANSWERS_OF_SQL = _UNCOVERED_ANSWERS_SQL.format(scope="\n  AND h.personality_id = ANY(%s)")
# Which of some messages (`%s`: their ids) answer a user message.
ANSWERS_AMONG_SQL = f"SELECT h.id FROM conversation_history h WHERE h.id = ANY(%s) AND {is_answer('h')}"
