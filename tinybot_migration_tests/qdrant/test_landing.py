"""Landing the Qdrant store: every point of every collection, ids as text, between two exact counts;
a re-run lands nothing; a store written during the read is caught; each misconfiguration and
server failure is one line that never shows the key."""

import os
import uuid

import numpy as np
import psycopg
import pytest
from dagster import materialize
from qdrant_client import QdrantClient, models

from tinybot_migration.defs.qdrant.assets import qdrant_points
from tinybot_migration.defs.resources import NewDatabaseResource, QdrantStoreResource
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration.lib.qdrant import source
from tinybot_migration.lib.qdrant.checks import every_qdrant_point_landed, qdrant_counts_unchanged_during_read
from tinybot_migration.lib.qdrant.landing import land_qdrant
from tinybot_migration.lib.qdrant.source import QdrantLocation, QdrantSourceError, open_qdrant, scroll_points
from tinybot_migration_tests.helpers.qdrant_server import QdrantStubServer

DIM = 8
SECRET = "s3cret-key-never-shown"


def unit(rng) -> list[float]:
    vector = rng.normal(size=DIM)
    return list(vector / np.linalg.norm(vector))


@pytest.fixture
def store(tmp_path):
    """A local-mode store: a persona collection of 12 points (UUID and integer ids, one zero
    vector, one without content), an old-layout collection of 3, closed after writing."""
    path = tmp_path / "qdrant"
    rng = np.random.default_rng(3)
    client = QdrantClient(path=str(path))
    config = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    client.create_collection("persona-a", vectors_config=config)
    client.create_collection("personality-b", vectors_config=config)
    points = [
        models.PointStruct(
            id=str(uuid.UUID(int=i + 1)), vector=unit(rng), payload={"content": f"m{i}", "n": i}
        )
        for i in range(10)
    ]
    points.append(models.PointStruct(id=42, vector=[0.0] * DIM, payload={"content": "zero"}))
    points.append(models.PointStruct(id=43, vector=unit(rng), payload={"createdAt": 1}))
    client.upsert("persona-a", points)
    client.upsert(
        "personality-b", [models.PointStruct(id=i, vector=unit(rng), payload={"c": i}) for i in range(3)]
    )
    client.close()
    return path


@pytest.fixture
def new_db(make_database):
    url = make_database("qdrant_landing")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_new_schema(conn)
    return url


def landed(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT collection, point_id, payload, vector, vector_kind, landed_at FROM tinybot_migration.qdrant_points"
            " ORDER BY collection, point_id"
        ).fetchall()


def test_every_point_of_every_collection_lands_once_page_by_page(store, new_db):
    client = open_qdrant(QdrantLocation(path=str(store)))
    try:
        with psycopg.connect(new_db, autocommit=True) as conn:
            first = land_qdrant(client, conn, page_size=5)  # 12 points: three pages, by next_page_offset
            assert qdrant_counts_unchanged_during_read(first).passed
            assert every_qdrant_point_landed(conn, first).passed
            rows = landed(new_db)
            again = land_qdrant(client, conn, page_size=5)
    finally:
        client.close()
    assert [(c.collection, c.count_before, c.points_read, c.points_new) for c in first.collections] == [
        ("persona-a", 12, 12, 12),
        ("personality-b", 3, 3, 3),
    ]
    by_id = {(r[0], r[1]): r for r in rows}
    assert len(rows) == 15 and by_id[("persona-a", str(uuid.UUID(int=1)))][2] == {"content": "m0", "n": 0}
    assert by_id[("persona-a", "42")][3] == [0.0] * DIM  # a zero vector lands: rejected later, never lost
    assert by_id[("persona-a", "43")][2] == {"createdAt": 1} and by_id[("personality-b", "2")][4] == "dense"
    assert all(len(r[3]) == DIM for r in rows)
    # A re-run reads everything again and changes nothing: not a row, not a timestamp.
    assert again.points_read == 15 and again.points_new == 0 and again.points_changed == 0
    assert landed(new_db) == rows


