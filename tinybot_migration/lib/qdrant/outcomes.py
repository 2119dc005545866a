"""One outcome for every landed Qdrant point, per personality (../shared/QDRANT.md §4), recorded in
`tinybot_migration.qdrant_points` (outcome, reason, memory_id, decided_at):

- **rejected**: it cannot stand for a memory (`points.candidate_of` says why: a zero, non-finite
  or wrong-size vector, content missing or not text, createdAt missing or absurd, an unknown
  personality or persona, a collection the bot never wrote). It stays landed with its reason.
- **duplicate**: a `personality-*` copy of a point the bot regrouped into `persona-*` (same id), or
  a point standing for a memory an earlier point already stands for (a retry, the same text
  twice); `memory_id` names that memory.
- **superseded**: a decision already made elsewhere: a shapes.inc record deleted in the export, or
  a `personality-*` point the bot's 2025-10-23 regrouping dropped (no userId, refusal spam).
- **matched**: a memory the migration wrote holds it: the same text under the same persona (or
  shapes.inc user) and personality, or, for a live point, the rebuilt memory of its exchange (same
  persona, personality and channel; the memory's time within 30 s before the point's; the point's
  text ending with the exchange's answer). `memory_id` names it.
- **imported**: a Qdrant-only memory, written through the one memory pipeline (`QdrantSource` is a
  `pipeline.MemorySource`) with source_system 'qdrant' and the bot's memory id; `memory_id` names it.

Points are decided oldest first, so the first of several points standing for one memory keeps it.
Every decision is made again from the landing on each run and written only where it changed: a
re-run changes nothing and, with its memories present, embeds nothing.
"""

from __future__ import annotations

import bisect
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.ids import legacy_memory_id, memory_id
from tinybot_migration.lib.memories.pipeline import write_memories
from tinybot_migration.lib.memories.writer import SOURCE_BOT, SOURCE_QDRANT, MemorySourceReport, NewMemory
from tinybot_migration.lib.personalities import personality_batches
from tinybot_migration.lib.postgres import Connect
from tinybot_migration.lib.progress import Progress
from tinybot_migration.lib.qdrant.points import (
    OLD_LAYOUT,
    Candidate,
    LandedPoint,
    OldIds,
    candidate_of,
    canonical_id,
    is_refusal,
)
from tinybot_migration.lib.relational.copy import IdMaps
from tinybot_migration.lib.schema import QDRANT_POINTS, SHAPES_PERSONA_MAPPINGS, bot_timestamp
from tinybot_migration.lib.shapes.export import deleted_records

MATCHED, IMPORTED, DUPLICATE, SUPERSEDED, REJECTED = (
    "matched",
    "imported",
    "duplicate",
    "superseded",
    "rejected",
)
OUTCOMES = (MATCHED, IMPORTED, DUPLICATE, SUPERSEDED, REJECTED)
# A live point's createdAt is its answer's time, or Date.now() at the write a little after it.
LIVE_WRITE_LAG = timedelta(seconds=30)
_MS = timedelta(milliseconds=1)
# Points decided at a time (their vectors are held): about 300 MB of 1536-d float32 vectors.
POINTS_PER_BATCH = 50_000
SAMPLES = 5
REFUSED_REASON = "the embedding provider refused the text"


@dataclass(frozen=True)
class Decision:
    outcome: str
    reason: str | None = None
    memory_id: uuid.UUID | None = None
    persona_id: uuid.UUID | None = None  # what the point stands for in the new DB, where known
    personality_id: uuid.UUID | None = None


@dataclass
class PersonalityOutcomes:
    points: int = 0
    counts: Counter = field(default_factory=Counter)
    written: int = 0  # imported memories written by this run (the pipeline counts them)


@dataclass
class QdrantOutcomesReport(MemorySourceReport):
    per_personality: dict[str, PersonalityOutcomes] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)  # outcome -> points, this run's scope
    reasons: Counter = field(default_factory=Counter)  # (outcome, reason) -> points
    flagged: Counter = field(default_factory=Counter)  # accepted with a remark -> points
    samples: dict[str, list[str]] = field(default_factory=dict)  # outcome -> a few point refs with reasons
    unassigned: int = 0  # points naming no known personality (decided in every run)
    refs: list[tuple[str, str]] = field(default_factory=list)  # (collection, point_id) decided by the run
    rows_changed: int = 0  # decisions written (new or different)
    stale_imports_removed: int = 0  # Qdrant-only memories another source now holds

    @property
    def points(self) -> int:
        return sum(self.counts.values())


