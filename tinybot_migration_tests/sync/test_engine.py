"""The sync engine on two real databases of the embedded server, DEV and PROD, that diverged."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tinybot_migration.lib.ids import deterministic_uuid, personality_seed
from tinybot_migration.lib.new_database_schema import PROJECT_SCHEMA_VERSION as SCHEMA_VERSION
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration.lib.sync.engine import SyncOptions, sync_tables
from tinybot_migration.lib.sync.precheck import SideFacts, SyncPrecheckError, precheck, side_facts
from tinybot_migration.lib.sync.progress import SyncProgress
from tinybot_migration_tests.helpers.conversations import T0, Conversations
from tinybot_migration_tests.helpers.sync_digests import digests

SHARED_MEMORY = uuid.UUID("00000000-0000-4000-8000-000000000001")
DEV_MEMORY = uuid.UUID("00000000-0000-4000-8000-000000000002")
GAMMA_ON_PROD = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


def memory(conn, memory_id, talk: Conversations, slug: str, content: str, fill: float) -> None:
    conn.execute(
        "INSERT INTO memories (id, persona_id, personality_id, content, embedding, created_at)"
        " VALUES (%s, %s, %s, %s, array_fill(%s::real, ARRAY[1536])::vector, %s)",
        (memory_id, talk.persona_id, talk.personality(slug), content, fill, T0),
    )


def base(conn) -> Conversations:
    """What both sides share: one user, persona, personality and its history and memory."""
    apply_new_schema(conn)
    talk = Conversations(conn)
    for i, at in enumerate((0, 1)):
        talk.say("alpha", ("user", "assistant")[i], f"shared {i}", at, message_id=uuid.UUID(int=100 + i))
    memory(conn, SHARED_MEMORY, talk, "alpha", "shared memory", 0.1)
    return talk


@pytest.fixture
def dev_prod(make_database, admin_connect):
    dev, prod = admin_connect(make_database("sync_dev")), admin_connect(make_database("sync_prod"))
    dev_talk = base(dev)
    base(prod)
    # Only on DEV: a personality with its history, a memory, cached embeddings.
    dev_talk.exchanges("beta", 3)
    memory(dev, DEV_MEMORY, dev_talk, "beta", "dev memory", 0.2)
    dev.execute(
        "INSERT INTO tinybot_migration.embedding_cache (model, dimensions, text_hash, embedding)"
        " SELECT 'm', 1536, lpad(i::text, 32, '0'), array_fill(i::real, ARRAY[1536])::vector"
        " FROM generate_series(1, 40) i"
    )
    # Only on PROD: a user.
    prod.execute("INSERT INTO users VALUES (gen_random_uuid(), '200', 'prod only', %s, %s)", (T0, T0))
    # Newer on each side: DEV renamed the user, PROD rewrote the persona.
    dev.execute("UPDATE users SET username = 'renamed on dev', updated_at = %s", (T0 + timedelta(days=1),))
    prod.execute(
        "UPDATE personas SET content = 'rewritten on prod', updated_at = %s", (T0 + timedelta(days=2),)
    )
    # A memory whose content differs on the two sides.
    for conn, text in ((dev, "dev's version"), (prod, "prod's version")):
        conn.execute("UPDATE memories SET content = %s WHERE id = %s", (text, SHARED_MEMORY))
    # The same slug under two ids: gamma's id on PROD is not its seed's.
    dev_talk.exchanges("gamma", 2)
    prod.execute(
        "INSERT INTO personalities (id, name, slug, character_info, personality_traits, created_at, updated_at)"
        " VALUES (%s, 'Gamma', 'gamma', 'x', 'y', %s, %s)",
        (GAMMA_ON_PROD, T0, T0),
    )
    return dev, prod


def by_table(results):
    return {r.table: r for r in results}


def test_dev_to_prod_then_back_converges_where_nothing_conflicts(dev_prod):
    dev, prod = dev_prod
    prod_before = digests(prod)
    dry = by_table(sync_tables(dev, prod, SyncOptions(dry_run=True)))
    assert digests(prod) == prod_before  # the dry run wrote nothing

    results = by_table(sync_tables(dev, prod, SyncOptions(batch_bytes=20_000)))
    for name, result in results.items():  # the dry run announced exactly what was done
        planned = dry[name]
        assert (planned.inserted, planned.updated, planned.unchanged, planned.conflict_count) == (
            result.inserted,
            result.updated,
            result.unchanged,
            result.conflict_count,
        ), name

    assert results["users"].updated == 1 and results["users"].only_on_target == 1
    assert results["personas"].target_newer == 1 and results["personas"].updated == 0
    [slug] = results["personalities"].conflicts
    gamma_on_dev = deterministic_uuid(personality_seed("gamma"))
    assert slug.key == (gamma_on_dev,) and slug.target_key == (GAMMA_ON_PROD,) and "slug=gamma" in slug.reason
    assert results["personalities"].inserted == 1  # beta
    history = results["conversation_history"]
    assert history.inserted == 6 and history.conflict_count == 4  # gamma's 4 messages wait for their parent
    assert all("personality_id" in c.reason for c in history.conflicts)
    [content] = results["memories"].conflicts
    assert content.key == (SHARED_MEMORY,) and content.reason == "content differs on the two sides"
    assert results["memories"].inserted == 1
    assert results["embedding_cache"].inserted == 40
    assert results["embedding_cache"].chunks > 1  # 40 vectors of 6 kB in chunks of 20 kB

    # Every row of DEV that did not conflict is now the same on PROD; vectors byte for byte.
    dev_rows, prod_rows = digests(dev), digests(prod)
    skipped = {(r.table, c.key) for r in results.values() for c in r.conflicts}
    newer = {("personas", k) for k in dev_rows["personas"]}  # PROD's persona is newer
    for name, rows in dev_rows.items():
        for key, digest in rows.items():
            if (name, key) not in skipped | newer:
                assert prod_rows[name].get(key) == digest, (name, key)

    again = by_table(sync_tables(dev, prod, SyncOptions()))
    assert sum(r.inserted + r.updated for r in again.values()) == 0  # a re-run changes nothing

    back = by_table(sync_tables(prod, dev, SyncOptions()))
    assert back["users"].inserted == 1 and back["personas"].updated == 1
    with dev.cursor() as cur:
        assert cur.execute("SELECT content FROM personas").fetchone()[0] == "rewritten on prod"
        assert cur.execute("SELECT content FROM memories WHERE id = %s", (SHARED_MEMORY,)).fetchone()[0] == (
            "dev's version"
        )  # a conflict is left alone unless prefer=source


def test_prefer_source_overwrites_a_conflicting_memory(dev_prod):
    dev, prod = dev_prod
    results = by_table(sync_tables(dev, prod, SyncOptions(prefer="source")))
    assert results["memories"].conflict_count == 0 and results["memories"].updated == 1
    content = prod.execute("SELECT content FROM memories WHERE id = %s", (SHARED_MEMORY,)).fetchone()[0]
    assert content == "dev's version"


def test_a_sync_stopped_after_a_chunk_and_run_again_ends_as_an_uninterrupted_one(
    dev_prod, make_database, admin_connect
):
    dev, prod = dev_prod
    reference = admin_connect(make_database("sync_reference"))
    base(reference)
    # The reference starts as PROD (a sync that prefers PROD's content), then gets DEV in one go.
    sync_tables(prod, reference, SyncOptions(prefer="source"))
    assert digests(reference) == digests(prod)
    sync_tables(dev, reference, SyncOptions())

    def stop_after_first_chunk(line: str) -> None:
        if "chunk 1:" in line:
            raise KeyboardInterrupt  # as a kill would, right after a chunk committed

    with pytest.raises(KeyboardInterrupt):
        sync_tables(dev, prod, SyncOptions(batch_bytes=1), progress=SyncProgress(stop_after_first_chunk))
    sync_tables(dev, prod, SyncOptions(batch_bytes=1))
    assert digests(prod) == digests(reference)


def test_the_precheck_names_the_side_that_differs(make_database, admin_connect):
    a, b = admin_connect(make_database("pre_a")), admin_connect(make_database("pre_b"))
    apply_new_schema(a)
    apply_new_schema(b)
    source, target = side_facts(a, "source (dev)", "dev-url"), side_facts(b, "target (prod)", "prod-url")
    precheck(source, target)  # the same: nothing to say

    b.execute("INSERT INTO tinybot_migration.schema_steps (version, description) VALUES (99, 'later')")
    b.execute("ALTER TABLE memories ALTER COLUMN embedding TYPE vector(3) USING NULL")
    b.execute(  # the bot moved on there: the sync's table descriptions no longer hold for it
        "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)"
        " VALUES (gen_random_uuid(), 'abc', now(), '20251201000000_later', 1)"
    )
    with pytest.raises(SyncPrecheckError) as raised:
        precheck(source, side_facts(b, "target (prod)", "prod-url"))
    message = str(raised.value)
    assert f"schema versions differ: source (dev) {SCHEMA_VERSION}, target (prod) 99" in message
    assert "bring the source (dev) dev-url up to date" in message
    assert "vector(1536), target (prod) vector(3)" in message
    assert "target (prod) prod-url is not at the bot's schema version" in message
    assert "later migration(s) are applied (20251201000000_later)" in message
    assert "source (dev) dev-url is not" not in message

    old_vector = SideFacts("target (prod)", "prod-url", SCHEMA_VERSION, (), 1536, "0.8.1")
    with pytest.raises(SyncPrecheckError, match=r"target \(prod\) prod-url has pgvector 0.8.1"):
        precheck(source, old_vector)
    with pytest.raises(SyncPrecheckError, match="has no tinybot schema"):
        precheck(source, side_facts(admin_connect(make_database("pre_empty")), "target (prod)", "prod-url"))


def test_two_personalities_that_swapped_slugs_are_conflicts_with_both_ids(make_database, admin_connect):
    dev, prod = admin_connect(make_database("swap_dev")), admin_connect(make_database("swap_prod"))
    for conn in (dev, prod):
        talk = base(conn)
        talk.personality("beta")
    ids = dict(dev.execute("SELECT slug, id FROM personalities").fetchall())
    # DEV swaps the two slugs later than PROD last touched them (via a free slug, as the constraint wants).
    later = T0 + timedelta(days=3)
    for slug, temporary in (("alpha", "tmp"), ("beta", "alpha"), ("tmp", "beta")):
        dev.execute(
            "UPDATE personalities SET slug = %s, updated_at = %s WHERE slug = %s", (temporary, later, slug)
        )
    results = by_table(sync_tables(dev, prod, SyncOptions()))
    personalities = results["personalities"]
    assert personalities.updated == 0 and personalities.conflict_count == 2
    reported = {(c.key, c.target_key) for c in personalities.conflicts}
    assert reported == {((ids["alpha"],), (ids["beta"],)), ((ids["beta"],), (ids["alpha"],))}
    assert dict(prod.execute("SELECT slug, id FROM personalities").fetchall()) == ids
