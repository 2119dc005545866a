"""The old database's `pending_memories`: interactions whose memory the bot never stored. Each old
row gets exactly one outcome, recorded in `PROJECT_SCHEMA.pending_memory_outcomes`:

- **resolved**: its assistant message is the answer of an exchange the rebuild pairs, so the
  rebuilt memory stores it (copying it too would make the bot store it a second time, under its
  own text); nothing is copied;
- **copied**: the rebuild cannot store it (e.g. an answer with no user message before it): the
  row is copied into the bot's `pending_memories` with its ids re-keyed, those inside `metadata`
  included, and `attempts` reset to 0, so the bot's processor (`attempts < 3`) stores it after
  cutover;
- **rejected**: its conversation message, persona or personality did not reach the new database
  (a defect of the source, named in `reason`); it stays in the old database.

Re-runs write nothing new: ids are deterministic and rows are only rewritten when they differ.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

from tinybot_migration.lib.ids import NAMESPACE
from tinybot_migration.lib.memories.pairing import ANSWERS_AMONG_SQL
from tinybot_migration.lib.postgres import take_turns_in_transaction
from tinybot_migration.lib.relational.copy import IdMaps
from tinybot_migration.lib.schema import PENDING_MEMORY_OUTCOMES

RESOLVED, COPIED, REJECTED = "resolved", "copied", "rejected"
# The ids the bot writes into a pending memory's metadata (ConversationalRAGService.storeInteraction).
METADATA_IDS = {"personaId": "personas", "personalityId": "personalities"}
SAMPLES = 5


# The answers the rebuild pairs (memories/pairing.py's rule, as the sensor has it in SQL): a
# non-empty assistant message whose previous non-empty user/assistant message in its context
# is a user message.
def pending_memory_id(conversation_history_id: uuid.UUID | str) -> uuid.UUID:
    """The copied row's id: one pending memory per conversation message (the bot's unique key)."""
    return uuid.uuid5(NAMESPACE, f"pending_memory:{conversation_history_id}")


@dataclass
class PendingOutcomes:
    old_rows: int = 0
    counts: Counter = field(default_factory=Counter)
    rows_written: int = 0  # copied rows inserted or rewritten in the bot's pending_memories
    rejection_samples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Decision:
    old_id: uuid.UUID
    outcome: str
    conversation_history_id: str | None
    row: tuple | None = None  # the copied row, in the bot's column order
    reason: str | None = None


def account_pending_memories(old_conn: psycopg.Connection, new_conn: psycopg.Connection) -> PendingOutcomes:
    """Decide and record an outcome for every old pending memory (one old snapshot, one new transaction)."""
    result = PendingOutcomes()
    with old_conn.transaction():
        maps = IdMaps(old_conn)
        old_rows = old_conn.execute(
            "SELECT id, conversation_history_id, persona_id, personality_id, text, metadata, created_at,"
            " attempts, last_attempt_at, error FROM pending_memories ORDER BY created_at, id"
        ).fetchall()
        history = maps.get("conversation_history")
        personas, personalities = maps.get("personas"), maps.get("personalities")
    result.old_rows = len(old_rows)
    new_history_ids = [history[str(r[1])] for r in old_rows if str(r[1]) in history]
    answers = {str(r[0]) for r in new_conn.execute(ANSWERS_AMONG_SQL, (new_history_ids,)).fetchall()}
    decisions = [_decide(row, history, personas, personalities, answers, maps) for row in old_rows]
    with new_conn.transaction():
        take_turns_in_transaction(new_conn, "pending_memories")
        result.rows_written = _write_copied(new_conn, [d for d in decisions if d.row is not None])
        _record_outcomes(new_conn, decisions)
    result.counts = Counter(d.outcome for d in decisions)
    result.rejection_samples = [
        f"pending memory {d.old_id}: {d.reason}" for d in decisions if d.outcome == REJECTED
    ][:SAMPLES]
    return result


def _decide(row, history, personas, personalities, answers: set[str], maps: IdMaps) -> _Decision:
    old_id, old_history, old_persona, old_personality, text, metadata, created_at, attempts, _, error = row
    new_history = history.get(str(old_history))
    missing = [
        f"{what} {old} is not in the new database"
        for what, old, found in (
            ("conversation message", old_history, new_history),
            ("persona", old_persona, personas.get(str(old_persona))),
            ("personality", old_personality, personalities.get(str(old_personality))),
        )
        if found is None
    ]
    if missing:
        return _Decision(old_id, REJECTED, new_history, reason="; ".join(missing))
    if new_history in answers:
        return _Decision(old_id, RESOLVED, new_history, reason="the rebuilt memory of its exchange stores it")
    copied = (
        pending_memory_id(new_history),
        new_history,
        personas[str(old_persona)],
        personalities[str(old_personality)],
        text,
        Jsonb(rekey_metadata(metadata, maps)),
        created_at,
        0,
        None,
        error,
    )
    reason = "no exchange of the rebuild holds its answer" + (
        f"; attempts reset from {attempts} so the bot retries it" if attempts else ""
    )
    return _Decision(old_id, COPIED, new_history, row=copied, reason=reason)


def rekey_metadata(metadata: dict, maps: IdMaps) -> dict:
    """The metadata with the old ids the bot put in it replaced by the new ones."""
    rekeyed = dict(metadata)
    for key, table in METADATA_IDS.items():
        value = rekeyed.get(key)
        new_id = maps.get(table).get(value) if isinstance(value, str) else None
        if new_id is not None:
            rekeyed[key] = new_id
    return rekeyed


_COLUMNS = (
    "id, conversation_history_id, persona_id, personality_id, text, metadata, created_at, attempts,"
    " last_attempt_at, error"
)


def _write_copied(conn: psycopg.Connection, decisions: list[_Decision]) -> int:
    """Insert the copied rows, or rewrite those that differ. Keyed as the bot keys them (one pending
    memory per message): a row the bot wrote itself for the same message after cutover is left as
    it is."""
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO pending_memories ({_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})"
            " ON CONFLICT (conversation_history_id) DO UPDATE SET text = excluded.text,"
            " metadata = excluded.metadata, created_at = excluded.created_at, error = excluded.error"
            " WHERE pending_memories.id = excluded.id"
            " AND (pending_memories.text, pending_memories.metadata, pending_memories.created_at,"
            " pending_memories.error) IS DISTINCT FROM"
            " (excluded.text, excluded.metadata, excluded.created_at, excluded.error)",
            [d.row for d in decisions],
        )
        return max(cur.rowcount, 0)


def _record_outcomes(conn: psycopg.Connection, decisions: list[_Decision]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {PENDING_MEMORY_OUTCOMES.qualified}"
            " (old_id, outcome, new_id, conversation_history_id, reason) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (old_id) DO UPDATE SET outcome = excluded.outcome, new_id = excluded.new_id,"
            " conversation_history_id = excluded.conversation_history_id, reason = excluded.reason,"
            " decided_at = now()"
            f" WHERE ({PENDING_MEMORY_OUTCOMES.name}.outcome, {PENDING_MEMORY_OUTCOMES.name}.new_id,"
            f" {PENDING_MEMORY_OUTCOMES.name}.reason) IS DISTINCT FROM"
            " (excluded.outcome, excluded.new_id, excluded.reason)",
            [
                (d.old_id, d.outcome, d.row[0] if d.row else None, d.conversation_history_id, d.reason)
                for d in decisions
            ],
        )


def pending_memories_accounted_for(
    old_conn: psycopg.Connection, new_conn: psycopg.Connection
) -> tuple[bool, str, dict]:
    """Every old pending memory has exactly one outcome; every copied one is in the bot's table and
    every resolved one points at an answer of the new history."""
    old_ids = [str(r[0]) for r in old_conn.execute("SELECT id FROM pending_memories").fetchall()]
    recorded = new_conn.execute(
        f"SELECT o.outcome, count(*), count(*) FILTER (WHERE o.outcome = 'copied' AND p.id IS NULL),"
        " count(*) FILTER (WHERE o.outcome = 'resolved' AND h.id IS NULL)"
        f" FROM {PENDING_MEMORY_OUTCOMES.qualified} o"
        " LEFT JOIN pending_memories p ON p.id = o.new_id"
        " LEFT JOIN conversation_history h ON h.id = o.conversation_history_id"
        " WHERE o.old_id = ANY(%s::uuid[]) GROUP BY o.outcome",
        (old_ids,),
    ).fetchall()
    counts = {outcome: n for outcome, n, _, _ in recorded}
    copied_missing = sum(r[2] for r in recorded)
    resolved_dangling = sum(r[3] for r in recorded)
    unaccounted = len(old_ids) - sum(counts.values())
    problems = []
    if unaccounted:
        problems.append(f"{unaccounted:,} old pending memories have no outcome")
    if copied_missing:
        problems.append(f"{copied_missing:,} copied pending memories are not in pending_memories")
    if resolved_dangling:
        problems.append(f"{resolved_dangling:,} resolved pending memories point at no message")
    description = "; ".join(problems) or (
        f"all {len(old_ids):,} old pending memories accounted for: "
        + ", ".join(f"{counts.get(o, 0):,} {o}" for o in (RESOLVED, COPIED, REJECTED))
    )
    metadata = {
        "old_pending_memories": len(old_ids),
        **{o: counts.get(o, 0) for o in (RESOLVED, COPIED, REJECTED)},
        "unaccounted": unaccounted,
    }
    return not problems, description, metadata
