"""The bot's search on a real new database: ordering, filters, threshold, time cut-off, names, ties,
the bot's statement against an exact answer computed here, and `add_memory` written once."""

from datetime import timedelta

import numpy as np
import pytest

from tinybot_migration.lib.memories.bot_query import bot_memory_query
from tinybot_migration.lib.memories.search import MemorySearch
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for, offline_client
from tinybot_migration_tests.search.conftest import T0


def exact(world, query, persona, personality=None, limit=15, min_similarity=0.15, before=None):
    """The right answer by the bot's rules, computed in numpy: strictly before the cut-off, a
    distance strictly under 1 - min_similarity."""
    scored = []
    for memory_id, persona_id, personality_id, _, vector, created_at in world["rows"]:
        if persona_id != persona or (personality and personality_id != personality):
            continue
        if before is not None and created_at >= before:
            continue
        score = float(np.dot(query, vector))
        if 1 - score < 1 - min_similarity:
            scored.append((score, memory_id))
    return [memory_id for _, memory_id in sorted(scored, reverse=True)[:limit]]


@pytest.fixture
def search(world):
    with MemorySearch(world["url"], offline_client()) as memory_search:
        yield memory_search


def test_the_search_returns_the_exact_answer_best_first_within_every_filter(world, search):
    main, luna = world["personas"]["Main"], world["personalities"]["luna"]
    query = world["centre"]
    cases = [
        dict(persona=main),
        dict(persona=main, personality=luna),
        dict(persona=main, min_similarity=-1.0, limit=50),
        dict(persona=main, min_similarity=0.9),
        dict(persona=main, before=T0 + timedelta(days=20)),
        dict(persona=world["personas"]["Alt"], limit=3),
    ]
    for case in cases:
        result = search.search_memories(
            query,
            case["persona"],
            personality_id=case.get("personality"),
            limit=case.get("limit", 15),
            min_similarity=case.get("min_similarity", 0.15),
            exclude_newer_than=case.get("before"),
        )
        expected = exact(world, query, **case)
        assert [m.id for m in result.memories] == expected, case
        scores = [m.score for m in result.memories]
        assert scores == sorted(scores, reverse=True)
        assert all(m.persona_id == case["persona"] for m in result.memories)
    assert len(search.search_memories(query, main, min_similarity=0.9).memories) < 15  # the threshold bites


def test_random_queries_with_every_filter_at_once_get_the_exact_answer(world, search):
    main, luna = world["personas"]["Main"], world["personalities"]["luna"]
    before = T0 + timedelta(days=40)
    rng = np.random.default_rng(3)
    for _ in range(5):
        query = rng.normal(size=1536).astype(np.float32)
        query /= np.linalg.norm(query)
        result = search.search_memories(query, main, luna, min_similarity=-1.0, exclude_newer_than=before)
        expected = exact(world, query, main, luna, min_similarity=-1.0, before=before)
        assert expected and [m.id for m in result.memories] == expected


def test_names_replace_the_placeholders_and_come_with_each_memory(world, search):
    [found] = search.search_memories(
        world["centre"], world["personas"]["Main"], world["personalities"]["luna"], limit=1
    ).memories
    # The persona's name, not its preferred name (Léa): what the bot's query puts there.
    assert found.readable_content().startswith("Main: note ") and found.readable_content().endswith(
        "\nLuna ✨: ok"
    )
    assert (found.persona_name, found.personality_name) == ("Main", "Luna ✨")
    [alt] = search.search_memories(
        world["centre"], world["personas"]["Alt"], world["personalities"]["nova"], limit=1
    ).memories
    assert alt.readable_content().startswith("Alt: note ") and alt.readable_content().endswith("\nNova: ok")


def test_the_search_is_the_bots_statement_at_the_cutoff_and_on_ties(world, search):
    """Parity with the bot: a memory created exactly at the cut-off is left out (strictly before),
    one a millisecond earlier is in; two memories with one vector tie and both come back; the
    rows, order and names are those of the bot's statement run directly."""
    conn, main, luna = world["conn"], world["personas"]["Main"], world["personalities"]["luna"]
    cutoff = T0 + timedelta(days=90)
    twin = world["rows"][1]
    for offset, label in ((timedelta(0), "at"), (timedelta(milliseconds=-1), "before")):
        conn.execute(
            "INSERT INTO memories (id, persona_id, personality_id, content, embedding, created_at, source_system)"
            " VALUES (gen_random_uuid(), %s, %s, %s, %s, %s, 'tzurot-v3')",
            (main, luna, f"{label} the cut-off", twin[4], cutoff + offset),
        )
    found = search.search_memories(twin[4], main, luna, limit=3, exclude_newer_than=cutoff).memories
    assert [m.content for m in found[:2]] in (
        [twin[3], "before the cut-off"],
        ["before the cut-off", twin[3]],
    )
    assert found[0].distance == pytest.approx(0, abs=1e-6) and found[1].distance == pytest.approx(0, abs=1e-6)
    assert "at the cut-off" not in {m.content for m in found}
    direct = bot_memory_query(twin[4], main, luna, cutoff, 3).run(conn)
    assert [(m.id, m.persona_name, m.personality_name) for m in direct] == [
        (m.id, m.persona_name, m.personality_name) for m in found
    ]


def test_a_text_query_is_embedded_through_the_provider(world, search):
    with OpenAITestServer() as server, MemorySearch(world["url"], client_for(server)) as live:
        result = live.search_memories(
            "what did we say about tea", world["personas"]["Main"], min_similarity=-1
        )
        assert server.requests == [["what did we say about tea"]] and len(result.memories) == 15
    with pytest.raises(ValueError, match="1536 dimensions"):
        search.search_memories([0.1, 0.2], world["personas"]["Main"])


def test_add_memory_twice_writes_one_row_in_the_live_format(world, search):
    main, luna = world["personas"]["Main"], world["personalities"]["luna"]
    text = "{user}: I adopted a cat\n{assistant}: What's its name?"
    with OpenAITestServer() as server, MemorySearch(world["url"], client_for(server)) as live:
        first = live.add_memory(main, luna, text, {"channel_id": "123", "created_at": T0})
        second = live.add_memory(main, luna, text, {"channel_id": "123", "created_at": T0})
        assert first == second and len(server.requests) == 1  # the second found the text in the cache
        [found] = live.search_memories(text, main, luna, limit=1).memories
    assert found.id == first and found.score == pytest.approx(1.0, abs=1e-5)
    row = (
        world["conn"]
        .execute(
            "SELECT count(*), min(canon_scope), min(summary_type), min(source_system), min(channel_id)"
            " FROM memories WHERE id = %s",
            (first,),
        )
        .fetchone()
    )
    assert row == (1, "personal", "conversation", "tzurot-v3", "123")
    with pytest.raises(ValueError, match="does not take colour"):
        search.add_memory(main, luna, "x", {"colour": 1})
