"""Keeping memories current after cutover: the incremental rebuild job and the sensor that starts it.

A sensor rather than a schedule (docs/design.md §8): it registers personalities that appeared since the
migration as partitions, which a schedule cannot, and requests one run per personality with
answers no memory covers yet. A tick reads only the history after each personality's coverage mark
(`coverage.py`) and its runs pair only that delta, so neither grows with the history; every
MEMORY_RECONCILE_INTERVAL_SECONDS (a day by default, and on the first tick after the cursor is
reset) a tick pairs the whole history instead and its runs are full rebuilds, which catches
history that arrived behind a mark. Each request names the state it covers (slug, count and newest time
of those answers): an unchanged personality is not run twice for one state, and a trailing user
message starts nothing until its answer arrives. A run that failed or was canceled is requested
again on a later tick, after a backoff that doubles with each failure up to a bound (Dagster makes
at most one run per run key, so each retry gets a key of its own). Stopped by default: turn it on
at cutover (docs/runbook.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import psycopg
from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRecord,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from tinybot_migration.defs.memories.assets import rebuilt_memories
from tinybot_migration.defs.partitions import personality_partitions, unregistered_personality_slugs
from tinybot_migration.defs.resources import NewDatabaseResource
from tinybot_migration.lib.memories.coverage import (
    DELTA_UNCOVERED_ANSWERS_OF_SQL,
    DELTA_UNCOVERED_ANSWERS_SQL,
    HISTORY_DELTA,
    HISTORY_FULL,
    moved_personalities,
    newest_message_time,
    unmarked_among,
)
from tinybot_migration.lib.memories.pairing import UNCOVERED_ANSWERS_OF_SQL, UNCOVERED_ANSWERS_SQL
from tinybot_migration.lib.personalities import slugs_of
from tinybot_migration.lib.schema import bot_timestamp
from tinybot_migration.lib.settings import memory_rebuild_interval_seconds, memory_reconcile_interval_seconds

INCREMENTAL_MEMORY_JOB = "incremental_memory_rebuild"
STATE_TAG = "tinybot/memory_state"
HISTORY_TAG = "tinybot/history"
FIRST_RETRY_DELAY_SECONDS = 300
MAX_RETRY_DELAY_SECONDS = 6 * 3600
_FAILED = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)

incremental_memory_rebuild_job = define_asset_job(
    INCREMENTAL_MEMORY_JOB,
    selection=[rebuilt_memories],
    description="Embed and write the memories of new exchanges, one personality per run.",
)


@dataclass(frozen=True)
class UncoveredAnswers:
    slug: str
    answers: int
    state: str  # slug, count and newest time of the answers: what one run is asked to cover
    history: str = HISTORY_DELTA  # how its run pairs: the delta, or the whole history (reconciliation)

    @property
    def run_config(self) -> dict:
        return {"ops": {"rebuilt_memories": {"config": {"history": self.history}}}}


@dataclass
class TickCursor:
    """What a tick leaves the next one: when the whole history was last reconciled, how far the
    history had come (its newest message), and the personalities still left with uncovered
    answers (their runs pending or failed), so that a delta tick looks at those and at what moved."""

    reconciled_at: float | None = None
    seen_through: datetime | None = None
    outstanding: tuple[uuid.UUID, ...] = ()

    @classmethod
    def parse(cls, cursor: str | None) -> TickCursor:
        state = json.loads(cursor) if cursor else {}
        seen = state.get("seen_through")
        return cls(
            state.get("reconciled_at"),
            bot_timestamp(datetime.fromisoformat(seen)) if seen else None,
            tuple(uuid.UUID(i) for i in state.get("outstanding", ())),
        )

    def dumps(self) -> str:
        return json.dumps(
            {
                "reconciled_at": self.reconciled_at,
                "seen_through": self.seen_through.isoformat() if self.seen_through else None,
                "outstanding": [str(i) for i in self.outstanding],
            }
        )


def uncovered_answers(
    conn: psycopg.Connection, history: str, personality_ids: Collection[uuid.UUID] | None = None
) -> list[UncoveredAnswers]:
    """Per personality, the answers a run should cover. Delta: those after each personality's
    coverage mark, and everything of a personality without one (of `personality_ids` only, when
    given); full: every answer no memory covers."""
    if history == HISTORY_FULL:
        rows = conn.execute(UNCOVERED_ANSWERS_SQL).fetchall()
    elif personality_ids is None:
        rows = conn.execute(DELTA_UNCOVERED_ANSWERS_SQL).fetchall()
        rows += _unmarked_answers(conn, [r[0] for r in conn.execute("SELECT id FROM personalities")])
    else:
        ids = list(personality_ids)
        rows = conn.execute(DELTA_UNCOVERED_ANSWERS_OF_SQL, {"ids": ids}).fetchall() if ids else []
        rows += _unmarked_answers(conn, ids)
    prefix = "full:" if history == HISTORY_FULL else ""
    return [
        UncoveredAnswers(slug, answers, f"{prefix}{slug}:{answers}:{newest.isoformat()}", history)
        for slug, answers, newest in sorted(rows)
    ]


def _unmarked_answers(conn: psycopg.Connection, personality_ids: list[uuid.UUID]) -> list[tuple]:
    unmarked = unmarked_among(conn, personality_ids) if personality_ids else []
    return conn.execute(UNCOVERED_ANSWERS_OF_SQL, (unmarked,)).fetchall() if unmarked else []


def reconciliation_due(cursor: TickCursor, now: float) -> bool:
    """Whether this tick pairs the whole history: on the first tick (or after the cursor was
    reset) and every MEMORY_RECONCILE_INTERVAL_SECONDS after the last one that did."""
    return cursor.reconciled_at is None or now - cursor.reconciled_at >= memory_reconcile_interval_seconds()


@dataclass
class Tick:
    uncovered: list[UncoveredAnswers]
    new_slugs: list[str]
    cursor: TickCursor


def full_tick(conn: psycopg.Connection, instance, now: float) -> Tick:
    """The whole history paired in SQL, every personality's slug checked against the partitions."""
    seen_through = newest_message_time(conn)
    uncovered = uncovered_answers(conn, HISTORY_FULL)
    return Tick(
        uncovered, unregistered_personality_slugs(conn, instance), _left(conn, uncovered, now, seen_through)
    )


