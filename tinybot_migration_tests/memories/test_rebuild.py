"""The memory rebuild on real PostgreSQL, embedding through the real `openai` client and a local server."""

import numpy as np
import psycopg
import pytest

from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource
from tinybot_migration.lib.embeddings.client import (
    EmbeddingClient,
    EmbeddingDimensionError,
    EmbeddingProviderError,
    EmbeddingRefusedError,
    EmbeddingResponseError,
)
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.ids import memory_id
from tinybot_migration.lib.memories import checks
from tinybot_migration.lib.memories.pairing import memory_content
from tinybot_migration.lib.memories.rebuild import rebuild_memories
from tinybot_migration.lib.memory_bill import estimate_rebuild
from tinybot_migration.lib.new_database_schema import apply_old_schema
from tinybot_migration.lib.personalities import UnknownPersonalityError
from tinybot_migration_tests.helpers.conversations import T0, Conversations
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for

API_KEY = "sk-test-memories-0123456789"


@pytest.fixture
def history(new_db) -> Conversations:
    """alpha: 6 exchanges (one with three user messages) and a trailing user; beta: 3 exchanges."""
    talk = Conversations(new_db)
    talk.exchanges("alpha", 5)
    talk.say("alpha", "user", "wait", 100)
    talk.say("alpha", "user", "one more", 101)
    talk.say("alpha", "user", "last one", 102)
    talk.say("alpha", "assistant", "here you go", 103)
    talk.say("alpha", "user", "still there?", 200)  # trailing: no answer yet
    talk.exchanges("beta", 3, channel="3000")
    return talk


@pytest.fixture
def server():
    with OpenAITestServer() as running:
        yield running


def provider(server: OpenAITestServer, **overrides) -> EmbeddingClient:
    return client_for(server, api_key=API_KEY, **overrides)


def memory_rows(conn) -> list[tuple]:
    return conn.execute(
        "SELECT content, message_ids, created_at, canon_scope, summary_type, source_system, channel_id,"
        " guild_id, is_summarized, persona_id, embedding::text FROM memories ORDER BY created_at"
    ).fetchall()


def sent_texts(server) -> list[str]:
    return [text for request in server.requests for text in request]


def test_full_rebuild_writes_one_memory_per_exchange(new_db, history, server):
    report = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert (report.stats.exchanges, report.memories_written, report.pending) == (9, 9, 9)
    assert report.stats.unanswered_user_messages == 1 and report.provider_inputs == 9
    assert report.per_personality["alpha"].written == 6 and report.per_personality["alpha"].waiting == 1
    assert report.per_personality["beta"].contexts == 1
    rows = memory_rows(new_db)
    assert len(rows) == 9
    joined = next(r for r in rows if "wait" in r[0])
    content, message_ids, created_at, scope, summary_type, source, channel, guild, summarized, persona, _ = (
        joined
    )
    assert content == memory_content(["wait", "one more", "last one"], "here you go")
    assert len(message_ids) == 4 and created_at.timestamp() == T0.timestamp() + 103
    assert (scope, summary_type, source, channel, guild, summarized) == (
        "personal",
        "conversation",
        "tzurot-v3",
        "1000",
        "2000",
        False,
    )
    assert persona == history.persona_id
    stored = np.array(
        new_db.execute("SELECT embedding::text FROM memories WHERE content = %s", (content,))
        .fetchone()[0]
        .strip("[]")
        .split(","),
        dtype=np.float32,
    )
    assert np.allclose(stored, hash_embedding(content, 1536), atol=1e-6)
    ids = list(history.personalities.values())
    assert checks.every_exchange_has_one_memory(new_db, report.expected_ids, ids).passed
    assert checks.embeddings_present_with_right_dimensions(new_db, ids).passed
    assert checks.no_duplicate_memories(new_db, ids).passed