# --- the points of a run --------------------------------------------------------------------------


@dataclass(frozen=True)
class PointIndex:
    """Which landed points belong to which personality (old id as the payload names it)."""

    by_personality: dict[str, list[tuple[str, str]]]  # old personality id -> (collection, point_id)

    @classmethod
    def read(cls, conn: psycopg.Connection) -> PointIndex:
        rows = conn.execute(
            f"SELECT collection, point_id, payload->>'personalityId' FROM {QDRANT_POINTS.qualified}"
        )
        by_personality: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for collection, point_id, key in rows:
            by_personality["" if key is None else canonical_id(key)].append((collection, point_id))
        return cls(dict(by_personality))


def read_points(conn: psycopg.Connection, refs: list[tuple[str, str]]) -> list[LandedPoint]:
    """The landed points `refs` (collection, point_id), with their vectors as float32 arrays."""
    rows = conn.execute(
        f"SELECT p.collection, p.point_id, p.payload, p.vector, p.vector_kind FROM {QDRANT_POINTS.qualified} p"
        " JOIN unnest(%s::text[], %s::text[]) AS r(collection, point_id) USING (collection, point_id)",
        ([c for c, _ in refs], [p for _, p in refs]),
    )
    return [
        LandedPoint(c, p, payload or {}, None if v is None else np.asarray(v, dtype=np.float32), kind)
        for c, p, payload, v, kind in rows
    ]


def old_ids(old_conn: psycopg.Connection, new_conn: psycopg.Connection) -> OldIds:
    """The old → new id maps a point's payload needs (the relational copy's own allocation), kept
    to the personas and personalities that reached the new DB: a point of any other names an
    unknown one."""
    maps = IdMaps(old_conn)
    with old_conn.transaction():
        personas, personalities = maps.get("personas"), maps.get("personalities")
    return OldIds(
        _present(new_conn, "personas", personas),
        _present(new_conn, "personalities", personalities),
        dict(
            new_conn.execute(
                f"SELECT shapes_user_id, persona_id FROM {SHAPES_PERSONA_MAPPINGS.name}"
            ).fetchall()
        ),
    )


def _present(conn: psycopg.Connection, table: str, mapping: dict[str, str]) -> dict[str, str]:
    present = {str(r[0]) for r in conn.execute(f"SELECT id FROM {table}").fetchall()}
    return {old: new for old, new in mapping.items() if new in present}


# --- what the new DB already holds for a personality -------------------------------------------


@dataclass(frozen=True)
class Held:
    id: uuid.UUID
    source_system: str


class MemoriesOfPersonality:
    """A personality's memories as the decisions need them: by owner and text, and its rebuilt
    memories by (persona, channel) in time order with their answers."""

    def __init__(self, conn: psycopg.Connection, personality_id: uuid.UUID, texts: Iterable[str]) -> None:
        self.by_text: dict[tuple[object, str], Held] = {}
        for mid, persona, shapes_user, content, source in conn.execute(
            "SELECT id, persona_id, legacy_shapes_user_id, content, source_system FROM memories"
            " WHERE personality_id = %s AND content = ANY(%s)",
            (personality_id, list(set(texts))),
        ):
            for owner in (persona, shapes_user):
                key = (owner, content)
                # Another source's memory of the text wins over a Qdrant-only one (which then goes).
                if owner is not None and (
                    key not in self.by_text or self.by_text[key].source_system == SOURCE_QDRANT
                ):
                    self.by_text[key] = Held(mid, source)
        self.imports = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM memories WHERE personality_id = %s AND source_system = %s",
                (personality_id, SOURCE_QDRANT),
            )
        }
        self.exchanges: dict[tuple[uuid.UUID, str | None], list[tuple[datetime, str, uuid.UUID]]] = (
            defaultdict(list)
        )
        for mid, persona, channel, created, answer in conn.execute(
            "SELECT m.id, m.persona_id, m.channel_id, m.created_at, h.content FROM memories m"
            " JOIN conversation_history h ON h.id = m.message_ids[cardinality(m.message_ids)]::uuid"
            " WHERE m.personality_id = %s AND m.source_system = %s AND cardinality(m.message_ids) > 0"
            " ORDER BY m.created_at",
            (personality_id, SOURCE_BOT),
        ):
            self.exchanges[(persona, channel)].append((created, answer, mid))
        self.times = {key: [row[0] for row in rows] for key, rows in self.exchanges.items()}

    def same_text(self, candidate: Candidate) -> Held | None:
        for owner in (candidate.shapes_user_id, candidate.persona_id):
            if owner is not None and (held := self.by_text.get((owner, candidate.content))):
                return held
        return None

    def exchange_of(self, candidate: Candidate) -> Held | None:
        """The rebuilt memory of a live point's exchange: latest first within the write lag."""
        key = (candidate.persona_id, candidate.text("channelId"))
        rows = self.exchanges.get(key)
        if not rows:
            return None
        times = self.times[key]
        at = candidate.created_at
        low = bisect.bisect_left(times, at - LIVE_WRITE_LAG - _MS)
        high = bisect.bisect_right(times, at + _MS)
        name = candidate.point.payload.get("personalityName")
        for _created, answer, mid in reversed(rows[low:high]):
            if _ends_with_answer(candidate.content, name, answer):
                return Held(mid, SOURCE_BOT)
        return None


