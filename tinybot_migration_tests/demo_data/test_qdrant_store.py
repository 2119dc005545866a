"""The demo Qdrant store, written for real demo data (embedded PostgreSQL, scale 1) and read back with
its own client: every point is classified here from the old DB (by SQL) and the export alone, and
the classes must match what the writer says it planted."""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql
from qdrant_client import QdrantClient

from tinybot_migration.lib.demo_data import generate_demo_data
from tinybot_migration.lib.demo_data import qdrant_store as store_module
from tinybot_migration.lib.demo_data.qdrant_store import (
    BAD_CONTENT_EMPTY,
    BAD_CONTENT_MISSING,
    BAD_CONTENT_NOT_TEXT,
    BAD_CREATED_AT_ABSURD,
    BAD_CREATED_AT_MISSING,
    BAD_PERSONALITY_NOT_UUID,
    BAD_UNKNOWN_PERSONA,
    BAD_UNKNOWN_PERSONALITY,
    BAD_WRONG_SIZE,
    BAD_ZERO_VECTOR,
    CATEGORIES,
    CREATED_AT_IN_SECONDS,
    EXCHANGE_WITHOUT_POINT,
    LIVE,
    LIVE_RETRY,
    NOT_POINTS,
    OLD_LAYOUT_COPY,
    OLD_LAYOUT_NO_USER_ID,
    OLD_LAYOUT_ONLY,
    OLD_LAYOUT_REFUSAL,
    QDRANT_ONLY_EXCHANGE,
    RENAMED_REEMBEDDED,
    SHAPES,
    SHAPES_DELETED,
    SHAPES_EARLY_ID,
    SHAPES_MISSING_FROM_EXPORT,
    SHAPES_RECORD_UNUSABLE,
    SUBSET_CATEGORIES,
    write_demo_qdrant_store,
)
from tinybot_migration.lib.embedded_postgres import embedded_database_url
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.qdrant.points import is_refusal
from tinybot_migration.lib.qdrant.vectors import cosine

DIM = 1536
GROUP_NAMESPACE = uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479")
WINDOW_MS = 30_000  # a live point's createdAt: its answer's time, or up to 25 s later (+5 s a retry)
YEAR_2100_MS = 4_102_444_800_000
_EPOCH = datetime(1970, 1, 1)
_names = itertools.count(1)


# --- what the store holds ---------------------------------------------------------------------------


@dataclass
class Dump:
    vector_sizes: dict[str, tuple[int, str]]  # collection -> (size, distance)
    points: dict[str, dict[str | int, tuple[dict, np.ndarray]]]  # collection -> id -> (payload, vector)


def dump_store(path: Path) -> Dump:
    """Open the store as the migration will (local mode, one client) and read every point."""
    client = QdrantClient(path=str(path))
    try:
        sizes, points = {}, {}
        for collection in sorted(c.name for c in client.get_collections().collections):
            params = client.get_collection(collection).config.params.vectors
            sizes[collection] = (params.size, str(params.distance.value))
            points[collection] = dict(scroll(client, collection))
        return Dump(sizes, points)
    finally:
        client.close()


def scroll(client: QdrantClient, collection: str):
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=1024, offset=offset, with_payload=True, with_vectors=True
        )
        for record in records:
            yield record.id, (record.payload, np.asarray(record.vector, dtype=np.float32))
        if offset is None:
            return


# --- what the sources say, read independently of the writer -----------------------------------------


@dataclass(frozen=True)
class Exchange:
    persona: str
    personality: str
    channel: str
    guild: str | None
    user_text: str
    answer: str
    at_ms: int