def test_a_store_written_during_the_read_fails_the_count_check(store, new_db, monkeypatch):
    client = open_qdrant(QdrantLocation(path=str(store)))
    pages = scroll_points

    def scroll_then_write(client_, collection, page_size, log):
        for number, page in enumerate(pages(client_, collection, page_size, log)):
            if collection == "persona-a" and number == 0:  # the bot writes while we read
                client_.upsert(
                    collection, [models.PointStruct(id=99, vector=[1.0] + [0.0] * (DIM - 1), payload={})]
                )
            yield page

    monkeypatch.setattr("tinybot_migration.lib.qdrant.landing.scroll_points", scroll_then_write)
    try:
        with psycopg.connect(new_db, autocommit=True) as conn:
            landing = land_qdrant(client, conn, page_size=5)
    finally:
        client.close()
    outcome = qdrant_counts_unchanged_during_read(landing)
    assert not outcome.passed and "Qdrant was written during the read" in outcome.description
    assert (
        "persona-a: 12 before, 13 after" in outcome.description and "personality-b" not in outcome.description
    )


def test_a_second_client_on_the_same_folder_is_told_what_to_do(store):
    holder = QdrantClient(path=str(store))
    try:
        with pytest.raises(QdrantSourceError, match="is open in another process .*one client per folder"):
            open_qdrant(QdrantLocation(path=str(store)))
    finally:
        holder.close()


def test_a_folder_that_is_not_a_store_is_refused_and_left_untouched(tmp_path):
    empty = tmp_path / "not-a-store"
    empty.mkdir()
    with pytest.raises(QdrantSourceError, match="is not a Qdrant local-mode store"):
        open_qdrant(QdrantLocation(path=str(empty)))
    assert os.listdir(empty) == []  # local mode would have made a store here
    with pytest.raises(QdrantSourceError, match="both QDRANT_URL and QDRANT_PATH are set"):
        QdrantLocation(url="http://x", path=str(empty))


def test_a_refused_key_and_an_unreachable_server_say_so_without_the_key(monkeypatch):
    with QdrantStubServer(api_key="right-key") as server:
        with pytest.raises(QdrantSourceError) as refused:
            open_qdrant(QdrantLocation(url=server.url, api_key=SECRET))
        client = open_qdrant(QdrantLocation(url=server.url, api_key="right-key"))
        client.close()
    assert "refused the API key (401): check QDRANT_API_KEY" in str(refused.value)
    monkeypatch.setattr(source, "CONNECT_ATTEMPTS", 2)
    said: list = []
    with pytest.raises(QdrantSourceError) as unreachable:
        open_qdrant(
            QdrantLocation(url=f"https://user:{SECRET}@127.0.0.1:9/?api-key={SECRET}", api_key=SECRET),
            said.append,
        )
    message = str(unreachable.value)
    assert "Qdrant at https://127.0.0.1:9/ is unreachable after 2 attempts" in message
    assert SECRET not in message and all(SECRET not in str(line) for line in said) and len(said) == 1


def test_a_scroll_that_keeps_timing_out_shrinks_its_pages_then_names_the_collection(monkeypatch):
    said: list = []
    with QdrantStubServer() as server:
        server.scroll_seconds = 1.5
        client = open_qdrant(QdrantLocation(url=server.url, api_key="right-key", timeout_seconds=1))
        try:
            with pytest.raises(QdrantSourceError) as timed_out:
                list(scroll_points(client, "persona-x", page_size=32, log=said.append))
        finally:
            client.close()
        limits = server.scroll_limits
    assert limits == [32, 16, 8]  # halved on each timeout, down to the floor
    assert "scrolling collection 'persona-x' timed out at offset None even with pages of 8" in str(
        timed_out.value
    )
    assert len(said) == 2


def test_the_asset_lands_a_configured_store_and_says_when_none_is(store, new_db):
    resources = {
        "new_database": NewDatabaseResource(url=new_db),
        "qdrant_store": QdrantStoreResource(path=str(store)),
    }
    result = materialize([qdrant_points], resources=resources)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    [materialization] = result.asset_materializations_for_node("qdrant_points")
    figures = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert figures["points_read"] == 15 and figures["points_new"] == 15 and figures["collections"] == 2
    assert figures["store"] == f"local store {store}"

    resources["qdrant_store"] = QdrantStoreResource()
    result = materialize([qdrant_points], resources=resources)
    evaluations = result.get_asset_check_evaluations()
    assert result.success and len(evaluations) == 2
    assert all(e.passed and "no Qdrant configured" in e.description for e in evaluations)