def _ends_with_answer(content: str, name: object, answer: str) -> bool:
    if isinstance(name, str):
        return content.endswith(f"\n{name}: {answer}")
    head, sep, tail = content.rpartition(f": {answer}")
    return sep != "" and tail == "" and "\n" in head


# --- deciding ---------------------------------------------------------------------------------------


@dataclass
class PersonalityDecisions:
    """The decisions for one personality's points, and the memories to import."""

    decisions: dict[str, Decision] = field(default_factory=dict)  # point ref -> decision
    new_memories: list[NewMemory] = field(default_factory=list)
    # Qdrant-only memories written before that no point stands for any more: a rebuilt or shapes.inc
    # memory holds their text now (say, an export file readable again). They go.
    stale_imports: set[uuid.UUID] = field(default_factory=set)
    flagged: dict[str, str] = field(default_factory=dict)  # point ref -> remark


def decide_personality(
    conn: psycopg.Connection,
    personality_id: uuid.UUID,
    points: list[LandedPoint],
    ids: OldIds,
    deleted: dict[str, str],
    now: datetime,
) -> PersonalityDecisions:
    """One decision per point of one personality (`deleted`: text -> id of its deleted shapes.inc record)."""
    result = PersonalityDecisions()
    candidates: list[Candidate] = []
    for point in points:
        found = candidate_of(point, ids, now)
        if isinstance(found, str):
            result.decisions[point.ref] = Decision(REJECTED, found)
        else:
            candidates.append(found)
            if found.flag:
                result.flagged[point.ref] = found.flag
    regrouped = {c.point.point_id: c.point.ref for c in candidates if c.layout.kind != OLD_LAYOUT}
    copies: dict[str, str] = {}
    live: list[Candidate] = []
    for candidate in candidates:
        if candidate.layout.kind == OLD_LAYOUT:
            if (original := regrouped.get(candidate.point.point_id)) is not None:
                copies[candidate.point.ref] = original
                continue
            if (dropped := _regrouping_dropped(candidate)) is not None:
                result.decisions[candidate.point.ref] = Decision(SUPERSEDED, dropped)
                continue
        live.append(candidate)
    if not live:
        return _standing_for(_with_copies(result, copies), candidates)
    held = MemoriesOfPersonality(conn, personality_id, (c.content for c in live))
    claimed: dict[uuid.UUID, str] = {}
    for candidate in sorted(live, key=_oldest_first):
        result.decisions[candidate.point.ref] = _decide(candidate, held, deleted, claimed, result)
    imported = {d.memory_id for d in result.decisions.values() if d.outcome == IMPORTED}
    result.stale_imports = held.imports - imported
    return _standing_for(_with_copies(result, copies), candidates)


def _standing_for(result: PersonalityDecisions, candidates: list[Candidate]) -> PersonalityDecisions:
    """Each candidate's decision names the persona and personality it stands for in the new DB."""
    for c in candidates:
        decision = result.decisions[c.point.ref]
        result.decisions[c.point.ref] = replace(
            decision, persona_id=c.persona_id, personality_id=c.personality_id
        )
    return result


def _with_copies(result: PersonalityDecisions, copies: dict[str, str]) -> PersonalityDecisions:
    """Each personality-* copy is a duplicate of its regrouped point, naming that point's memory."""
    for ref, original in copies.items():
        kept = result.decisions[original]
        result.decisions[ref] = Decision(DUPLICATE, f"copy of {original} ({kept.outcome})", kept.memory_id)
    return result


