"""One outcome per landed Qdrant point: each outcome and reason from one planted point, the
Qdrant-only memories imported once through the memory pipeline, a re-run that changes nothing and
asks the provider nothing, partitions deciding only their personality's points, and the check
shown able to fail.

The world: an old DB (two users, personas and personalities, two conversations) copied by the
relational assets; memories rebuilt from its history; a shapes.inc export of one personality
imported; then a local-mode store written the way the bot's writers wrote it, landed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from dagster import instance_for_test, materialize
from qdrant_client import QdrantClient, models

from tinybot_migration.defs.cutover.assets import cutover_is_safe
from tinybot_migration.defs.partitions import personality_partitions
from tinybot_migration.defs.qdrant.assets import qdrant_point_outcomes
from tinybot_migration.defs.relational.assets import relational_assets
from tinybot_migration.defs.resources import NewDatabaseResource, OldDatabaseResource, ShapesExportResource
from tinybot_migration.lib.cutover import CutoverReport, FailedCheck, cutover_report, evidence_lines
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.ids import deterministic_uuid, legacy_memory_id, memory_id, personality_seed
from tinybot_migration.lib.memories.rebuild import rebuild_memories
from tinybot_migration.lib.new_database_schema import apply_new_schema, apply_old_schema
from tinybot_migration.lib.personalities import personality_ids_for
from tinybot_migration.lib.qdrant.checks import (
    every_qdrant_point_has_one_outcome,
    retrieval_parity_nothing_missing,
)
from tinybot_migration.lib.qdrant.landing import land_qdrant
from tinybot_migration.lib.qdrant.outcomes import SOURCE_QDRANT, decide_qdrant_points
from tinybot_migration.lib.qdrant.parity import FOUND, MISSING, measure_parity
from tinybot_migration.lib.shapes.importer import import_shapes_memories
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for, provider_for
from tinybot_migration_tests.helpers.shapes_exports import ShapesExport, record

T0 = datetime(2025, 6, 1, 12, 0)
OLD = {name: str(uuid.uuid4()) for name in ("alice", "bob", "p_alice", "p_bob", "luna", "sol")}
SHAPES_MAPPED = str(uuid.UUID(int=0x51, version=4))  # maps to alice's discord id
SHAPES_UNMAPPED = str(uuid.UUID(int=0x52, version=4))
CHANNEL = "555000000000000001"
UNKNOWN = str(uuid.uuid4())


def ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def vector(text: str) -> list[float]:
    return hash_embedding(text, 1536).astype(np.float32).tolist()


# --- the old DB and the migration -------------------------------------------------------------------


def write_old_database(conn: psycopg.Connection) -> None:
    apply_old_schema(conn)
    for user, discord in (("alice", "100"), ("bob", "200")):
        conn.execute("INSERT INTO users VALUES (%s, %s, %s, %s, %s)", (OLD[user], discord, user, T0, T0))
    for persona, owner, name, preferred in (
        ("p_alice", "alice", "Alice", "Ali"),
        ("p_bob", "bob", "Bob", None),
    ):
        conn.execute(
            "INSERT INTO personas (id, name, content, preferred_name, owner_id, created_at, updated_at)"
            " VALUES (%s, %s, 'x', %s, %s, %s, %s)",
            (OLD[persona], name, preferred, OLD[owner], T0, T0),
        )
        conn.execute("INSERT INTO user_default_personas VALUES (%s, %s, %s)", (OLD[owner], OLD[persona], T0))
    for slug in ("luna", "sol"):
        conn.execute(
            "INSERT INTO personalities (id, name, slug, character_info, personality_traits, created_at,"
            " updated_at) VALUES (%s, %s, %s, 'c', 't', %s, %s)",
            (OLD[slug], slug.title(), slug, T0, T0),
        )
    messages = [
        ("luna", "p_alice", "user", "hi luna", 0),
        ("luna", "p_alice", "assistant", "hello alice", 2),
        ("luna", "p_alice", "user", "how are you", 60),
        ("luna", "p_alice", "assistant", "fine thanks", 62),
        ("sol", "p_bob", "user", "yo sol", 100),
        ("sol", "p_bob", "assistant", "hey bob", 101),
    ]
    for slug, persona, role, content, seconds in messages:
        conn.execute(
            "INSERT INTO conversation_history (id, channel_id, personality_id, persona_id, role, content,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (uuid.uuid4(), CHANNEL, OLD[slug], OLD[persona], role, content, T0 + timedelta(seconds=seconds)),
        )


def answer_time(seconds: int) -> int:
    return ms(T0 + timedelta(seconds=seconds))


# --- the store, as the bot's writers left it -----------------------------------------------------------


def live(text: str, slug: str = "luna", persona: str = "p_alice", at: int | None = None, **extra) -> dict:
    payload = {
        "content": text,
        "personaId": OLD[persona],
        "personalityId": OLD[slug],
        "personalityName": slug.title(),
        "createdAt": at if at is not None else answer_time(30),
        "channelId": CHANNEL,
        "canonScope": "personal",
        "summaryType": "conversation",
    }
    return payload | extra


def shapes_payload(text: str, persona_id: str, seconds: float) -> dict:
    created = T0.replace(tzinfo=UTC).timestamp() - 86_400 + seconds
    return {
        "content": text,
        "personaId": persona_id,
        "personalityId": OLD["luna"],
        "personalityName": "Luna",
        "createdAt": int(created * 1000),
        "channelId": "111111111111111111",
        "guildId": "",
        "canonScope": "personal" if not persona_id.startswith("legacy-") else "legacy",
        "summaryType": "automatic",
    }


ALICE, LEGACY, OLD_LUNA = (
    f"persona-{OLD['p_alice']}",
    f"persona-legacy-{SHAPES_UNMAPPED}",
    f"personality-{OLD['luna']}",
)
FIRST_LIVE = str(uuid.UUID(int=1, version=4))

# point -> (collection, payload, vector or None for the content's embedding, expected outcome, reason part)
PLANTED: dict[str, tuple] = {
    "live_exact": (ALICE, live("Ali: hi luna\nLuna: hello alice", at=answer_time(2)), None, "matched", None),
    "live_late_era_1": (
        ALICE,
        live("User (alice): how are you\nLuna: fine thanks", at=answer_time(62) + 12_345, userId="100"),
        None,
        "matched",
        None,
    ),
    "retry": (
        ALICE,
        live("Ali: hi luna\nLuna: hello alice", at=answer_time(2) + 3_000),
        None,
        "duplicate",
        "same memory as",
    ),
    "qdrant_only": (ALICE, live("Ali: tell me\nLuna: something only qdrant has"), None, "imported", None),
    "shapes_mapped": (ALICE, shapes_payload("shapes memory one", OLD["p_alice"], 1), None, "matched", None),
    "shapes_deleted": (
        ALICE,
        shapes_payload("a deleted memory", OLD["p_alice"], 2),
        None,
        "superseded",
        "deleted in the shapes.inc export",
    ),
    "shapes_legacy": (
        LEGACY,
        shapes_payload("legacy memory", f"legacy-{SHAPES_UNMAPPED}", 3),
        None,
        "matched",
        None,
    ),
    "legacy_missing_from_export": (
        LEGACY,
        shapes_payload("legacy only in qdrant", f"legacy-{SHAPES_UNMAPPED}", 4),
        None,
        "imported",
        None,
    ),
    "old_layout_refusal": (
        OLD_LUNA,
        live("I cannot generate that kind of thing.\nLuna: sorry", userId="100"),
        None,
        "superseded",
        "refusal spam",
    ),
    "old_layout_no_user_id": (
        OLD_LUNA,
        live("Ali: older\nLuna: no user id here"),
        None,
        "superseded",
        "no userId",
    ),
    "old_layout_only": (
        OLD_LUNA,
        live("Ali: old\nLuna: only in the old layout", userId="100"),
        None,
        "imported",
        None,
    ),
    "seconds": (
        ALICE,
        live("Ali: when\nLuna: in seconds", at=answer_time(30) // 1000),
        None,
        "imported",
        "in seconds",
    ),
    "zero_vector": (ALICE, live("Ali: zero\nLuna: zero"), [0.0] * 1536, "rejected", "zero vector"),
    "content_missing": (
        ALICE,
        {k: v for k, v in live("x").items() if k != "content"},
        None,
        "rejected",
        "content missing",
    ),
    "content_not_text": (ALICE, live("x") | {"content": 12345}, None, "rejected", "content is int"),
    "content_empty": (ALICE, live("x") | {"content": "  "}, None, "rejected", "content empty"),
    "created_at_missing": (
        ALICE,
        {k: v for k, v in live("Ali: a\nLuna: b").items() if k != "createdAt"},
        None,
        "rejected",
        "createdAt missing",
    ),
    "created_at_absurd": (ALICE, live("Ali: c\nLuna: d", at=32_503_680_000_000), None, "rejected", "absurd"),
    "unknown_personality": (
        ALICE,
        live("Ali: e\nLuna: f") | {"personalityId": UNKNOWN},
        None,
        "rejected",
        "unknown personality",
    ),
    "personality_not_uuid": (
        ALICE,
        live("Ali: g\nLuna: h") | {"personalityId": "not-a-uuid"},
        None,
        "rejected",
        "unknown personality",
    ),
    "unknown_persona": (
        f"persona-{UNKNOWN}",
        live("Ali: i\nLuna: j") | {"personaId": UNKNOWN},
        None,
        "rejected",
        "unknown persona",
    ),
    "wrong_size": (
        "persona-legacy-wrongsize",
        live("Ali: k\nLuna: l"),
        [0.6, 0.8, 0.0],
        "rejected",
        "3 dimensions",
    ),
    "foreign_collection": (
        "somebody-elses",
        live("Ali: m\nLuna: n"),
        None,
        "rejected",
        "not a collection the bot wrote",
    ),
    "sol_live": (
        f"persona-{OLD['p_bob']}",
        live("Bob: yo sol\nSol: hey bob", "sol", "p_bob", answer_time(101)),
        None,
        "matched",
        None,
    ),
}
POINT_IDS = {name: str(uuid.UUID(int=i + 1, version=4)) for i, name in enumerate(PLANTED)}
COPY_OF_FIRST = "old_layout_copy"


def write_store(path) -> None:
    client = QdrantClient(path=str(path))
    by_collection: dict[str, list] = {}
    for name, (collection, payload, given, _, _) in PLANTED.items():
        point_vector = (
            given
            if given is not None
            else vector(payload.get("content") if isinstance(payload.get("content"), str) else name)
        )
        by_collection.setdefault(collection, []).append(
            models.PointStruct(id=POINT_IDS[name], vector=point_vector, payload=payload)
        )
    first = PLANTED["live_exact"]
    by_collection[OLD_LUNA].append(
        models.PointStruct(
            id=POINT_IDS["live_exact"],
            vector=vector(first[1]["content"]),
            payload=first[1] | {"userId": "100"},
        )
    )
    for collection, points in by_collection.items():
        size = len(points[0].vector)
        client.create_collection(
            collection, vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE)
        )
        client.upsert(collection, points)
    client.close()


@pytest.fixture(scope="module")
def server():
    with OpenAITestServer() as test_server:
        yield test_server


@pytest.fixture
def world(make_database, tmp_path, server):
    """(new DB connection, old DB url, export folder): migrated, memories rebuilt and imported, store landed."""
    old_url = make_database("qdrant_old")
    with psycopg.connect(old_url, autocommit=True) as old:
        write_old_database(old)
    new_url = make_database("qdrant_new")
    conn = psycopg.connect(new_url, autocommit=True)
    apply_new_schema(conn)
    with instance_for_test() as instance:
        copied = materialize(
            relational_assets,
            resources={
                "old_database": OldDatabaseResource(url=old_url),
                "new_database": NewDatabaseResource(url=new_url),
            },
            instance=instance,
        )
    assert copied.success
    client = client_for(server)
    rebuild_memories(conn, client, ["luna", "sol"])
    export = ShapesExport(tmp_path / "export", conn)
    export.map(SHAPES_MAPPED, "100")
    export.write(
        "luna",
        [
            record([SHAPES_MAPPED], "shapes memory one", seconds=-86_400 + 1),
            record([SHAPES_MAPPED], "a deleted memory", seconds=-86_400 + 2, deleted=True, record_id="d1/d2"),
            record([SHAPES_UNMAPPED], "legacy memory", seconds=-86_400 + 3, record_id="l1/l2"),
        ],
    )
    import_shapes_memories(conn, client, export.folder, personality_ids_for(conn, ["luna"]))
    write_store(tmp_path / "store")
    store = QdrantClient(path=str(tmp_path / "store"))
    land_qdrant(store, conn)
    store.close()
    yield conn, old_url, export.folder, tmp_path / "store"
    conn.close()


def decide(world, server, slugs=("luna", "sol")):
    conn, old_url, folder, _ = world
    with psycopg.connect(old_url) as old:
        return decide_qdrant_points(
            conn, old, client_for(server), personality_ids_for(conn, list(slugs)), folder
        )


def outcomes(conn) -> dict[str, tuple]:
    names = {v: k for k, v in POINT_IDS.items()}
    rows = conn.execute(
        "SELECT collection, point_id, outcome, reason, memory_id FROM tinybot_migration.qdrant_points"
    ).fetchall()
    found = {}
    for collection, point_id, outcome, reason, memory in rows:
        name = (
            COPY_OF_FIRST if collection == OLD_LUNA and names[point_id] == "live_exact" else names[point_id]
        )
        found[name] = (outcome, reason, memory)
    return found


def ids_of(conn) -> dict[str, uuid.UUID]:
    return dict(conn.execute("SELECT slug, id FROM personalities").fetchall()) | dict(
        conn.execute("SELECT name, id FROM personas").fetchall()
    )


def test_every_planted_point_gets_its_outcome_and_reason(world, server):
    conn = world[0]
    report = decide(world, server)
    found = outcomes(conn)
    for name, (_, _, _, outcome, reason) in PLANTED.items():
        assert found[name][0] == outcome, (name, found[name])
        if reason is not None:
            assert reason in (found[name][1] or ""), (name, found[name])
    copy = found[COPY_OF_FIRST]
    assert copy[0] == "duplicate" and "copy of" in copy[1] and copy[2] == found["live_exact"][2]
    assert found["retry"][2] == found["live_exact"][2]
    assert report.counts["rejected"] == sum(p[3] == "rejected" for p in PLANTED.values())
    assert sum(report.counts.values()) == len(PLANTED) + 1
    check = every_qdrant_point_has_one_outcome(conn, report.refs)
    assert check.passed, check.description


def test_matched_points_name_the_memory_that_holds_them(world, server):
    conn = world[0]
    decide(world, server)
    found, ids = outcomes(conn), ids_of(conn)
    rows = dict(conn.execute("SELECT id, content FROM memories").fetchall())
    assert rows[found["live_exact"][2]] == "{user}: hi luna\n{assistant}: hello alice"
    assert rows[found["live_late_era_1"][2]] == "{user}: how are you\n{assistant}: fine thanks"
    assert found["shapes_mapped"][2] == legacy_memory_id(SHAPES_MAPPED, ids["luna"], "shapes memory one")
    assert found["shapes_legacy"][2] == legacy_memory_id(SHAPES_UNMAPPED, ids["luna"], "legacy memory")
    assert rows[found["sol_live"][2]] == "{user}: yo sol\n{assistant}: hey bob"
    standing = conn.execute(
        "SELECT persona_id, personality_id FROM tinybot_migration.qdrant_points WHERE collection = %s AND point_id = %s",
        (ALICE, POINT_IDS["live_exact"]),
    ).fetchone()
    assert standing == (ids["Alice"], ids["luna"])  # what the point stands for, recorded with its outcome


def test_qdrant_only_memories_are_imported_once_with_the_bots_ids_and_fields(world, server):
    conn = world[0]
    report = decide(world, server)
    found, ids = outcomes(conn), ids_of(conn)
    luna, alice = ids["luna"], ids["Alice"]
    only = PLANTED["qdrant_only"][1]
    assert found["qdrant_only"][2] == memory_id(alice, luna, only["content"])
    assert found["legacy_missing_from_export"][2] == legacy_memory_id(
        SHAPES_UNMAPPED, luna, "legacy only in qdrant"
    )
    imported = conn.execute(
        "SELECT id, persona_id, legacy_shapes_user_id, created_at, channel_id, guild_id, canon_scope, is_summarized,"
        " source_system FROM memories WHERE source_system = %s ORDER BY created_at",
        (SOURCE_QDRANT,),
    ).fetchall()
    assert len(imported) == report.memories_written == sum(o[0] == "imported" for o in found.values()) == 4
    by_id = {row[0]: row for row in imported}
    row = by_id[found["qdrant_only"][2]]
    assert (
        row[1] == alice and row[2] is None and row[4] == CHANNEL and row[6] == "personal" and row[7] is False
    )
    assert ms(row[3]) == only["createdAt"]
    legacy = by_id[found["legacy_missing_from_export"][2]]
    assert legacy[1] is None and str(legacy[2]) == SHAPES_UNMAPPED and legacy[5] is None and legacy[7] is True
    seconds = by_id[found["seconds"][2]]
    assert ms(seconds[3]) == PLANTED["seconds"][1]["createdAt"] * 1000
    stored = conn.execute(
        "SELECT embedding::text FROM memories WHERE id = %s", (found["qdrant_only"][2],)
    ).fetchone()[0]
    assert np.allclose(json.loads(stored), vector(only["content"]), atol=1e-6)


def test_a_rerun_decides_the_same_writes_nothing_and_asks_the_provider_nothing(world, server):
    conn = world[0]
    decide(world, server)
    before = outcomes(conn)
    memories = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    requests = len(server.requests)
    again = decide(world, server)
    assert outcomes(conn) == before
    assert again.rows_changed == 0 and again.memories_written == 0 and again.provider_inputs == 0
    assert again.already_present == 4
    assert len(server.requests) == requests
    assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == memories


def test_a_partition_decides_its_personalitys_points_and_those_of_none(world, server):
    conn = world[0]
    decide(world, server, slugs=("sol",))
    found = outcomes(conn)
    assert found["sol_live"][0] == "matched"
    assert found["unknown_personality"][0] == "rejected"  # no known personality: every run decides it
    assert found["qdrant_only"][0] is None and found["live_exact"][0] is None


def test_the_check_fails_naming_a_point_whose_memory_is_gone_or_that_has_no_outcome(world, server):
    conn = world[0]
    report = decide(world, server)
    gone = outcomes(conn)["qdrant_only"][2]
    conn.execute("DELETE FROM memories WHERE id = %s", (gone,))
    conn.execute(
        "UPDATE tinybot_migration.qdrant_points SET outcome = NULL WHERE point_id = %s AND collection = %s",
        (POINT_IDS["zero_vector"], ALICE),
    )
    check = every_qdrant_point_has_one_outcome(conn, report.refs)
    assert not check.passed
    assert f"{ALICE}/{POINT_IDS['qdrant_only']}: its memory {gone} does not exist" in check.description
    assert f"{ALICE}/{POINT_IDS['zero_vector']}: no outcome" in check.description


def test_the_asset_decides_a_range_of_partitions_with_its_blocking_check(world, server):
    conn, old_url, folder, _ = world
    url = conn.info.dsn
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(personality_partitions.name, ["luna", "sol"])
        result = materialize(
            [qdrant_point_outcomes],
            instance=instance,
            resources={
                "new_database": NewDatabaseResource(url=url),
                "old_database": OldDatabaseResource(url=old_url),
                "embedding_provider": provider_for(server),
                "shapes_export_folder": ShapesExportResource(path=str(folder)),
            },
            tags={"dagster/asset_partition_range_start": "luna", "dagster/asset_partition_range_end": "sol"},
        )
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.check_name == "every_qdrant_point_has_one_outcome"
    metadata = {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node("qdrant_point_outcomes")[-1].metadata.items()
    }
    assert metadata["points_imported"] == 4 and metadata["points"] == len(PLANTED) + 1
    assert deterministic_uuid(personality_seed("luna")) == ids_of(conn)["luna"]


def test_retrieval_parity_is_the_same_from_qdrant_and_from_the_landing_and_nothing_is_missing(world, server):
    conn, _, _, store = world
    decide(world, server)
    landed = measure_parity(conn)
    client = QdrantClient(path=str(store))
    try:
        searched = measure_parity(conn, client)
    finally:
        client.close()
    assert (landed.qdrant_answered_by, searched.qdrant_answered_by) == ("landed vectors", "qdrant")
    assert landed.queries == searched.queries > 0
    assert {b: r.counts for b, r in landed.buckets.items()} == {
        b: r.counts for b, r in searched.buckets.items()
    }
    assert landed.total(FOUND) > 0 and landed.total(MISSING) == 0
    assert retrieval_parity_nothing_missing(landed).passed


def test_retrieval_parity_names_a_hit_whose_memory_was_removed_by_hand(world, server):
    conn = world[0]
    decide(world, server)
    conn.execute(
        "DELETE FROM memories WHERE id IN (SELECT memory_id FROM tinybot_migration.qdrant_points"
        " WHERE collection = %s AND outcome IN ('matched', 'imported'))",
        (ALICE,),
    )
    parity = measure_parity(conn)
    check = retrieval_parity_nothing_missing(parity)
    assert parity.total(MISSING) > 0 and not check.passed
    assert f"hit {ALICE}/" in check.description and "is missing" in check.description


def test_the_cutover_report_is_go_then_names_a_removed_memory_a_new_point_and_a_failed_check(world, server):
    conn, _, _, store = world
    decide(world, server)
    conn.execute("CREATE INDEX idx_memories_embedding ON memories USING hnsw (embedding vector_cosine_ops)")
    report = cutover_report(conn, None, [], qdrant_configured=True)
    assert report.go, report.blockers
    assert report.outcomes["imported"] == 4 and report.parity is not None and report.parity.queries > 0
    assert any(p.persona == "Alice" and p.personality == "luna" for p in report.pairs)

    gone = outcomes(conn)["qdrant_only"][2]
    conn.execute("DELETE FROM memories WHERE id = %s", (gone,))
    client = QdrantClient(path=str(store))
    try:
        client.upsert(
            ALICE,
            [models.PointStruct(id=str(uuid.uuid4()), vector=vector("late"), payload={"content": "late"})],
        )
        failed = [FailedCheck("memories", "a_check", "it failed")]
        report = cutover_report(conn, client, failed, qdrant_configured=True)
    finally:
        client.close()
    assert not report.go
    blockers = "\n".join(report.blockers)
    assert f"point {ALICE}/{POINT_IDS['qdrant_only']}: its memory {gone} does not exist" in blockers
    assert f"collection {ALICE}: Qdrant holds" in blockers and "written since" in blockers
    assert "check memories.a_check failed: it failed" in blockers
    assert evidence_lines(report)[0].startswith("**NO-GO**")


def test_the_verdict_check_fails_as_a_warning_naming_the_blockers():
    safe = cutover_is_safe(CutoverReport(notes=["no Qdrant store landed"]))
    assert safe.passed and "GO: no Qdrant store landed" in safe.description
    unsafe = cutover_is_safe(CutoverReport(blockers=["point persona-a/1: its memory m does not exist"]))
    assert not unsafe.passed and unsafe.severity == "WARN"
    assert "NO-GO, 1 blockers: point persona-a/1: its memory m does not exist" in unsafe.description


def test_a_qdrant_only_memory_gives_way_when_the_export_holds_its_record_again(world, server):
    """A shapes.inc file unreadable in one run and fixed for the next: the points imported from
    Qdrant meanwhile are matched to the export's memories, and no memory is left twice."""
    conn, old_url, folder, _ = world
    decide(world, server)
    before = outcomes(conn)
    assert before["legacy_missing_from_export"][0] == before["qdrant_only"][0] == "imported"
    luna_file = folder / "luna" / "luna_memories.json"
    records = json.loads(luna_file.read_text())
    records += [
        record([SHAPES_UNMAPPED], "legacy only in qdrant", seconds=-86_400 + 4, record_id="m1/m2"),
        record([SHAPES_MAPPED], PLANTED["qdrant_only"][1]["content"], seconds=30, record_id="m3/m4"),
    ]
    luna_file.write_text(json.dumps(records))
    import_shapes_memories(conn, client_for(server), folder, personality_ids_for(conn, ["luna"]))
    same_id = before["legacy_missing_from_export"][2]  # the shapes import's id: it takes the row over
    assert conn.execute("SELECT source_system FROM memories WHERE id = %s", (same_id,)).fetchone() == (
        "shapes-inc",
    )
    report = decide(world, server)
    after = outcomes(conn)
    assert (
        after["legacy_missing_from_export"][:1] == ("matched",)
        and after["legacy_missing_from_export"][2] == same_id
    )
    assert after["qdrant_only"][0] == "matched" and after["qdrant_only"][2] != before["qdrant_only"][2]
    assert report.stale_imports_removed == 1  # the persona's Qdrant-only copy of that text went
    assert conn.execute(
        "SELECT count(*) FROM memories WHERE id = %s", (before["qdrant_only"][2],)
    ).fetchone() == (0,)
    assert every_qdrant_point_has_one_outcome(conn, report.refs).passed
