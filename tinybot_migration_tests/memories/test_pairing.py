"""Pairing rules of docs/design.md §4 on crafted histories (pure Python) and the memory id seed rule."""

import hashlib
import uuid
from datetime import datetime, timedelta

from tinybot_migration.lib.memories.pairing import (
    Message,
    PairingStats,
    memory_content,
    pair_context,
    pair_messages,
)

PERSONALITY = uuid.UUID("11111111-1111-1111-1111-111111111111")
PERSONA = uuid.UUID("22222222-2222-2222-2222-222222222222")
T0 = datetime(2025, 1, 1)  # naive UTC, as the bot's timestamp(3)


def msg(n: int, role: str, content: str, seconds: float, channel: str = "c1", persona=PERSONA) -> Message:
    return Message(
        uuid.UUID(int=n), channel, "g1", PERSONALITY, persona, role, content, T0 + timedelta(seconds=seconds)
    )


def texts(messages) -> list[str]:
    return [e.content for e in pair_context(messages)]


def test_consecutive_user_messages_are_joined_and_nothing_is_dropped():
    history = [
        msg(1, "user", "hi", 0),
        msg(2, "user", "are you there?", 5),
        msg(3, "user", "hello??", 6),
        msg(4, "assistant", "yes!", 9),
        msg(5, "user", "cool", 20),
        msg(6, "assistant", "indeed", 21),
    ]
    [first, second] = pair_context(reversed(history))  # any input order
    assert first.content == "{user}: hi\nare you there?\nhello??\n{assistant}: yes!"
    assert first.message_ids == [str(uuid.UUID(int=n)) for n in (1, 2, 3, 4)]
    assert first.answer.created_at == T0 + timedelta(seconds=9)
    assert second.content == memory_content(["cool"], "indeed")


def test_a_trailing_user_message_waits_and_an_opening_assistant_message_pairs_with_nothing():
    stats = PairingStats()
    history = [
        msg(1, "assistant", "welcome!", 0),
        msg(2, "user", "thanks", 1),
        msg(3, "assistant", "any time", 2),
        msg(4, "assistant", "also…", 3),
        msg(5, "user", "one more thing", 4),
        msg(6, "user", "and another", 5),
    ]
    exchanges = pair_context(history, stats)
    assert [e.content for e in exchanges] == ["{user}: thanks\n{assistant}: any time"]
    assert stats.assistant_messages_without_user == 2 and stats.unanswered_user_messages == 2
    # The answer arrives: the two waiting messages become one exchange.
    later = pair_context([*history, msg(7, "assistant", "sure", 6)])
    assert later[-1].content == "{user}: one more thing\nand another\n{assistant}: sure"


def test_ties_put_the_user_first_then_order_by_id():
    history = [
        msg(9, "assistant", "answer", 10),
        msg(8, "user", "second at the same instant", 10),
        msg(7, "user", "first at the same instant", 10),
    ]
    assert texts(history) == [
        "{user}: first at the same instant\nsecond at the same instant\n{assistant}: answer"
    ]


def test_empty_and_system_messages_are_left_out_and_counted():
    stats = PairingStats()
    history = [
        msg(1, "system", "you are a bot", 0),
        msg(2, "user", "   \n\t", 1),
        msg(3, "user", "real question", 2),
        msg(4, "assistant", "", 3),
        msg(5, "assistant", "real answer", 4),
    ]
    assert texts(history) == ["{user}: real question\n{assistant}: real answer"]
    pair_context(history, stats)
    assert (stats.empty_messages_skipped, stats.other_roles_skipped, stats.exchanges) == (2, 1, 1)


def test_contexts_are_paired_separately():
    other = uuid.UUID(int=99)
    history = [
        msg(1, "user", "in channel one", 0, channel="c1"),
        msg(2, "user", "in channel two", 1, channel="c2"),
        msg(3, "assistant", "answer in one", 2, channel="c1"),
        msg(4, "user", "other persona", 3, channel="c1", persona=other),
        msg(5, "assistant", "answer in two", 4, channel="c2"),
    ]
    pairing = pair_messages(history)
    assert sorted(e.content for e in pairing.exchanges) == [
        "{user}: in channel one\n{assistant}: answer in one",
        "{user}: in channel two\n{assistant}: answer in two",
    ]
    assert pairing.stats.contexts == 3 and pairing.stats.unanswered_user_messages == 1


