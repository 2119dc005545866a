"""The delta rebuild and the sensor's delta tick: only the history after each personality's coverage
mark is read, what they write equals what a full rebuild would, and the periodic reconciliation
still catches history that arrived behind a mark."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from dagster import build_sensor_context

from tinybot_migration.defs.memories.sensor import memory_rebuild_sensor, uncovered_answers
from tinybot_migration.defs.partitions import personality_partitions
from tinybot_migration.defs.resources import NewDatabaseResource
from tinybot_migration.lib.memories.coverage import LATE_MARGIN, coverage_marks
from tinybot_migration.lib.memories.pairing import pair_messages
from tinybot_migration.lib.memories.rebuild import (
    RebuildReport,
    distinct_exchanges,
    load_messages,
    rebuild_memories,
)
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration_tests.helpers.conversations import T0, Conversations
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for
from tinybot_migration_tests.memories.test_assets import instance, metadata, run_as_requested  # noqa: F401

AN_HOUR = 3600


@pytest.fixture
def history(make_database, admin_connect):
    """alpha in five channels (the newest an hour after the others, so that they lie behind the
    late margin), beta in one, both rebuilt in full (so both have a coverage mark)."""
    url = make_database("coverage")
    conn = admin_connect(url)
    apply_new_schema(conn)
    talk = Conversations(conn)
    for channel in ("1000", "1001", "1002", "1003"):
        talk.exchanges("alpha", 3, channel=channel)
    talk.say("alpha", "user", "still waiting in 1001", 40, channel="1001")
    talk.exchanges("alpha", 1, start=AN_HOUR, channel="1009")
    talk.exchanges("beta", 2)
    with OpenAITestServer() as server:
        rebuild_memories(conn, client_for(server), ["alpha", "beta"])
    return url, conn, talk


def expected_memory_ids(conn, talk: Conversations) -> set:
    """What a full pairing of the whole history gives, to compare the delta's result with."""
    report = RebuildReport()
    pairing = pair_messages(load_messages(conn, list(talk.personalities.values())))
    return set(distinct_exchanges(pairing.exchanges, report))


def memory_ids(conn) -> set:
    return {r[0] for r in conn.execute("SELECT id FROM memories").fetchall()}


def test_a_full_rebuild_marks_each_personality_covered_through_its_newest_message(history):
    _, conn, talk = history
    marks = coverage_marks(conn, list(talk.personalities.values()))
    assert marks == {
        talk.personality("alpha"): T0 + timedelta(seconds=AN_HOUR + 1),
        talk.personality("beta"): T0 + timedelta(seconds=11),
    }


def test_a_delta_rebuild_reads_only_the_moved_contexts_and_writes_what_a_full_one_would(history):
    _, conn, talk = history
    later = 2 * AN_HOUR
    talk.say("alpha", "assistant", "the answer 1001 waited for", later, channel="1001")
    talk.say("alpha", "user", "a new channel", later + 1, channel="1004")
    talk.say("alpha", "assistant", "   ", later + 2, channel="1004")  # empty: no answer
    talk.say("alpha", "system", "a system note", later + 3, channel="1004")
    talk.say("alpha", "assistant", "an answer at last", later + 4, channel="1004")
    talk.say("alpha", "assistant", "the bot speaks twice", later + 5, channel="1004")
    talk.say("alpha", "user", "waits in 1002", later + 6, channel="1002")
    with OpenAITestServer() as server:
        report = rebuild_memories(conn, client_for(server), ["alpha"], history="delta")
        assert len(server.requests) == 1
    assert report.history == "delta" and report.memories_written == 2
    # 1001 from its last answer (the waiting user message and its answer), 1002's new message, 1004,
    # and 1009 again (inside the late margin); not 1000 and 1003, nor what came before a last answer.
    assert report.messages_read == 2 + 1 + 5 + 2
    assert report.stats.unanswered_user_messages == 1
    assert memory_ids(conn) == expected_memory_ids(conn, talk)
    assert coverage_marks(conn, [talk.personality("alpha")]) == {
        talk.personality("alpha"): T0 + timedelta(seconds=later + 6)
    }
    with OpenAITestServer() as server:
        again = rebuild_memories(conn, client_for(server), ["alpha", "beta"])
        assert again.memories_written == 0 and server.requests == []


def test_a_delta_rereads_the_late_margin_so_a_late_commit_is_not_lost(history):
    _, conn, talk = history
    # Committed after the rebuild, but stamped just before alpha's mark (inside the margin).
    inside = AN_HOUR + 1 - LATE_MARGIN.total_seconds() / 2
    talk.say("alpha", "user", "a late question", inside, channel="1005")
    talk.say("alpha", "assistant", "a late answer", inside + 1, channel="1005")
    with OpenAITestServer() as server:
        report = rebuild_memories(conn, client_for(server), ["alpha"], history="delta")
    assert report.memories_written == 1
    assert memory_ids(conn) == expected_memory_ids(conn, talk)


def test_a_personality_without_a_mark_is_paired_in_full_by_a_delta_rebuild(history):
    _, conn, talk = history
    talk.exchanges("gamma", 3)
    with OpenAITestServer() as server:
        report = rebuild_memories(conn, client_for(server), ["gamma"], history="delta")
    assert report.memories_written == 3 and report.messages_read == 6
    assert talk.personality("gamma") in coverage_marks(conn, [talk.personality("gamma")])