@dataclass
class Sources:
    personalities: dict[str, tuple[str, str]]  # id -> (name, slug)
    personas: dict[str, tuple[str, str, str]]  # id -> (display name, owner username, owner discord id)
    exchanges: list[Exchange]
    by_context: dict[tuple, list[int]] = field(default_factory=dict)
    # (collection, point id) -> (record, sender, slug): by the import's id rule, and the early ingest's
    shapes: dict[tuple, tuple[dict, str, str]] = field(default_factory=dict)
    early: dict[tuple, tuple[dict, str, str]] = field(default_factory=dict)
    export_results: set[str] = field(default_factory=set)
    unusable_records: int = 0

    def exchange_of(self, payload: dict) -> int | None:
        """The exchange a live-format point stands for: same persona, personality and channel, the
        text ending with the answer, createdAt at most 30 s after it (the closest)."""
        name = self.personalities[payload["personalityId"]][0]
        key = (payload["personaId"], payload["personalityId"], payload["channelId"])
        hits = [
            (payload["createdAt"] - self.exchanges[i].at_ms, i)
            for i in self.by_context.get(key, [])
            if payload["content"].endswith(f"\n{name}: {self.exchanges[i].answer}")
            and 0 <= payload["createdAt"] - self.exchanges[i].at_ms <= WINDOW_MS
        ]
        return min(hits)[1] if hits else None


EXCHANGES_SQL = """
SELECT persona_id::text, personality_id::text, channel_id, guild_id, prev_content, content, created_at
FROM (SELECT *, lag(role) OVER w AS prev_role, lag(content) OVER w AS prev_content
      FROM conversation_history
      WINDOW w AS (PARTITION BY channel_id, personality_id, persona_id
                   ORDER BY created_at, CASE role WHEN 'user' THEN 0 ELSE 1 END, id)) h
WHERE role = 'assistant' AND prev_role = 'user'
"""