def delta_tick(conn: psycopg.Connection, instance, cursor: TickCursor) -> Tick:
    """Only the personalities with a message since the last tick (less the late margin) and those
    it left with uncovered answers: the tick costs what the delta costs."""
    seen_through = newest_message_time(conn)
    if cursor.seen_through is None:  # a cursor from before the marks: look at every personality
        uncovered = uncovered_answers(conn, HISTORY_DELTA)
        new_slugs = unregistered_personality_slugs(conn, instance)
    else:
        candidates = moved_personalities(conn, cursor.seen_through) | set(cursor.outstanding)
        uncovered = uncovered_answers(conn, HISTORY_DELTA, candidates)
        new_slugs = [
            slug
            for slug in slugs_of(conn, candidates)
            if not instance.has_dynamic_partition(personality_partitions.name, slug)
        ]
    return Tick(uncovered, new_slugs, _left(conn, uncovered, cursor.reconciled_at, seen_through))


def _left(conn, uncovered: list[UncoveredAnswers], reconciled_at, seen_through) -> TickCursor:
    ids = dict(
        conn.execute(
            "SELECT slug, id FROM personalities WHERE slug = ANY(%s)", ([u.slug for u in uncovered],)
        ).fetchall()
    )
    return TickCursor(reconciled_at, seen_through, tuple(ids[u.slug] for u in uncovered))


