"""The go/no-go for cutover: can the bot switch to the new DB and can Qdrant be cancelled?

Read from the new DB (and Qdrant when it answers) at the moment it is asked, never from what a run
remembered: a memory deleted by hand after the run turns the verdict. Each blocker names what to
fix down to the point and memory ids. The evidence beside the verdict:
- every landed point accounted for: the landing's census (two equal exact counts a collection),
  Qdrant unchanged since (when reachable), one outcome a point, every memory a point names present
  and embedded;
- memory counts before (Qdrant points, per persona and personality) against after (pgvector);
- duplicate memories (the same text twice for one persona or shapes.inc user and personality);
- retrieval parity per bucket (`qdrant/parity.py`) and the bot query's latency as measured there;
- the vector index present and valid (the global one and every persona index);
- the checks of the last migration (passed by the caller: the CLI reads them from Dagster).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psycopg
from qdrant_client import QdrantClient

from tinybot_migration.lib.memories.vector_index import INDEX_NAME, PERSONA_INDEX_PREFIX
from tinybot_migration.lib.qdrant.outcomes import point_problems
from tinybot_migration.lib.qdrant.parity import MISSING, Parity, measure_parity
from tinybot_migration.lib.schema import QDRANT_COLLECTIONS, QDRANT_POINTS

NAMED = 10  # blockers of one kind named one by one; the rest counted
DUPLICATE_EXAMPLES = 5


@dataclass(frozen=True)
class FailedCheck:
    asset: str
    name: str
    description: str


@dataclass
class PairCounts:
    persona: str
    personality: str
    points: int  # Qdrant points standing for the pair (any outcome but rejected)
    standing: int  # distinct memories those points name
    memories: int  # memories of the pair in pgvector, every source


@dataclass
class CutoverReport:
    blockers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    qdrant: str = "not configured"  # where Qdrant's side was read
    collections: int = 0
    points: int = 0
    outcomes: Counter = field(default_factory=Counter)
    pairs: list[PairCounts] = field(default_factory=list)
    memories: int = 0
    duplicate_groups: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    parity: Parity | None = None
    indexes: list[tuple[str, bool]] = field(default_factory=list)  # (name, valid)
    checks_failed: list[FailedCheck] = field(default_factory=list)

    @property
    def go(self) -> bool:
        return not self.blockers


def cutover_report(
    conn: psycopg.Connection,
    client: QdrantClient | None = None,
    failed_checks: list[FailedCheck] | None = None,
    qdrant_configured: bool = False,
) -> CutoverReport:
    """The verdict and its evidence (module docstring); `client` a store that answered, if any."""
    report = CutoverReport(qdrant="its own search" if client is not None else "not configured")
    if qdrant_configured and client is None:
        report.qdrant = "configured but not answering: compared over the landed vectors"
    _landing(conn, report, client, qdrant_configured)
    if report.points:
        _points(conn, report)
        _pair_counts(conn, report)
        report.parity = measure_parity(conn, client)
        if missing := report.parity.total(MISSING):
            examples = [e for b in report.parity.buckets.values() for e in b.examples if e.endswith(MISSING)]
            report.blockers.append(
                f"retrieval parity: {missing:,} Qdrant hits have no memory ({'; '.join(examples[:3])})"
            )
    report.memories = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    _duplicates(conn, report)
    _indexes(conn, report)
    report.checks_failed = list(failed_checks or [])
    report.blockers += [f"check {c.asset}.{c.name} failed: {c.description}" for c in report.checks_failed]
    return report


def _landing(
    conn: psycopg.Connection, report: CutoverReport, client: QdrantClient | None, configured: bool
) -> None:
    census = conn.execute(
        f"SELECT collection, count_before, count_after, points_read FROM {QDRANT_COLLECTIONS.qualified} ORDER BY 1"
    ).fetchall()
    report.collections = len(census)
    report.points = conn.execute(f"SELECT count(*) FROM {QDRANT_POINTS.qualified}").fetchone()[0]
    if not census:
        if configured:
            report.blockers.append("Qdrant is configured but nothing is landed: run the migration first")
        else:
            report.notes.append(
                "no Qdrant store landed (QDRANT_URL or QDRANT_PATH unset): nothing to account for"
            )
        return
    for collection, before, after, read in census:
        if not before == after == read:
            report.blockers.append(
                f"collection {collection}: Qdrant was written during the landing ({before:,} before, {after:,} after, "
                f"{read:,} read): land it again"
            )
    if client is not None:
        _unchanged_since(client, census, report)


def _unchanged_since(client: QdrantClient, census: list[tuple], report: CutoverReport) -> None:
    """Qdrant still holds what was landed: the same collections, the same exact counts."""
    landed = {collection: after for collection, _, after, _ in census}
    now = {c.name: client.count(c.name, exact=True).count for c in client.get_collections().collections}
    for collection in sorted(set(landed) | set(now)):
        if landed.get(collection) != now.get(collection):
            report.blockers.append(
                f"collection {collection}: Qdrant holds {now.get(collection, 0):,} points, {landed.get(collection, 0):,} "
                "were landed: Qdrant was written since; land it again"
            )


def _points(conn: psycopg.Connection, report: CutoverReport) -> None:
    judged = point_problems(conn, named=NAMED)
    report.outcomes = judged.counts
    report.blockers += [f"point {problem}" for problem in judged.named]
    if judged.problems > len(judged.named):
        report.blockers.append(f"… and {judged.problems - len(judged.named):,} more points like these")


def _pair_counts(conn: psycopg.Connection, report: CutoverReport) -> None:
    """Before (Qdrant points standing for a persona and personality) against after (its memories)."""
    rows = conn.execute(
        f"""
        WITH standing AS (
            SELECT persona_id, personality_id, count(*) AS points, count(DISTINCT memory_id) AS memories
            FROM {QDRANT_POINTS.qualified}
            WHERE persona_id IS NOT NULL AND outcome IS DISTINCT FROM 'rejected'
            GROUP BY 1, 2
        )
        SELECT coalesce(pe.name, s.persona_id::text), coalesce(pl.slug, s.personality_id::text), s.points,
               s.memories, (SELECT count(*) FROM memories m WHERE m.persona_id = s.persona_id
                            AND m.personality_id = s.personality_id)
        FROM standing s LEFT JOIN personas pe ON pe.id = s.persona_id
        LEFT JOIN personalities pl ON pl.id = s.personality_id
        ORDER BY s.points DESC, 1, 2
        """
    ).fetchall()
    report.pairs = [PairCounts(*row) for row in rows]
    for pair in report.pairs:
        if pair.memories < pair.standing:
            report.blockers.append(
                f"{pair.persona} × {pair.personality}: {pair.standing:,} memories stood for in Qdrant, "
                f"{pair.memories:,} in pgvector"
            )


def _duplicates(conn: psycopg.Connection, report: CutoverReport) -> None:
    rows = conn.execute(
        """
        SELECT pl.slug, count(*), array_agg(m.id::text ORDER BY m.id)
        FROM memories m JOIN personalities pl ON pl.id = m.personality_id
        GROUP BY pl.slug, m.personality_id, coalesce(m.legacy_shapes_user_id, m.persona_id), m.content
        HAVING count(*) > 1
        ORDER BY 1
        """
    ).fetchall()
    report.duplicate_groups = len(rows)
    report.duplicate_examples = [
        f"{slug}: {n} memories of one text ({', '.join(ids[:3])})" for slug, n, ids in rows
    ][:DUPLICATE_EXAMPLES]
    if rows:
        report.blockers.append(
            f"{len(rows):,} groups of duplicate memories (one text twice for one owner and personality): "
            + "; ".join(report.duplicate_examples[:3])
        )


def _indexes(conn: psycopg.Connection, report: CutoverReport) -> None:
    report.indexes = [
        (name, valid)
        for name, valid in conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relnamespace = 'public'::regnamespace AND (c.relname = %s OR c.relname LIKE %s) ORDER BY 1",
            (INDEX_NAME, PERSONA_INDEX_PREFIX + "%"),
        )
    ]
    if INDEX_NAME not in {name for name, _ in report.indexes}:
        report.blockers.append(
            f"the vector index {INDEX_NAME} is missing: run the migration (memory_vector_index)"
        )
    report.blockers += [
        f"the index {name} is invalid: build it again" for name, valid in report.indexes if not valid
    ]


PAIR_ROWS = 10


def evidence_lines(report: CutoverReport, pair_rows: int = PAIR_ROWS) -> list[str]:
    """The verdict and its evidence as Markdown lines (the CLI prints them, the asset keeps them)."""
    lines = [
        f"**{'GO' if report.go else 'NO-GO'}**: "
        + ("nothing blocks the cutover" if report.go else f"{len(report.blockers)} blockers")
    ]
    lines += [f"- blocker: {b}" for b in report.blockers]
    lines += [f"- note: {n}" for n in report.notes]
    lines.append(
        f"- Qdrant ({report.qdrant}): {report.points:,} points of {report.collections:,} collections landed; "
        + ", ".join(f"{n:,} {o}" for o, n in sorted(report.outcomes.items()))
    )
    if report.pairs:
        lines.append(
            f"- counts per persona × personality ({len(report.pairs):,} pairs; Qdrant points → memories they stand "
            "for → memories in pgvector):"
        )
        lines += [
            f"  - {p.persona} × {p.personality}: {p.points:,} → {p.standing:,} → {p.memories:,}"
            for p in report.pairs[:pair_rows]
        ]
    lines.append(
        f"- pgvector: {report.memories:,} memories; {report.duplicate_groups:,} groups of duplicates"
    )
    lines += [f"  - {e}" for e in report.duplicate_examples]
    if report.parity is not None:
        parity = report.parity
        lines.append(
            f"- retrieval parity ({parity.queries:,} queries, Qdrant answered by {parity.qdrant_answered_by}); "
            f"the bot's query p50 / p95 {parity.latency_ms(50)} / {parity.latency_ms(95)} ms here:"
        )
        lines += [
            f"  - {b.bucket}: "
            + ", ".join(f"{n:,} {c}" for c, n in sorted(b.counts.items()))
            + f" of {b.hits:,} hits"
            for b in parity.buckets.values()
        ]
    valid = sum(valid for _, valid in report.indexes)
    lines.append(
        f"- vector indexes: {valid} valid of {len(report.indexes)} ({INDEX_NAME} and the persona indexes)"
    )
    lines.append(f"- checks of the migration: {len(report.checks_failed)} ERROR checks failing")
    return lines