def test_personalities_are_paired_and_written_in_batches_of_history(new_db, history, server, monkeypatch):
    """A rebuild holds one batch of history at a time (whole personalities, about
    MESSAGES_PER_BATCH messages) and writes exactly what one pass over everything would."""
    from tinybot_migration.lib.memories import rebuild

    monkeypatch.setattr(rebuild, "MESSAGES_PER_BATCH", 5)  # alpha alone is more: never split
    read: list[int] = []
    load = rebuild.load_messages

    def load_and_count(conn, personality_ids):
        read.append(len(personality_ids))
        return load(conn, personality_ids)

    monkeypatch.setattr(rebuild, "load_messages", load_and_count)
    lines: list = []
    report = rebuild_memories(new_db, provider(server), ["alpha", "beta"], log=lines.append)
    assert read == [1, 1]
    assert any("batch 1 of 2" in str(line) for line in lines) and any(
        "batch 2 of 2" in str(line) for line in lines
    )
    assert (report.stats.exchanges, report.memories_written, report.pending) == (9, 9, 9)
    assert (report.per_personality["alpha"].written, report.per_personality["beta"].written) == (6, 3)
    assert len(report.expected_ids) == 9 and report.messages_read == 21
    ids = list(history.personalities.values())
    assert checks.every_exchange_has_one_memory(new_db, report.expected_ids, ids).passed
    assert set(report.newest_paired) == set(ids)
    again = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert again.memories_written == 0 and again.already_present == 9


def test_a_second_run_makes_zero_requests_and_writes_nothing(new_db, history, server):
    rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    server.requests.clear()
    again = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert server.requests == [] and again.memories_written == 0 and again.already_present == 9
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 9


def test_new_messages_embed_only_the_new_exchanges(new_db, history, server):
    rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    server.requests.clear()
    history.say("alpha", "assistant", "yes, still here", 201)  # answers the trailing message
    history.say("beta", "user", "a new question", 500, channel="3000")
    history.say("beta", "assistant", "a new answer", 501, channel="3000")
    report = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert sorted(sent_texts(server)) == sorted(
        [
            memory_content(["still there?"], "yes, still here"),
            memory_content(["a new question"], "a new answer"),
        ]
    )
    assert report.memories_written == 2 and report.already_present == 9
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 11


def test_a_memory_the_bot_wrote_in_the_same_format_is_not_duplicated(new_db, history, server):
    alpha = history.personality("alpha")
    content = memory_content(["alpha question 0 about gardens"], "alpha answer 0 about roses")
    new_db.execute(
        "INSERT INTO memories (id, persona_id, personality_id, content, embedding, created_at)"
        " VALUES (%s, %s, %s, %s, %s, now())",
        (
            memory_id(history.persona_id, alpha, content),
            history.persona_id,
            alpha,
            content,
            str(hash_embedding(content, 1536).tolist()),
        ),
    )
    report = rebuild_memories(new_db, provider(server), ["alpha"])
    assert report.already_present == 1 and report.memories_written == 5
    assert content not in sent_texts(server)
    assert checks.no_duplicate_memories(new_db, [alpha]).passed


def test_429_with_retry_after_and_500s_then_success(new_db, history, server):
    server.script(429, {"Retry-After": "0.2"})
    server.script(500, times=2)
    report = rebuild_memories(new_db, provider(server, max_concurrent_requests=1), ["alpha", "beta"])
    assert report.retries == 3 and report.requests == 4 and report.memories_written == 9