def _oldest_first(candidate: Candidate) -> tuple:
    # persona-* before personality-* at the same moment: the regrouped point keeps the memory.
    return (candidate.created_at, candidate.layout.kind == OLD_LAYOUT, candidate.point.ref)


def _regrouping_dropped(candidate: Candidate) -> str | None:
    """Why the bot's regrouping into persona-* skipped this old-layout point, if it did."""
    if is_refusal(candidate.content):
        return "dropped by the bot's 2025-10-23 regrouping: refusal spam"
    if "userId" not in candidate.point.payload:
        return "dropped by the bot's 2025-10-23 regrouping: no userId"
    return None


def _decide(
    candidate: Candidate,
    held: MemoriesOfPersonality,
    deleted: dict[str, str],
    claimed: dict[uuid.UUID, str],
    result: PersonalityDecisions,
) -> Decision:
    ref = candidate.point.ref
    found = held.same_text(candidate) or held.exchange_of(candidate)
    if found is None and candidate.content in deleted:
        return Decision(SUPERSEDED, f"deleted in the shapes.inc export (record {deleted[candidate.content]})")
    target = found.id if found else _memory_id(candidate)
    if (first := claimed.get(target)) is not None:
        return Decision(DUPLICATE, f"same memory as {first}", target)
    claimed[target] = ref
    remark = result.flagged.get(ref)
    if found is not None and found.source_system != SOURCE_QDRANT:
        return Decision(MATCHED, remark, target)
    if found is None:
        result.new_memories.append(memory_of(candidate, target))
    return Decision(IMPORTED, remark, target)


def _memory_id(candidate: Candidate) -> uuid.UUID:
    """The bot's rule: a shapes.inc user's memory keeps the legacy id (as the shapes import gives it)."""
    if candidate.shapes_user_id is not None:
        return legacy_memory_id(candidate.shapes_user_id, candidate.personality_id, candidate.content)
    return memory_id(candidate.persona_id, candidate.personality_id, candidate.content)


def memory_of(candidate: Candidate, target: uuid.UUID) -> NewMemory:
    """The memory a Qdrant-only point becomes, its columns from the payload as the bot wrote them."""
    summary_type = candidate.text("summaryType")
    user = candidate.shapes_user_id
    return NewMemory(
        id=target,
        persona_id=candidate.persona_id,
        personality_id=candidate.personality_id,
        content=candidate.content,
        is_summarized=summary_type not in (None, "conversation"),
        created_at=candidate.created_at,
        source_system=SOURCE_QDRANT,
        session_id=candidate.text("sessionId"),
        canon_scope=candidate.text("canonScope"),
        summary_type=summary_type,
        channel_id=candidate.text("channelId"),
        guild_id=candidate.text("guildId"),
        senders=[str(user)] if user else [],
        legacy_shapes_user_id=user,
    )


# --- the pipeline's source ----------------------------------------------------------------------------