def read_sources(url: str, export_dir: Path) -> Sources:
    with psycopg.connect(url) as conn:
        personalities = {
            r[0]: (r[1], r[2]) for r in conn.execute("SELECT id::text, name, slug FROM personalities")
        }
        personas = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT p.id::text, coalesce(p.preferred_name, p.name), u.username, u.discord_id"
                " FROM personas p JOIN users u ON u.id = p.owner_id"
            )
        }
        exchanges = [
            Exchange(*row[:6], (row[6] - _EPOCH) // timedelta(milliseconds=1))
            for row in conn.execute(EXCHANGES_SQL)
        ]
        defaults = dict(
            conn.execute(
                "SELECT u.discord_id, d.persona_id::text FROM user_default_personas d JOIN users u ON u.id = d.user_id"
            ).fetchall()
        )
    sources = Sources(personalities, personas, exchanges)
    for i, e in enumerate(exchanges):
        sources.by_context.setdefault((e.persona, e.personality, e.channel), []).append(i)
    index_export(sources, export_dir, defaults)
    return sources


def index_export(sources: Sources, export_dir: Path, defaults: dict[str, str]) -> None:
    """The point every usable (record, sender) should be: collection and id by the import's rule."""
    mappings = json.loads((export_dir / "uuid-mappings.json").read_text("utf-8"))["mappings"]
    for path in sorted(export_dir.glob("*/*_memories.json")):
        for record in json.loads(path.read_text("utf-8")):
            sources.export_results.add(record["result"])
            if not record["result"].strip():
                sources.unusable_records += 1
                continue
            first = record["id"].split("/")[0]
            for sender in record["senders"]:
                persona = defaults.get(mappings.get(sender, {}).get("discordId"))
                collection = f"persona-{persona}" if persona else f"persona-legacy-{sender}"
                if len(record["senders"]) > 1:
                    point_id = str(uuid.uuid5(GROUP_NAMESPACE, f"{first}:{sender}"))
                else:
                    point_id = int(first)  # the demo's record ids are discord message ids: a u64
                    early = str(uuid.uuid5(uuid.NAMESPACE_DNS, record["id"]))
                    sources.early[(collection, early)] = (record, sender, path.parent.name)
                sources.shapes[(collection, point_id)] = (record, sender, path.parent.name)


# --- classifying every point -------------------------------------------------------------------------


def bad_kind(collection: str, payload: dict, vector: np.ndarray, sources: Sources) -> str | None:
    if collection == "persona-legacy-wrongsize-demo":
        return BAD_WRONG_SIZE
    key = collection.removeprefix("persona-")
    if not collection.startswith("persona-legacy-") and key not in sources.personas:
        return BAD_UNKNOWN_PERSONA
    if "content" not in payload:
        return BAD_CONTENT_MISSING
    if not isinstance(payload["content"], str):
        return BAD_CONTENT_NOT_TEXT
    if payload["content"] == "":
        return BAD_CONTENT_EMPTY
    if not np.any(vector):
        return BAD_ZERO_VECTOR
    if payload["personalityId"] == "not-a-uuid":
        return BAD_PERSONALITY_NOT_UUID
    if payload["personalityId"] not in sources.personalities:
        return BAD_UNKNOWN_PERSONALITY
    if "createdAt" not in payload:
        return BAD_CREATED_AT_MISSING
    if payload["createdAt"] > YEAR_2100_MS:
        return BAD_CREATED_AT_ABSURD
    if payload["createdAt"] < 10**11:
        return CREATED_AT_IN_SECONDS
    return None


@dataclass
class Classified:
    refs: dict[str, list[tuple[str, str | int]]] = field(default_factory=lambda: defaultdict(list))
    live_exchange: dict[tuple, int] = field(default_factory=dict)  # live point -> its exchange

    def counts(self) -> dict[str, int]:
        return {name: len(refs) for name, refs in self.refs.items()}


def classify(dump: Dump, sources: Sources) -> Classified:
    found = Classified()
    by_exchange: dict[int, list[tuple[int, str, str | int]]] = defaultdict(list)
    for collection, points in dump.points.items():
        if collection.startswith("personality-"):
            continue
        for point_id, (payload, vector) in points.items():
            ref = (collection, point_id)
            kind = bad_kind(collection, payload, vector, sources)
            if kind is not None:
                found.refs[kind].append(ref)
            elif payload["summaryType"] == "conversation":
                match = sources.exchange_of(payload)
                if match is None:
                    found.refs[QDRANT_ONLY_EXCHANGE].append(ref)
                else:
                    by_exchange[match].append((payload["createdAt"], collection, point_id))
            elif ref in sources.shapes:
                found.refs[SHAPES].append(ref)
                if sources.shapes[ref][0]["deleted"]:
                    found.refs[SHAPES_DELETED].append(ref)
            elif ref in sources.early:
                found.refs[SHAPES_EARLY_ID].append(ref)
            else:
                assert payload["content"] not in sources.export_results, ref
                found.refs[SHAPES_MISSING_FROM_EXPORT].append(ref)
    for exchange, hits in by_exchange.items():
        first, *again = sorted(hits)
        found.refs[LIVE].append(first[1:])
        found.live_exchange[first[1:]] = exchange
        found.refs[LIVE_RETRY] += [hit[1:] for hit in again]
    found.refs[EXCHANGE_WITHOUT_POINT] = [
        ("history", i) for i in range(len(sources.exchanges) - len(by_exchange))
    ]
    found.refs[SHAPES_RECORD_UNUSABLE] = [("export", i) for i in range(sources.unusable_records)]
    classify_old_layout(dump, sources, found)
    classify_renamed(dump, found)
    return found


def classify_old_layout(dump: Dump, sources: Sources, found: Classified) -> None:
    regrouped = {
        point_id for c, points in dump.points.items() if c.startswith("persona-") for point_id in points
    }
    for collection, points in dump.points.items():
        if not collection.startswith("personality-"):
            continue
        for point_id, (payload, _) in points.items():
            ref = (collection, point_id)
            assert payload["personalityId"] == collection.removeprefix("personality-")
            if point_id in regrouped:
                found.refs[OLD_LAYOUT_COPY].append(ref)
            elif is_refusal(payload["content"]):
                found.refs[OLD_LAYOUT_REFUSAL].append(ref)
            else:
                assert sources.exchange_of(payload) is None, ref
                found.refs[OLD_LAYOUT_ONLY if "userId" in payload else OLD_LAYOUT_NO_USER_ID].append(ref)


def classify_renamed(dump: Dump, found: Classified) -> None:
    for collection, point_id in found.refs[LIVE]:
        payload, vector = dump.points[collection][point_id]
        if cosine(vector, hash_embedding(payload["content"], DIM)) < 0.99:
            found.refs[RENAMED_REEMBEDDED].append((collection, point_id))


# --- fixtures -----------------------------------------------------------------------------------------


@dataclass
class Demo:
    url: str
    export_dir: Path
    store_dir: Path
    result: store_module.DemoQdrantStore
    dump: Dump
    sources: Sources
    found: Classified


@pytest.fixture(scope="module")
def demo(pg_server, tinybot_home, tmp_path_factory):
    """Demo data at scale 1 (seed 42), its store written once, read back and classified."""
    name = f"qdrant_store_demo_{next(_names)}"
    url = embedded_database_url(name, tinybot_home)
    root = tmp_path_factory.mktemp("qdrant_demo")
    generate_demo_data(url, root / "shapes", scale=1, seed=42)
    result = write_demo_qdrant_store(url, root / "shapes", root / "store", seed=42)
    dump = dump_store(root / "store")
    sources = read_sources(url, root / "shapes")
    yield Demo(url, root / "shapes", root / "store", result, dump, sources, classify(dump, sources))
    with psycopg.connect(pg_server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def live_points(demo: Demo):
    for collection, point_id in demo.found.refs[LIVE]:
        yield collection, point_id, *demo.dump.points[collection][point_id]


# --- tests --------------------------------------------------------------------------------------------


def test_the_store_opens_and_holds_the_expected_collections(demo):
    result, dump, sources = demo.result, demo.dump, demo.sources
    assert result.path == demo.store_dir and not result.scaled_down and result.note is None
    assert result.collections == len(dump.points)
    assert result.points == sum(len(points) for points in dump.points.values())
    assert 10_000 < result.points < 20_000 and max(len(p) for p in dump.points.values()) < 20_000
    live_personas = {e.persona for e in sources.exchanges}
    personas = {
        c.removeprefix("persona-")
        for c in dump.points
        if not c.startswith(("persona-legacy-", "personality-"))
    }
    assert len(personas - set(sources.personas)) == 1  # the unknown persona's collection
    assert live_personas <= personas
    assert len([c for c in dump.points if c.startswith("personality-")]) == 3
    legacy = {c for c in dump.points if c.startswith("persona-legacy-")}
    assert "persona-legacy-wrongsize-demo" in legacy and len(legacy) == 5  # 4 unmapped senders
    for collection, (size, distance) in dump.vector_sizes.items():
        assert distance == "Cosine"
        assert size == (3 if collection == "persona-legacy-wrongsize-demo" else DIM), collection
    assert not list(demo.store_dir.parent.glob(".*staging*"))


def test_every_planted_category_is_found_with_its_count(demo):
    planted = demo.result.planted
    assert list(planted) == list(CATEGORIES)
    assert all(count > 0 for count in planted.values()), planted
    assert demo.found.counts() == planted
    points = sum(n for name, n in planted.items() if name not in SUBSET_CATEGORIES + NOT_POINTS)
    assert points == demo.result.points
    exchanges = len(demo.sources.exchanges)
    assert 0.02 * exchanges < planted[EXCHANGE_WITHOUT_POINT] < 0.04 * exchanges
    assert planted[LIVE] + planted[EXCHANGE_WITHOUT_POINT] == exchanges
    assert 0.005 * planted[LIVE] < planted[LIVE_RETRY] < 0.015 * planted[LIVE]


def test_live_points_are_their_exchanges_in_the_bot_formats(demo):
    eras, late, user_ids = Counter(), 0, Counter()
    for collection, point_id, payload, _ in live_points(demo):
        exchange = demo.sources.exchanges[demo.found.live_exchange[(collection, point_id)]]
        display, username, discord_id = demo.sources.personas[exchange.persona]
        name = demo.sources.personalities[exchange.personality][0]
        era_one = f"User ({username}): {exchange.user_text}\n{name}: {exchange.answer}"
        era_two = f"{display}: {exchange.user_text}\n{name}: {exchange.answer}"
        assert payload["content"] in (era_one, era_two)
        era = 1 if payload["content"] == era_one else 2
        eras[era] += 1
        assert collection == f"persona-{exchange.persona}" and payload["personaId"] == exchange.persona
        assert payload["personalityName"] == name
        assert (payload.get("guildId"), payload["channelId"]) == (exchange.guild, exchange.channel)
        assert payload["canonScope"] == "personal" and payload["summaryType"] == "conversation"
        assert "sessionId" not in payload and None not in payload.values()
        late += payload["createdAt"] != exchange.at_ms
        assert payload["createdAt"] - exchange.at_ms <= 25_000
        if "userId" in payload:
            assert era == 1 and payload["userId"] == discord_id
            user_ids[era] += 1
    live = demo.result.planted[LIVE]
    assert 0.35 * live < eras[1] < 0.65 * live
    assert 0.35 * live < late < 0.65 * live
    assert 0.35 * eras[1] < user_ids[1] < 0.65 * eras[1]


def test_a_sample_of_live_points_ends_with_an_answer_of_the_old_db(demo):
    """Checked by SQL against the history itself: the answer follows a user message in its context."""
    query = """
        SELECT count(*) FROM (
            SELECT h.*, lag(h.role) OVER w AS prev_role FROM conversation_history h
            WHERE h.persona_id = %(persona)s AND h.personality_id = %(personality)s AND h.channel_id = %(channel)s
            WINDOW w AS (ORDER BY h.created_at, CASE h.role WHEN 'user' THEN 0 ELSE 1 END, h.id)) t
        JOIN personalities p ON p.id = t.personality_id
        WHERE t.role = 'assistant' AND t.prev_role = 'user'
          AND right(%(content)s, length(t.content) + length(p.name) + 3) = E'\\n' || p.name || ': ' || t.content
          AND p.name = %(name)s
          AND %(at)s - (extract(epoch FROM t.created_at) * 1000)::bigint BETWEEN 0 AND 25000
    """
    sample = sorted(live_points(demo), key=lambda p: str(p[1]))[::20]
    assert len(sample) > 50
    with psycopg.connect(demo.url) as conn:
        for _, _, payload, _ in sample:
            found = conn.execute(
                query,
                {
                    "persona": payload["personaId"],
                    "personality": payload["personalityId"],
                    "channel": payload["channelId"],
                    "content": payload["content"],
                    "name": payload["personalityName"],
                    "at": payload["createdAt"],
                },
            ).fetchone()[0]
            assert found >= 1, payload["content"]


def test_retries_and_old_layout_copies_repeat_their_live_point(demo):
    live = {
        point_id: (collection, payload, vector) for collection, point_id, payload, vector in live_points(demo)
    }
    by_content = {(c, p["content"]): (p, v) for c, p, v in live.values()}
    for collection, point_id in demo.found.refs[LIVE_RETRY]:
        payload, vector = demo.dump.points[collection][point_id]
        original, original_vector = by_content[(collection, payload["content"])]
        assert 1_000 <= payload["createdAt"] - original["createdAt"] <= 5_000
        assert {**payload, "createdAt": 0} == {**original, "createdAt": 0}
        assert np.array_equal(vector, original_vector) and point_id not in live
    for collection, point_id in demo.found.refs[OLD_LAYOUT_COPY]:
        payload, vector = demo.dump.points[collection][point_id]
        _, original, original_vector = live[point_id]
        assert np.array_equal(vector, original_vector)
        assert payload == {**original, "userId": payload["userId"]}
        assert payload["userId"] == demo.sources.personas[payload["personaId"]][2]
    for category in (OLD_LAYOUT_REFUSAL, OLD_LAYOUT_ONLY):
        for collection, point_id in demo.found.refs[category]:
            assert "userId" in demo.dump.points[collection][point_id][0]


def test_shapes_points_follow_the_id_rule_one_per_record_and_sender(demo):
    sources, dump, found = demo.sources, demo.dump, demo.found
    written = set(found.refs[SHAPES])
    # An early-ingest point stands for its record's one sender instead of the import's id.
    early_instead = {
        (c, int(sources.early[(c, i)][0]["id"].split("/")[0])) for c, i in found.refs[SHAPES_EARLY_ID]
    }
    assert written | early_instead == set(sources.shapes) and not written & early_instead
    for ref in found.refs[SHAPES] + found.refs[SHAPES_EARLY_ID]:
        record, sender, slug = sources.shapes[ref] if ref in sources.shapes else sources.early[ref]
        payload, vector = dump.points[ref[0]][ref[1]]
        assert payload["content"] == record["result"]
        assert sources.personalities[payload["personalityId"]] == (payload["personalityName"], slug)
        assert payload["createdAt"] == math.floor(record["metadata"]["created_at"] * 1000)
        assert payload["channelId"] == record["metadata"]["discord_channel_id"]
        assert payload["guildId"] == record["metadata"]["discord_guild_id"]  # "" kept
        assert payload["summaryType"] == record["summary_type"]
        legacy = ref[0].startswith("persona-legacy-")
        assert payload["canonScope"] == ("legacy" if legacy else "personal")
        assert payload["personaId"] == (f"legacy-{sender}" if legacy else ref[0].removeprefix("persona-"))
        assert cosine(vector, hash_embedding(record["result"], DIM)) > 0.9999
    assert any(dump.points[c][i][0]["guildId"] == "" for c, i in found.refs[SHAPES])
    assert any(isinstance(i, int) for _, i in found.refs[SHAPES])  # single sender: the u64 first segment
    assert any(isinstance(i, str) for _, i in found.refs[SHAPES])  # group records: uuid5 per sender
    missing_from_export = found.refs[SHAPES_MISSING_FROM_EXPORT]
    assert any(c.startswith("persona-legacy-") for c, _ in missing_from_export)
    assert any(not c.startswith("persona-legacy-") for c, _ in missing_from_export)


def test_renamed_vectors_are_not_embeddings_of_their_content(demo):
    renamed = demo.found.refs[RENAMED_REEMBEDDED]
    personalities = {demo.dump.points[c][i][0]["personalityId"] for c, i in renamed}
    assert len(personalities) == 1 and len(renamed) >= 10
    (personality,) = personalities
    for collection, point_id, payload, vector in live_points(demo):
        similarity = cosine(vector, hash_embedding(payload["content"], DIM))
        if payload["personalityId"] == personality:
            assert similarity < 0.99
            assert not payload["content"].startswith("User (")  # era 2
        else:
            assert similarity >= 0.9999, (collection, point_id)


def test_the_same_seed_rewrites_the_same_store(demo):
    again = write_demo_qdrant_store(demo.url, demo.export_dir, demo.store_dir, seed=42, replace=True)
    assert again.planted == demo.result.planted
    assert (again.points, again.collections) == (demo.result.points, demo.result.collections)
    rewritten = dump_store(demo.store_dir)
    assert rewritten.vector_sizes == demo.dump.vector_sizes
    assert rewritten.points.keys() == demo.dump.points.keys()
    for collection, points in demo.dump.points.items():
        assert rewritten.points[collection].keys() == points.keys(), collection
        for point_id, (payload, vector) in points.items():
            payload_again, vector_again = rewritten.points[collection][point_id]
            assert payload_again == payload and np.array_equal(vector_again, vector)


def test_a_folder_that_is_not_a_store_is_refused(demo, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    for replace in (False, True):
        with pytest.raises(ValueError, match="not a Qdrant local-mode store") as refused:
            write_demo_qdrant_store(demo.url, demo.export_dir, precious, replace=replace)
        assert str(precious) in str(refused.value) and "\n" not in str(refused.value)
    assert (precious / "thesis.txt").read_text() == "do not delete"
    assert [p.name for p in tmp_path.iterdir()] == ["precious"]
    with pytest.raises(ValueError, match="already holds a Qdrant store.*replace=True") as refused:
        write_demo_qdrant_store(demo.url, demo.export_dir, demo.store_dir)
    assert str(demo.store_dir) in str(refused.value)


def test_a_larger_scale_writes_the_first_block_only(demo, make_database, tmp_path):
    """Block 0 of scale-2 data is the scale-1 data (same seed): so is the store, flagged scaled down."""
    url = make_database("qdrant_store_scale_two")
    generate_demo_data(url, tmp_path / "shapes", scale=2, seed=42)
    result = write_demo_qdrant_store(url, tmp_path / "shapes", tmp_path / "store", seed=42)
    assert result.scaled_down and result.scale == 2 and "scale 2" in result.note
    assert result.planted == demo.result.planted
    assert (result.points, result.collections) == (demo.result.points, demo.result.collections)