def test_a_provider_failing_for_good_keeps_finished_batches_and_the_next_run_completes(
    new_db, history, server
):
    slow = provider(server, max_inputs_per_request=2, max_concurrent_requests=1, max_retries=1)
    server.fail_after = 3  # chunk 1 = requests 1-2, chunk 2 = request 3 then failures
    with pytest.raises(EmbeddingProviderError, match=r"batch 2/2 .*failed after 2 attempt") as error:
        rebuild_memories(new_db, slow, ["alpha", "beta"], chunk_size=4)
    assert API_KEY not in str(error.value)
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 4
    assert new_db.execute("SELECT count(*) FROM tinybot_migration.embedding_cache").fetchone()[0] == 6
    server.fail_after = None
    server.requests.clear()
    report = rebuild_memories(new_db, slow, ["alpha", "beta"], chunk_size=4)
    assert report.already_present == 4 and report.memories_written == 5
    assert report.cache_hits == 2 and report.provider_inputs == 3 and len(sent_texts(server)) == 3
    assert new_db.execute("SELECT count(*), count(DISTINCT content) FROM memories").fetchone() == (9, 9)


def test_a_wrong_dimension_writes_nothing(new_db, history):
    with (
        OpenAITestServer(dimensions=768) as wrong,
        pytest.raises(EmbeddingDimensionError, match="768-dimensional"),
    ):
        rebuild_memories(new_db, provider(wrong), ["alpha", "beta"])
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
    assert new_db.execute("SELECT count(*) FROM tinybot_migration.embedding_cache").fetchone()[0] == 0


def test_one_refused_exchange_is_counted_and_the_rest_is_written(new_db, history, server):
    history.say("beta", "user", "POISON question", 600, channel="3000")
    history.say("beta", "assistant", "answer", 601, channel="3000")
    server.reject_marker = "POISON"
    report = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert report.rejected == 1 and report.memories_written == 9
    assert report.provider_inputs == 9  # the refused text was not embedded, so it is not counted
    assert "HTTP 400" in report.rejection_samples[0]
    ids = list(history.personalities.values())
    coverage = checks.every_exchange_has_one_memory(new_db, report.expected_ids, ids)
    assert not coverage.passed and coverage.metadata["missing_memories"] == 1


def test_empty_and_overlong_messages(new_db, history, server):
    history.say("beta", "user", "  ", 700, channel="3000")
    history.say("beta", "assistant", "reply to nothing", 701, channel="3000")
    long_question = "word " * 8000  # 40,000 bytes: over the per-input limit
    history.say("beta", "user", long_question, 800, channel="3000")
    history.say("beta", "assistant", "short answer", 801, channel="3000")
    report = rebuild_memories(new_db, provider(server), ["beta"])
    assert report.stats.empty_messages_skipped == 1 and report.stats.assistant_messages_without_user == 1
    assert report.texts_truncated == 1 and report.memories_written == 4
    sent = max(sent_texts(server), key=len)
    assert len(sent.encode()) <= 8192 * 2
    stored = new_db.execute("SELECT max(length(content)) FROM memories").fetchone()[0]
    assert stored == len(memory_content([long_question], "short answer"))


def test_checks_fail_on_corrupted_memories(new_db, history, server):
    report = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    ids = list(history.personalities.values())
    new_db.execute(
        "UPDATE memories SET embedding = NULL WHERE id = (SELECT id FROM memories ORDER BY id LIMIT 1)"
    )
    embeddings = checks.embeddings_present_with_right_dimensions(new_db, ids)
    assert not embeddings.passed and embeddings.metadata["without_embedding"] == 1
    new_db.execute(
        "INSERT INTO memories (id, persona_id, personality_id, content, created_at)"
        " SELECT gen_random_uuid(), persona_id, personality_id, content, created_at FROM memories LIMIT 1"
    )
    duplicates = checks.no_duplicate_memories(new_db, ids)
    assert not duplicates.passed and duplicates.metadata["extra_memories"] == 1
    new_db.execute("DELETE FROM memories WHERE content LIKE %s", ("%beta answer 1%",))
    coverage = checks.every_exchange_has_one_memory(new_db, report.expected_ids, ids)
    assert not coverage.passed and coverage.metadata["missing_memories"] == 1


