"""Land every point of the Qdrant store in the new DB before anything is decided about it
(`tinybot_migration.qdrant_points`, one row per collection and point id).

Each collection is read between two exact counts, page by page through `next_page_offset`; its
census row in `qdrant_collections` keeps both counts and what the read saw, so a store written
during the read is caught (the check fails and says so) rather than half-landed in silence. Ids are
kept as text, payloads as JSON, vectors as `real[]` exactly as Qdrant returned them (a zero, NaN or
wrong-size vector lands too: the outcomes reject it, with the point kept). A page is written in one
transaction: staged by binary COPY, then upserted so that a point landed before and unchanged is
left as it is (a re-run writes nothing), and a point Qdrant changed since is landed again with its
decision cleared.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb
from qdrant_client import QdrantClient

from tinybot_migration.lib.postgres import jsonb_safe
from tinybot_migration.lib.progress import Advanced, Progress, quiet, rate
from tinybot_migration.lib.qdrant.source import DEFAULT_PAGE_SIZE, scroll_points
from tinybot_migration.lib.schema import QDRANT_COLLECTIONS, QDRANT_POINTS

DENSE, NAMED, NO_VECTOR = "dense", "named", "none"

_STAGE = "qdrant_points_page"
_STAGE_SQL = f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (collection text, point_id text, payload jsonb, vector real[], vector_kind text) ON COMMIT DELETE ROWS"
# A point landed before and unchanged is not touched; one Qdrant changed since is landed again and
# its decision cleared (the outcomes asset decides it afresh).
_UPSERT_SQL = f"""
INSERT INTO {QDRANT_POINTS.qualified} AS landed (collection, point_id, payload, vector, vector_kind)
SELECT collection, point_id, payload, vector, vector_kind FROM {_STAGE}
ON CONFLICT (collection, point_id) DO UPDATE
SET payload = EXCLUDED.payload, vector = EXCLUDED.vector, vector_kind = EXCLUDED.vector_kind,
    landed_at = now(), outcome = NULL, reason = NULL, memory_id = NULL, decided_at = NULL,
    persona_id = NULL, personality_id = NULL
WHERE (landed.payload, landed.vector, landed.vector_kind)
      IS DISTINCT FROM (EXCLUDED.payload, EXCLUDED.vector, EXCLUDED.vector_kind)
RETURNING (xmax = 0) AS inserted
"""


@dataclass
class CollectionLanding:
    collection: str
    vector_size: int | None
    distance: str | None
    count_before: int
    count_after: int = 0
    points_read: int = 0
    points_new: int = 0
    points_changed: int = 0
    seconds: float = 0.0

    @property
    def consistent(self) -> bool:
        """The two exact counts agree with each other and with what the read saw."""
        return self.count_before == self.count_after == self.points_read


@dataclass
class Landing:
    collections: list[CollectionLanding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def points_read(self) -> int:
        return sum(c.points_read for c in self.collections)

    @property
    def points_new(self) -> int:
        return sum(c.points_new for c in self.collections)

    @property
    def points_changed(self) -> int:
        return sum(c.points_changed for c in self.collections)

    @property
    def written_during_read(self) -> list[CollectionLanding]:
        return [c for c in self.collections if not c.consistent]


def land_qdrant(
    client: QdrantClient,
    conn: psycopg.Connection,
    page_size: int = DEFAULT_PAGE_SIZE,
    log: Progress | None = None,
) -> Landing:
    """Land every collection of the store (`conn` in autocommit mode)."""
    log = log or quiet
    started = time.perf_counter()
    landing = Landing()
    names = sorted(c.name for c in client.get_collections().collections)
    # Every collection counted first: one progress line for the whole store, and the count each
    # collection's read is judged against still comes before it.
    counted = {name: client.count(name, exact=True).count for name in names}
    log(f"qdrant: landing {sum(counted.values()):,} points of {len(names):,} collections")
    progress = _StoreProgress(sum(counted.values()), log)
    for name in names:
        landing.collections.append(land_collection(client, conn, name, counted[name], page_size, progress))
    landing.seconds = time.perf_counter() - started
    return landing


@dataclass
class _StoreProgress:
    """Points landed over the whole store, said as one progress stage."""

    total: int
    log: Progress
    done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, points: int) -> None:
        self.done += points
        elapsed = time.perf_counter() - self.started
        self.log(Advanced("qdrant_points", self.done, self.total, "points landed", rate(self.done, elapsed)))


def land_collection(
    client: QdrantClient,
    conn: psycopg.Connection,
    name: str,
    count_before: int,
    page_size: int,
    progress: _StoreProgress,
) -> CollectionLanding:
    started = time.perf_counter()
    size, distance = _vector_config(client, name)
    census = CollectionLanding(name, size, distance, count_before)
    conn.execute(_STAGE_SQL)
    for points in scroll_points(client, name, page_size, progress.log):
        new, changed = _land_page(conn, name, points)
        census.points_read += len(points)
        census.points_new += new
        census.points_changed += changed
        progress.add(len(points))
    census.count_after = client.count(name, exact=True).count
    census.seconds = time.perf_counter() - started
    _record_census(conn, census)
    return census


def _vector_config(client: QdrantClient, name: str) -> tuple[int | None, str | None]:
    """The collection's unnamed vector size and distance (None for named vectors)."""
    vectors = client.get_collection(name).config.params.vectors
    if vectors is None or isinstance(vectors, dict):
        return None, None
    return vectors.size, str(getattr(vectors.distance, "value", vectors.distance))


def _land_page(conn: psycopg.Connection, collection: str, points: Iterable) -> tuple[int, int]:
    """Stage the page by binary COPY and upsert it in one transaction: (new, changed) points."""
    with conn.transaction():
        with conn.cursor().copy(f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "jsonb", "float4[]", "text"])
            for point in points:
                vector, kind = _vector_of(point.vector)
                copy.write_row(
                    (collection, str(point.id), Jsonb(jsonb_safe(point.payload or {})), vector, kind)
                )
        inserted = [row[0] for row in conn.execute(_UPSERT_SQL).fetchall()]
    new = sum(1 for row in inserted if row)
    return new, len(inserted) - new


def _vector_of(vector) -> tuple[list[float] | None, str]:
    if vector is None:
        return None, NO_VECTOR
    if isinstance(vector, dict):
        return None, NAMED
    return [float(x) for x in vector], DENSE


def _record_census(conn: psycopg.Connection, census: CollectionLanding) -> None:
    conn.execute(
        f"INSERT INTO {QDRANT_COLLECTIONS.qualified} (collection, vector_size, distance, count_before, count_after,"
        " points_read, points_new, points_changed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (collection) DO UPDATE SET vector_size = EXCLUDED.vector_size, distance = EXCLUDED.distance,"
        " count_before = EXCLUDED.count_before, count_after = EXCLUDED.count_after, points_read = EXCLUDED.points_read,"
        " points_new = EXCLUDED.points_new, points_changed = EXCLUDED.points_changed, landed_at = now()",
        (
            census.collection,
            census.vector_size,
            census.distance,
            census.count_before,
            census.count_after,
            census.points_read,
            census.points_new,
            census.points_changed,
        ),
    )