class QdrantSource:
    """The landed Qdrant points as a memory source (`pipeline.MemorySource`): it decides each point
    of a batch of personalities, hands the Qdrant-only memories to the writer, and records every
    decision. Points naming no known personality are decided with the first batch of every run."""

    stage = "qdrant"

    def __init__(
        self,
        conn: psycopg.Connection,
        old_conn: psycopg.Connection,
        personality_ids: dict[str, uuid.UUID],
        export_dir: Path | None,
        now: datetime | None = None,
    ) -> None:
        self.conn, self.export_dir = conn, export_dir
        self.now = bot_timestamp(now)
        self.report = QdrantOutcomesReport(personality_ids=dict(personality_ids))
        self.ids = old_ids(old_conn, conn)
        self.index = PointIndex.read(conn)
        self.old_key = {uuid.UUID(new): old for old, new in self.ids.personalities.items()}
        self._unassigned = [
            ref
            for key, refs in self.index.by_personality.items()
            if key not in self.ids.personalities
            for ref in refs
        ]
        self._decided: dict[str, PersonalityDecisions] = {}
        self._refused: dict[uuid.UUID, str] = {}

    def refs_of(self, personality_id: uuid.UUID) -> list[tuple[str, str]]:
        return self.index.by_personality.get(self.old_key.get(personality_id, ""), [])

    def batches(self) -> list[dict[str, uuid.UUID]]:
        return personality_batches(
            self.report.personality_ids, lambda _, pid: len(self.refs_of(pid)), POINTS_PER_BATCH
        )

    def load_bound(self, batches: list[dict[str, uuid.UUID]]) -> int:
        return sum(len(self.refs_of(pid)) for pid in self.report.personality_ids.values())

    def plan(self, batch: dict[str, uuid.UUID]) -> list[NewMemory]:
        """Decide the batch's points; the Qdrant-only memories not written yet. Reads only."""
        self._decided = {}
        if self._unassigned:
            points = read_points(self.conn, self._unassigned)
            self._decided[""] = decide_personality(
                self.conn, uuid.UUID(int=0), points, self.ids, {}, self.now
            )
            self.report.unassigned = len(self._unassigned)
            self._unassigned = []
        for slug, personality_id in batch.items():
            points = read_points(self.conn, self.refs_of(personality_id))
            deleted = deleted_records(self.export_dir, slug) if self.export_dir else {}
            self._decided[slug] = decide_personality(
                self.conn, personality_id, points, self.ids, deleted, self.now
            )
            self.report.per_personality[slug] = PersonalityOutcomes(points=len(points))
        pending = [m for decided in self._decided.values() for m in decided.new_memories]
        imported = sum(
            d.outcome == IMPORTED for decided in self._decided.values() for d in decided.decisions.values()
        )
        self.report.pending += len(pending)
        self.report.already_present += imported - len(pending)
        return pending

    def batch_line(self, number: int, batches: int, batch: dict, pending: int) -> str:
        points = sum(len(d.decisions) for d in self._decided.values())
        label = f"qdrant (batch {number} of {batches})" if batches > 1 else "qdrant"
        return f"{label}: {points:,} points of {len(batch)} personalities decided, {pending:,} memories to import"

    def apply(self, conn: psycopg.Connection, batch: dict[str, uuid.UUID]) -> None:
        pass  # nothing the memories depend on

    def foresee(self, batch: dict[str, uuid.UUID]) -> None:
        pass

    def rejected(self, memory: NewMemory, slug: str, reason: str) -> None:
        self._refused[memory.id] = f"{REFUSED_REASON} ({reason})"

    def account(self, batch: dict[str, uuid.UUID]) -> None:
        """Count the batch's decisions (a refused text turns its points into rejects)."""
        report = self.report
        for slug, decided in self._decided.items():
            for ref, decision in list(decided.decisions.items()):
                report.refs.append(tuple(ref.partition("/")[::2]))
                if decision.memory_id in self._refused:
                    decision = decided.decisions[ref] = replace(
                        decision, outcome=REJECTED, reason=self._refused[decision.memory_id], memory_id=None
                    )
                report.counts[decision.outcome] += 1
                report.reasons[(decision.outcome, reason_class(decision.reason))] += 1
                if slug:
                    report.per_personality[slug].counts[decision.outcome] += 1
                samples = report.samples.setdefault(decision.outcome, [])
                if len(samples) < SAMPLES:
                    samples.append(f"{ref}" + (f": {decision.reason}" if decision.reason else ""))
            for remark in decided.flagged.values():
                report.flagged[remark] += 1

    def record(self, conn: psycopg.Connection, batch: dict[str, uuid.UUID]) -> None:
        decisions = {ref: d for decided in self._decided.values() for ref, d in decided.decisions.items()}
        stale = [m for decided in self._decided.values() for m in decided.stale_imports]
        with conn.transaction():
            self.report.rows_changed += record_decisions(conn, decisions)
            self.report.stale_imports_removed += conn.execute(
                "DELETE FROM memories WHERE id = ANY(%s) AND source_system = %s", (stale, SOURCE_QDRANT)
            ).rowcount


_IDS = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|\d+")


def reason_class(reason: str | None) -> str:
    """A reason with the ids and numbers it names taken out, to count alike reasons together."""
    return "" if reason is None else _IDS.sub("…", reason)


_RECORD_STAGE = "qdrant_decisions"