def test_an_unknown_slug_is_named(new_db, history, server):
    with pytest.raises(UnknownPersonalityError, match="'gamma'"):
        rebuild_memories(new_db, provider(server), ["alpha", "gamma"])


def test_chunks_side_by_side_on_their_own_connections(new_db, history, server):
    url = new_db.info.dsn
    more = [f"{i}" for i in range(12)]
    for i in more:
        history.say("beta", "user", f"extra question {i}", 1000 + int(i) * 10, channel="3000")
        history.say("beta", "assistant", f"extra answer {i}", 1001 + int(i) * 10, channel="3000")
    parallel = provider(server, max_inputs_per_request=2, max_concurrent_requests=3)

    def connect():
        return psycopg.connect(url, autocommit=True)

    server.fail_after = 5  # five requests answered, every later one refused
    with pytest.raises(EmbeddingProviderError):
        rebuild_memories(new_db, parallel, ["alpha", "beta"], connect=connect)
    kept = new_db.execute("SELECT count(*) FROM memories").fetchone()[0]
    # Each answered request was a whole chunk of two, and every chunk that got its vectors was
    # written, even those still running when another chunk failed.
    assert kept == 10
    assert server.max_in_flight <= 3
    server.fail_after = None
    report = rebuild_memories(new_db, parallel, ["alpha", "beta"], connect=connect)
    assert report.already_present == kept and report.memories_written == 21 - kept
    assert report.provider_inputs + report.cache_hits == 21 - kept
    assert new_db.execute("SELECT count(*), count(DISTINCT content) FROM memories").fetchone() == (21, 21)


def test_the_same_exchange_twice_gives_one_memory_from_the_earlier(new_db, history, server):
    history.say("beta", "user", "same words", 900, channel="4000")
    history.say("beta", "assistant", "same reply", 901, channel="4000")
    history.say("beta", "user", "same words", 50, channel="5000", guild=None)  # earlier, in a DM
    history.say("beta", "assistant", "same reply", 51, channel="5000", guild=None)
    report = rebuild_memories(new_db, provider(server), ["beta"])
    assert report.duplicate_exchanges == 1 and report.memories_written == 4
    channel, guild = new_db.execute(
        "SELECT channel_id, guild_id FROM memories WHERE content = %s",
        (memory_content(["same words"], "same reply"),),
    ).fetchone()
    assert (channel, guild) == ("5000", None)
    assert checks.no_duplicate_memories(new_db, [history.personality("beta")]).passed


def test_legacy_memories_of_the_same_personalities_never_count_for_the_rebuild(new_db, history, server):
    """The checks and the present-ids look at source_system 'tzurot-v3' only."""
    report = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    ids = list(history.personalities.values())
    # Two legacy memories with the same text for one shapes user (a duplicate pair), no embedding.
    for _ in range(2):
        new_db.execute(
            "INSERT INTO memories (id, personality_id, content, created_at, source_system, legacy_shapes_user_id)"
            " VALUES (gen_random_uuid(), %s, 'an old shapes.inc memory', now(), 'shapes-inc',"
            " '00000000-0000-4000-8000-000000000001')",
            (history.personality("alpha"),),
        )
    assert checks.embeddings_present_with_right_dimensions(new_db, ids).passed
    assert checks.no_duplicate_memories(new_db, ids).passed
    assert checks.every_exchange_has_one_memory(new_db, report.expected_ids, ids).passed
    assert not checks.no_duplicate_memories(new_db, ids, source_system="shapes-inc").passed
    again = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert again.already_present == 9 and again.memories_written == 0


def test_dimensions_that_do_not_fit_the_column_are_refused_before_any_request(new_db, history):
    with OpenAITestServer(dimensions=768) as server:
        asked = provider(server, dimensions=768)
        with pytest.raises(EmbeddingDimensionError) as refusal:
            rebuild_memories(new_db, asked, ["alpha", "beta"])
        assert server.requests == []
    message = str(refusal.value)
    assert "text-embedding-3-small" in message and "768 dimensions" in message and "vector(1536)" in message
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0


