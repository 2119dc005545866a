"""How far the memory rebuild has covered each personality's history, and reading only what came
after: the incremental sensor's tick and its runs cost what the delta costs, not the history.

`memory_coverage` holds, per personality, the newest message time a successful rebuild paired
(`covered_through`). A delta run reads the contexts that have a message since then, each from just
after its last answer before that point: pairing restarts empty after an assistant message
(docs/design.md §4), so those messages give exactly the exchanges a full pairing would give there. It
starts `LATE_MARGIN` earlier, so a message committed a little after its `created_at` is still read;
memory ids depend on content, so reading a message twice writes nothing twice. History that
arrives later still (a second relational run) is caught by the sensor's periodic full
reconciliation, which pairs everything as a full rebuild does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import args_row

from tinybot_migration.lib.memories.pairing import NON_EMPTY, Message, is_answer

LATE_MARGIN = timedelta(minutes=10)

HISTORY_FULL = "full"
HISTORY_DELTA = "delta"
HISTORY_MODES = (HISTORY_FULL, HISTORY_DELTA)


def coverage_marks(
    conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """personality id -> covered_through, for those that have one."""
    rows = conn.execute(
        "SELECT personality_id, covered_through FROM tinybot_migration.memory_coverage"
        " WHERE personality_id = ANY(%s) AND covered_through > '-infinity'",
        (list(personality_ids),),
    ).fetchall()
    return dict(rows)  # a personality covered when it had no history reads as unmarked: all of it is new


def newest_message_times(messages: Iterable[Message]) -> dict[uuid.UUID, datetime]:
    newest: dict[uuid.UUID, datetime] = {}
    for message in messages:
        known = newest.get(message.personality_id)
        if known is None or message.created_at > known:
            newest[message.personality_id] = message.created_at
    return newest


def record_coverage(conn: psycopg.Connection, newest: Mapping[uuid.UUID, datetime | None]) -> None:
    """After a successful rebuild: these personalities are covered through these times (a mark
    never moves back); None for one that had no history (-infinity: every message is after it)."""
    if not newest:
        return
    conn.execute(
        "INSERT INTO tinybot_migration.memory_coverage (personality_id, covered_through, updated_at)"
        " SELECT p, coalesce(t, '-infinity'), now() FROM unnest(%s::uuid[], %s::timestamp[]) AS n(p, t)"
        " ON CONFLICT (personality_id) DO UPDATE"
        " SET covered_through = greatest(memory_coverage.covered_through, excluded.covered_through),"
        " updated_at = now()",
        (list(newest), list(newest.values())),
    )


# The contexts with a message since (mark - margin), each read from just after its last non-empty
# answer before that point (from its start when it has none). Sort order as in pairing: created_at,
# a user message before an assistant message at the same instant, then id.
DELTA_MESSAGES_SQL = f"""
WITH marks AS (
    SELECT personality_id, covered_through - %(margin)s AS since
    FROM unnest(%(ids)s::uuid[], %(marks)s::timestamp[]) AS m(personality_id, covered_through)
), touched AS (
    SELECT DISTINCT h.channel_id, h.personality_id, h.persona_id, m.since
    FROM marks m
    JOIN conversation_history h ON h.personality_id = m.personality_id AND h.created_at >= m.since
), bounds AS (
    SELECT t.channel_id, t.personality_id, t.persona_id, b.created_at AS after_at, b.id AS after_id
    FROM touched t
    LEFT JOIN LATERAL (
        SELECT p.created_at, p.id FROM conversation_history p
        WHERE p.channel_id = t.channel_id AND p.personality_id = t.personality_id
          AND p.persona_id = t.persona_id AND p.role = 'assistant' AND p.{NON_EMPTY}
          AND p.created_at < t.since
        ORDER BY p.created_at DESC, p.id DESC
        LIMIT 1
    ) b ON true
)
SELECT h.id, h.channel_id, h.guild_id, h.personality_id, h.persona_id, h.role, h.content, h.created_at
FROM bounds b
JOIN conversation_history h
  ON h.channel_id = b.channel_id AND h.personality_id = b.personality_id AND h.persona_id = b.persona_id
WHERE b.after_at IS NULL
   OR h.created_at > b.after_at
   OR (h.created_at = b.after_at AND h.role = 'assistant' AND h.id > b.after_id)
"""


def load_delta_messages(
    conn: psycopg.Connection, marks: Mapping[uuid.UUID, datetime], margin: timedelta = LATE_MARGIN
) -> list[Message]:
    """The messages a delta rebuild pairs for personalities with these marks."""
    if not marks:
        return []
    with conn.cursor(row_factory=args_row(Message)) as cur:
        cur.execute(DELTA_MESSAGES_SQL, {"ids": list(marks), "marks": list(marks.values()), "margin": margin})
        return cur.fetchall()


# The sensor's tick for covered personalities: answers created after the mark (`is_answer`, one
# index probe each). {scope} narrows it to some personalities (`%(ids)s`).
_DELTA_UNCOVERED_ANSWERS_SQL = f"""
SELECT p.slug, count(*) AS answers, max(h.created_at) AS newest
FROM tinybot_migration.memory_coverage c
JOIN personalities p ON p.id = c.personality_id
JOIN conversation_history h ON h.personality_id = c.personality_id AND h.created_at > c.covered_through
WHERE {is_answer("h")}{{scope}}
GROUP BY p.slug
ORDER BY p.slug
"""
DELTA_UNCOVERED_ANSWERS_SQL = _DELTA_UNCOVERED_ANSWERS_SQL.format(scope="")
DELTA_UNCOVERED_ANSWERS_OF_SQL = _DELTA_UNCOVERED_ANSWERS_SQL.format(
    scope="\n  AND c.personality_id = ANY(%(ids)s)"
)


def newest_message_time(conn: psycopg.Connection) -> datetime | None:
    """The newest message's time (idx_conversation_history_created_at: one index probe)."""
    return conn.execute("SELECT max(created_at) FROM conversation_history").fetchone()[0]


def moved_personalities(conn: psycopg.Connection, since: datetime) -> set[uuid.UUID]:
    """Personalities with a message created after `since` less the late margin: what a tick must
    look at besides those it left with uncovered answers."""
    rows = conn.execute(
        "SELECT DISTINCT personality_id FROM conversation_history WHERE created_at > %s",
        (since - LATE_MARGIN,),
    ).fetchall()
    return {r[0] for r in rows}


def unmarked_among(conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Which of these personalities no rebuild has covered yet."""
    rows = conn.execute(
        "SELECT p FROM unnest(%s::uuid[]) AS p"
        " WHERE NOT EXISTS (SELECT 1 FROM tinybot_migration.memory_coverage c WHERE c.personality_id = p)",
        (list(personality_ids),),
    ).fetchall()
    return [r[0] for r in rows]