def test_memory_ids_follow_the_seed_rule():
    [exchange] = pair_context([msg(1, "user", "héllo 👋", 0), msg(2, "assistant", "hi", 1)])
    namespace = uuid.uuid5(uuid.NAMESPACE_DNS, "tzurot-v3-memory")  # the bot's namespace
    digest = hashlib.sha256(exchange.content.encode()).hexdigest()[:32]
    assert exchange.memory_id == uuid.uuid5(namespace, f"{PERSONA}:{PERSONALITY}:{digest}")


def rich_history(conn, seed: int, messages: int = 900) -> list[Message]:
    """Random histories that hit every rule: ties at one instant (user and assistant, two
    assistants), empty and whitespace-only and system messages, assistant-first contexts, runs of
    users, two personas and two personalities sharing channels. Written to `conn`, and returned."""
    import random

    from tinybot_migration.lib.ids import deterministic_uuid, persona_seed
    from tinybot_migration_tests.helpers.conversations import T0 as HISTORY_T0
    from tinybot_migration_tests.helpers.conversations import Conversations

    talk = Conversations(conn)
    other_persona = deterministic_uuid(persona_seed(talk.user_id, "Other"))
    conn.execute(
        "INSERT INTO personas (id, name, content, owner_id, created_at, updated_at)"
        " VALUES (%s, 'Other', 'o', %s, %s, %s)",
        (other_persona, talk.user_id, HISTORY_T0, HISTORY_T0),
    )
    rng = random.Random(seed)
    written = []
    for _ in range(messages):
        personality = talk.personality(rng.choice(["luna", "nova"]))
        persona = rng.choice([talk.persona_id, other_persona])
        role = rng.choices(["user", "assistant", "system"], weights=[5, 4, 1])[0]
        content = rng.choices(["words", "", "  \n", "más palabras"], weights=[8, 1, 1, 2])[0]
        at = HISTORY_T0 + timedelta(seconds=rng.randrange(60))  # few instants: many ties
        message = Message(uuid.uuid4(), rng.choice(["1", "2"]), "g", personality, persona, role, content, at)
        conn.execute(
            "INSERT INTO conversation_history (id, channel_id, guild_id, personality_id, persona_id, role,"
            " content, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (message.id, message.channel_id, message.guild_id, personality, persona, role, content, at),
        )
        written.append(message)
    return written


def test_the_one_sql_rule_finds_exactly_the_answers_python_pairs_on_rich_histories(new_db):
    from collections import Counter

    from tinybot_migration.lib.memories.coverage import DELTA_UNCOVERED_ANSWERS_SQL
    from tinybot_migration.lib.memories.pairing import ANSWERS_AMONG_SQL, UNCOVERED_ANSWERS_SQL, is_answer

    messages = rich_history(new_db, seed=3)
    pairing = pair_messages(messages)
    python = {e.answer.id for e in pairing.exchanges}
    assert pairing.stats.assistant_messages_without_user and pairing.stats.empty_messages_skipped
    assert len(python) > 100

    sql = {r[0] for r in new_db.execute(f"SELECT h.id FROM conversation_history h WHERE {is_answer('h')}")}
    assert sql == python

    slugs = dict(new_db.execute("SELECT id, slug FROM personalities").fetchall())
    per_slug = Counter(slugs[m.personality_id] for m in messages if m.id in python)
    full = {slug: answers for slug, answers, _ in new_db.execute(UNCOVERED_ANSWERS_SQL).fetchall()}
    assert full == per_slug

    some = [m.id for m in messages[::7]]
    among = {r[0] for r in new_db.execute(ANSWERS_AMONG_SQL, (some,)).fetchall()}
    assert among == python & set(some)

    new_db.execute(
        "INSERT INTO tinybot_migration.memory_coverage (personality_id, covered_through, updated_at)"
        " SELECT id, '-infinity', now() FROM personalities"
    )
    delta = {slug: answers for slug, answers, _ in new_db.execute(DELTA_UNCOVERED_ANSWERS_SQL).fetchall()}
    assert delta == per_slug