@pytest.mark.parametrize("fault", ["nan", "zero"])
def test_nan_or_zero_vectors_fail_before_any_write_with_a_clear_error(new_db, history, server, fault):
    server.vector_fault = fault
    with pytest.raises(EmbeddingResponseError, match="openai provider \\(text-embedding-3-small\\)"):
        rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
    assert new_db.execute("SELECT count(*) FROM tinybot_migration.embedding_cache").fetchone()[0] == 0


def test_zero_vectors_already_stored_fail_the_check_until_purged(new_db, history, server):
    from tinybot_migration.lib.embeddings.cache import purge_zero_vectors
    from tinybot_migration.lib.memories.writer import delete_memories_with_zero_vectors

    rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    ids = list(history.personalities.values())
    # What a provider answering zeros left behind before vectors were checked.
    new_db.execute(
        "UPDATE memories SET embedding = array_fill(0, ARRAY[1536])::vector WHERE content LIKE '%beta%'"
    )
    new_db.execute(
        "UPDATE tinybot_migration.embedding_cache SET embedding = array_fill(0, ARRAY[1536])::vector"
    )
    check = checks.embeddings_present_with_right_dimensions(new_db, ids, cache_model="text-embedding-3-small")
    assert not check.passed
    assert check.metadata["zero_vectors"] == 3 and check.metadata["zero_vectors_in_cache"] == 9
    assert "purge-bad-embeddings" in check.description

    assert purge_zero_vectors(new_db) == 9 and delete_memories_with_zero_vectors(new_db) == {"tzurot-v3": 3}
    server.requests.clear()
    again = rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert again.memories_written == 3 and again.provider_inputs == 3
    assert checks.embeddings_present_with_right_dimensions(
        new_db, ids, cache_model="text-embedding-3-small"
    ).passed


def test_a_provider_refusing_everything_stops_the_rebuild_at_once(new_db, history, server):
    server.fail_always = 400
    with pytest.raises(EmbeddingRefusedError, match="refuses every request") as refusal:
        rebuild_memories(new_db, provider(server), ["alpha", "beta"])
    assert not refusal.value.retryable and len(server.requests) == 2  # the batch and one probe
    assert new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0


def fill(conversations: Conversations) -> None:
    conversations.exchanges("alpha", 4)
    conversations.say("alpha", "user", "and again", 100)
    conversations.say("alpha", "assistant", "alpha answer 0 about roses", 101)  # a repeated answer


def test_an_estimate_before_the_first_migration_pairs_the_old_history_and_touches_nothing(
    make_database, admin_connect, server
):
    old_url, new_url = make_database("dry_old"), make_database("dry_new")
    old = admin_connect(old_url)
    apply_old_schema(old)
    fill(Conversations(old))
    database = NewDatabaseResource(url=new_url)
    with database.connect_read_only() as conn:
        estimate = estimate_rebuild(conn, OldDatabaseResource(url=old_url).connect, provider(server), None)
    assert server.requests == [] and estimate.history_from == "old database"
    assert (estimate.pending, estimate.estimate.texts, estimate.estimate.cache_hits) == (5, 5, 0)
    with admin_connect(new_url) as new:
        assert new.execute("SELECT to_regclass('memories')").fetchone()[0] is None  # no schema applied

    # The same history in the new DB: the real run embeds exactly what the estimate announced.
    with database.connect() as conn:
        fill(Conversations(conn))
        report = rebuild_memories(conn, provider(server), ["alpha"])
    assert report.provider_inputs == estimate.estimate.texts and report.tokens == estimate.estimate.tokens
    with database.connect_read_only() as conn:
        after = estimate_rebuild(conn, OldDatabaseResource(url=old_url).connect, provider(server), conn)
    assert after.history_from == "new database" and after.estimate.texts == 0 and after.pending == 0