def record_decisions(conn: psycopg.Connection, decisions: dict[str, Decision]) -> int:
    """Write the decisions into qdrant_points where they differ; returns how many rows changed."""
    if not decisions:
        return 0
    decided = ("outcome", "reason", "memory_id", "persona_id", "personality_id")
    columns = ", ".join(decided)
    with conn.transaction():
        conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_RECORD_STAGE} (collection text, point_id text, outcome text,"
            " reason text, memory_id uuid, persona_id uuid, personality_id uuid) ON COMMIT DELETE ROWS"
        )
        with conn.cursor().copy(f"COPY {_RECORD_STAGE} FROM STDIN") as copy:
            for ref, d in decisions.items():
                collection, _, point_id = ref.partition("/")  # Qdrant names hold no "/"
                copy.write_row(
                    (collection, point_id, d.outcome, d.reason, d.memory_id, d.persona_id, d.personality_id)
                )
        changed = conn.execute(
            f"UPDATE {QDRANT_POINTS.qualified} p SET ({columns}, decided_at) = "
            f"({', '.join('d.' + c for c in decided)}, now()) FROM {_RECORD_STAGE} d"
            " WHERE p.collection = d.collection AND p.point_id = d.point_id"
            f" AND ({', '.join('p.' + c for c in decided)}) IS DISTINCT FROM ({', '.join('d.' + c for c in decided)})"
        ).rowcount
    return changed


def has_landed_points(conn: psycopg.Connection) -> bool:
    return conn.execute(f"SELECT EXISTS (SELECT FROM {QDRANT_POINTS.qualified})").fetchone()[0]


def decide_qdrant_points(
    conn: psycopg.Connection,
    old_conn: psycopg.Connection,
    provider: EmbeddingClient,
    personality_ids: dict[str, uuid.UUID],
    export_dir: Path | None,
    *,
    connect: Connect | None = None,
    log: Progress | None = None,
    now: datetime | None = None,
) -> QdrantOutcomesReport:
    """Decide every landed point of `personality_ids` (slug -> id) and of no known personality,
    import the Qdrant-only memories through the pipeline, and record each decision (module docstring)."""
    source = QdrantSource(conn, old_conn, personality_ids, export_dir, now)
    return write_memories(source, conn, provider, connect=connect, log=log)


# Why a landed point is not soundly accounted for, or NULL (the check and the cutover report ask).
_JUDGED_SQL = f"""
WITH judged AS (
    SELECT p.collection || '/' || p.point_id AS ref, p.outcome,
           CASE
             WHEN p.outcome IS NULL THEN 'no outcome (not decided yet)'
             WHEN p.outcome <> ALL(%(outcomes)s::text[]) THEN 'outcome ' || p.outcome || ' is not one of the five'
             WHEN p.outcome IN ('matched', 'imported') AND p.memory_id IS NULL THEN p.outcome || ' without a memory'
             WHEN p.memory_id IS NOT NULL AND m.id IS NULL
               THEN 'its memory ' || p.memory_id || ' does not exist (deleted after the run?)'
             WHEN p.memory_id IS NOT NULL AND m.embedding IS NULL THEN 'its memory ' || p.memory_id || ' has no embedding'
           END AS problem
    FROM {QDRANT_POINTS.qualified} p {{scope}} LEFT JOIN memories m ON m.id = p.memory_id
)
SELECT coalesce(outcome, 'none'), count(*), count(problem),
       (array_agg(ref || ': ' || problem ORDER BY ref) FILTER (WHERE problem IS NOT NULL))[1:%(named)s]
FROM judged GROUP BY 1
"""
_SCOPE = "JOIN unnest(%(collections)s::text[], %(ids)s::text[]) AS s(collection, point_id) USING (collection, point_id)"


@dataclass
class PointProblems:
    """How the landed points (or some of them) stand: points per outcome, and those not soundly
    accounted for (no outcome, no memory where one is named, a memory without an embedding)."""

    counts: Counter = field(default_factory=Counter)  # outcome ('none': undecided) -> points
    problems: int = 0
    named: list[str] = field(default_factory=list)  # "collection/point: why", the first few of each outcome

    @property
    def points(self) -> int:
        return sum(self.counts.values())


def point_problems(
    conn: psycopg.Connection, refs: list[tuple[str, str]] | None = None, named: int = SAMPLES * 2
) -> PointProblems:
    """Judge every landed point, or only `refs` (collection, point_id)."""
    params = {"outcomes": list(OUTCOMES), "named": named}
    if refs is not None:
        params |= {"collections": [c for c, _ in refs], "ids": [p for _, p in refs]}
    result = PointProblems()
    for outcome, points, problems, examples in conn.execute(
        _JUDGED_SQL.format(scope=_SCOPE if refs is not None else ""), params
    ):
        result.counts[outcome] = points
        result.problems += problems
        result.named += examples or []
    result.named = sorted(result.named)[:named]
    return result