def retry_delay_seconds(failures: int) -> float:
    """How long to wait after the `failures`-th failed run for one state before trying again."""
    return min(MAX_RETRY_DELAY_SECONDS, FIRST_RETRY_DELAY_SECONDS * 2 ** (failures - 1))


def _now() -> float:
    return time.time()


def run_request_for(uncovered: UncoveredAnswers, runs: list[RunRecord]) -> RunRequest | str | None:
    """The request for one state given its earlier runs (newest first): a RunRequest, a line saying
    why a retry waits, or None when a run for this state is under way or succeeded."""
    tags = {
        "tinybot/uncovered_answers": str(uncovered.answers),
        STATE_TAG: uncovered.state,
        HISTORY_TAG: uncovered.history,
    }
    if not runs:
        return RunRequest(
            run_key=uncovered.state, partition_key=uncovered.slug, tags=tags, run_config=uncovered.run_config
        )
    latest = runs[0]
    if latest.dagster_run.status not in _FAILED:
        return None
    failures = sum(record.dagster_run.status in _FAILED for record in runs)
    wait = retry_delay_seconds(failures) - (_now() - (latest.end_time or latest.create_timestamp.timestamp()))
    if wait > 0:
        return f"{uncovered.slug}: run {latest.dagster_run.run_id} failed; retry {failures} in {wait:,.0f}s"
    return RunRequest(
        run_key=f"{uncovered.state}:retry{failures}",
        partition_key=uncovered.slug,
        tags=tags | {"tinybot/retry_of": latest.dagster_run.run_id},
        run_config=uncovered.run_config,
    )


@sensor(
    job=incremental_memory_rebuild_job,
    minimum_interval_seconds=memory_rebuild_interval_seconds(),
    default_status=DefaultSensorStatus.STOPPED,
    description="Hourly by default (MEMORY_REBUILD_INTERVAL_SECONDS): one run per personality with "
    "answered exchanges that have no memory yet, reading only the history since each personality's "
    "coverage mark; daily (MEMORY_RECONCILE_INTERVAL_SECONDS, or after a cursor reset) the whole history. "
    "Registers new personalities as partitions; a failed run is requested again after a backoff.",
)
def memory_rebuild_sensor(context: SensorEvaluationContext, new_database: NewDatabaseResource):
    now = _now()
    cursor = TickCursor.parse(context.cursor)
    full = reconciliation_due(cursor, now)
    started = time.perf_counter()
    with new_database.connect() as conn:
        tick = full_tick(conn, context.instance, now) if full else delta_tick(conn, context.instance, cursor)
    uncovered, new_slugs = tick.uncovered, tick.new_slugs
    context.log.info(
        f"{'full reconciliation' if full else 'delta'}: {len(uncovered)} personalities with uncovered answers "
        f"({time.perf_counter() - started:.2f}s)"
    )
    earlier = _runs_by_state(context, [u.state for u in uncovered])
    run_requests = []
    for item in uncovered:
        request = run_request_for(item, earlier.get(item.state, []))
        if isinstance(request, RunRequest):
            run_requests.append(request)
        elif request is not None:
            context.log.info(request)
    if run_requests:
        context.log.info(
            f"{len(run_requests)} personalities with new exchanges: "
            + ", ".join(
                f"{r.partition_key} ({r.tags['tinybot/uncovered_answers']})" for r in run_requests[:10]
            )
        )
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[personality_partitions.build_add_request(new_slugs)]
        if new_slugs
        else [],
        cursor=tick.cursor.dumps(),
    )


def _runs_by_state(context: SensorEvaluationContext, states: list[str]) -> dict[str, list[RunRecord]]:
    """Earlier incremental runs for these states, newest first, in one query."""
    if not states:
        return {}
    records = context.instance.get_run_records(filters=RunsFilter(tags={STATE_TAG: states}))
    by_state: dict[str, list[RunRecord]] = {}
    for record in records:
        by_state.setdefault(record.dagster_run.tags[STATE_TAG], []).append(record)
    return by_state