def tick(dagster_instance, url: str, cursor: str | None):
    resources = {"new_database": NewDatabaseResource(url=url)}
    with build_sensor_context(instance=dagster_instance, resources=resources, cursor=cursor) as context:
        return memory_rebuild_sensor(context)


def reconciled_at(seconds: float) -> str:
    """A cursor as a tick of the first version of the marks left it: only the reconciliation time."""
    return json.dumps({"reconciled_at": seconds})


def test_the_delta_tick_requests_delta_runs_and_the_daily_one_reconciles_the_whole_history(instance, history):  # noqa: F811
    url, conn, talk = history
    instance.add_dynamic_partitions(personality_partitions.name, ["alpha", "beta"])
    recently = time.time()
    first = tick(instance, url, reconciled_at(recently))  # looks at every personality
    assert first.run_requests == []
    cursor = first.cursor
    assert json.loads(cursor) == {
        "reconciled_at": recently,  # a delta tick keeps the reconciliation's time
        "seen_through": (T0 + timedelta(seconds=AN_HOUR + 1)).isoformat(),
        "outstanding": [],
    }

    talk.say("alpha", "user", "a new question", 2 * AN_HOUR, channel="1000")
    quiet = tick(instance, url, cursor)
    assert quiet.run_requests == []  # a user message alone starts nothing
    talk.say("alpha", "assistant", "its answer", 2 * AN_HOUR + 1, channel="1000")
    talk.exchanges("newcomer", 1, start=2 * AN_HOUR + 10)  # no mark yet: paired in full once
    result = tick(instance, url, quiet.cursor)
    requests = {r.partition_key: r for r in result.run_requests}
    assert sorted(requests) == ["alpha", "newcomer"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["newcomer"]
    alpha = requests["alpha"]
    assert alpha.tags["tinybot/uncovered_answers"] == "1" and alpha.tags["tinybot/history"] == "delta"
    assert alpha.run_config == {"ops": {"rebuilt_memories": {"config": {"history": "delta"}}}}
    left = json.loads(result.cursor)
    assert sorted(left["outstanding"]) == sorted(str(talk.personality(s)) for s in ("alpha", "newcomer"))

    with OpenAITestServer() as server:
        done = run_as_requested(instance, url, server, alpha)
        assert done.success and len(server.requests) == 1
    figures = metadata(done)  # 1000's new exchange, and 1009 again (inside the late margin)
    assert (
        figures["history"] == "delta"
        and figures["memories_written"] == 1
        and figures["messages_read"] == 2 + 2
    )
    assert all(e.passed for e in done.get_asset_check_evaluations())
    # Nothing new arrived: newcomer is looked at again because the last tick left it outstanding.
    after = tick(instance, url, result.cursor)
    assert [r.partition_key for r in after.run_requests] == ["newcomer"]
    assert json.loads(after.cursor)["outstanding"] == [str(talk.personality("newcomer"))]

    # History that arrives behind alpha's mark (a second relational run): the delta tick cannot see
    # it; the reconciliation, due a day after the last one, pairs everything and finds it.
    talk.say("alpha", "user", "an old question copied late", 5, channel="1006")
    talk.say("alpha", "assistant", "an old answer copied late", 6, channel="1006")
    assert [r.partition_key for r in tick(instance, url, after.cursor).run_requests] == ["newcomer"]
    day_ago = time.time() - 86400 - 1
    stale = json.dumps({**json.loads(after.cursor), "reconciled_at": day_ago})
    reconciled = tick(instance, url, stale)
    assert json.loads(reconciled.cursor)["reconciled_at"] > day_ago + 86400
    requests = {r.partition_key: r for r in reconciled.run_requests}
    assert sorted(requests) == ["alpha", "newcomer"]
    assert requests["alpha"].run_config == {"ops": {"rebuilt_memories": {"config": {"history": "full"}}}}
    with OpenAITestServer() as server:
        full = run_as_requested(instance, url, server, requests["alpha"])
    assert full.success and metadata(full)["history"] == "full" and metadata(full)["memories_written"] == 1
    reset = tick(instance, url, None)  # a reset cursor: the next tick reconciles
    assert reset.run_requests and all(r.tags["tinybot/history"] == "full" for r in reset.run_requests)


def test_a_personality_rebuilt_before_it_had_history_is_covered_and_its_first_answers_are_new(history):
    _, conn, talk = history
    talk.personality("omega")
    with OpenAITestServer() as server:
        rebuild_memories(conn, client_for(server), ["omega"])
    covered = "SELECT covered_through = '-infinity' FROM tinybot_migration.memory_coverage WHERE personality_id = %s"
    assert conn.execute(covered, (talk.personality("omega"),)).fetchone() == (True,)
    talk.exchanges("omega", 2)
    assert [(u.slug, u.answers) for u in uncovered_answers(conn, "delta")] == [("omega", 2)]
    with OpenAITestServer() as server:
        report = rebuild_memories(conn, client_for(server), ["omega"], history="delta")
    assert report.memories_written == 2 and uncovered_answers(conn, "delta") == []
