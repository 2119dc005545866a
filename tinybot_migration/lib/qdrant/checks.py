"""The promises the Qdrant landing makes, checked on the new DB."""

from __future__ import annotations

import psycopg

from tinybot_migration.lib.check_outcome import CheckOutcome, Markdown
from tinybot_migration.lib.qdrant.landing import Landing
from tinybot_migration.lib.qdrant.outcomes import OUTCOMES, point_problems
from tinybot_migration.lib.qdrant.parity import BUCKETS, HIT_CLASSES, LOST, MISSING, Parity
from tinybot_migration.lib.qdrant.vectors import MIN_COSINE, NOT_REUSED, VectorReuse
from tinybot_migration.lib.schema import QDRANT_POINTS

QDRANT_COUNTS_UNCHANGED_DURING_READ = "qdrant_counts_unchanged_during_read"
EVERY_QDRANT_POINT_LANDED = "every_qdrant_point_landed"
NO_QDRANT = "no Qdrant configured (QDRANT_URL or QDRANT_PATH): nothing to land"

QDRANT_CHECK_DESCRIPTIONS = {
    QDRANT_COUNTS_UNCHANGED_DURING_READ: "Every collection's exact count before the read equals its exact count "
    "after and the points the read saw: Qdrant was not written during the landing.",
    EVERY_QDRANT_POINT_LANDED: "Every collection has at least as many points in qdrant_points as Qdrant counted "
    "after the read, and the read saw each of them.",
}


def not_configured() -> list[CheckOutcome]:
    return [CheckOutcome(name, True, NO_QDRANT, {}) for name in QDRANT_CHECK_DESCRIPTIONS]


def qdrant_counts_unchanged_during_read(landing: Landing) -> CheckOutcome:
    moved = landing.written_during_read
    lines = [
        f"{c.collection}: {c.count_before:,} before, {c.count_after:,} after, {c.points_read:,} read"
        for c in moved
    ]
    return CheckOutcome(
        QDRANT_COUNTS_UNCHANGED_DURING_READ,
        passed=not moved,
        description=(
            "Qdrant was written during the read (land again when nothing writes to it): " + "; ".join(lines)
            if moved
            else f"{len(landing.collections):,} collections read between two equal exact counts"
        ),
        metadata={"collections_written_during_read": len(moved)},
    )


def every_qdrant_point_landed(conn: psycopg.Connection, landing: Landing) -> CheckOutcome:
    landed = dict(
        conn.execute(
            f"SELECT collection, count(*) FROM {QDRANT_POINTS.qualified} GROUP BY collection"
        ).fetchall()
    )
    short = [
        f"{c.collection}: {landed.get(c.collection, 0):,} landed of {c.count_after:,}"
        for c in landing.collections
        if landed.get(c.collection, 0) < c.count_after
    ]
    return CheckOutcome(
        EVERY_QDRANT_POINT_LANDED,
        passed=not short,
        description="points missing from qdrant_points: " + "; ".join(short)
        if short
        else f"all {sum(c.count_after for c in landing.collections):,} points of {len(landing.collections):,} "
        "collections are landed",
        metadata={"landed": Markdown(census_markdown(landing, landed))},
    )


def census_markdown(landing: Landing, landed: dict[str, int]) -> str:
    rows = [
        "| collection | vector | count before | count after | read | new | changed | landed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in landing.collections:
        vector = f"{c.vector_size} {c.distance}" if c.vector_size else "named/none"
        rows.append(
            f"| {c.collection} | {vector} | {c.count_before:,} | {c.count_after:,} | {c.points_read:,} |"
            f" {c.points_new:,} | {c.points_changed:,} | {landed.get(c.collection, 0):,} |"
        )
    return "\n".join(rows)


EVERY_QDRANT_POINT_HAS_ONE_OUTCOME = "every_qdrant_point_has_one_outcome"
QDRANT_OUTCOME_CHECK_DESCRIPTIONS = {
    EVERY_QDRANT_POINT_HAS_ONE_OUTCOME: "Every landed point of the run's personalities (and every point naming "
    "no known personality) has exactly one outcome (matched, imported, duplicate, superseded, rejected); "
    "a matched or imported point names its memory, and every memory a point names exists.",
}
NO_POINTS_LANDED = "no Qdrant points landed (qdrant_points is empty): nothing to decide"


def every_qdrant_point_has_one_outcome(conn: psycopg.Connection, refs: list[tuple[str, str]]) -> CheckOutcome:
    """The run's points `refs` (collection, point_id): one outcome each, every named memory present."""
    judged = point_problems(conn, refs)
    gone = len(refs) - judged.points
    passed = judged.problems == 0 and gone == 0
    if passed:
        description = f"all {judged.points:,} points have one outcome: " + ", ".join(
            f"{judged.counts.get(o, 0):,} {o}" for o in OUTCOMES
        )
    else:
        lost = f"{gone:,} points decided are no longer landed; " if gone else ""
        description = f"{lost}{judged.problems:,} points without one sound outcome: " + "; ".join(
            judged.named
        )
    return CheckOutcome(
        EVERY_QDRANT_POINT_HAS_ONE_OUTCOME,
        passed,
        description,
        {"points": judged.points, "points_with_problems": judged.problems},
    )


QDRANT_VECTOR_CLASSES_AGREE = "qdrant_vector_classes_agree"
QDRANT_VECTOR_CHECK_DESCRIPTIONS = {
    QDRANT_VECTOR_CLASSES_AGREE: "Every class of landed vectors sampled agrees with a fresh embedding of its "
    f"text (cosine >= {MIN_COSINE}). A class that does not (say, vectors re-embedded after a rename) is "
    "not reused: its texts are embedded like any other. WARN: nothing is lost either way.",
}


def nothing_landed(descriptions: dict[str, str]) -> list[CheckOutcome]:
    return [CheckOutcome(name, True, NO_POINTS_LANDED, {}) for name in descriptions]


def qdrant_vector_classes_agree(reuse: VectorReuse) -> CheckOutcome:
    disagree = [c for c in reuse.classes.values() if c.verdict == NOT_REUSED and c.min_cosine is not None]
    named = "; ".join(f"{c.key} ({c.points:,} points, cosine {c.min_cosine:.3f})" for c in disagree[:10])
    return CheckOutcome(
        QDRANT_VECTOR_CLASSES_AGREE,
        passed=not disagree,
        description=f"{len(disagree):,} class(es) of vectors that are not embeddings of their text, embedded "
        f"again: {named}"
        if disagree
        else f"{len(reuse.reused_classes):,} of {len(reuse.classes):,} classes agree and are reused; the rest: "
        + "; ".join(
            sorted({c.reason for c in reuse.classes.values() if c.verdict == NOT_REUSED})[:3] or ["none"]
        ),
        metadata={"classes_disagreeing": len(disagree)},
        severity="WARN",
    )


RETRIEVAL_PARITY_NOTHING_MISSING = "retrieval_parity_nothing_missing"
QDRANT_PARITY_CHECK_DESCRIPTIONS = {
    RETRIEVAL_PARITY_NOTHING_MISSING: "Sampled pairs of the smallest, median and largest size, stored vectors as "
    "queries: every hit of Qdrant's search (with the bot's filters) is found, displaced, lost or dropped by a "
    "decision in the bot's own memory query on the new DB; none is missing (no memory, or no embedding).",
}


def parity_markdown(parity: Parity) -> str:
    rows = [
        "| bucket | pairs | queries | hits | " + " | ".join(HIT_CLASSES) + " |",
        "|---" * (4 + len(HIT_CLASSES)) + "|",
    ]
    for bucket in BUCKETS:
        b = parity.buckets.get(bucket)
        if b is None:
            continue
        counts = " | ".join(f"{b.counts.get(name, 0):,}" for name in HIT_CLASSES)
        rows.append(f"| {bucket} | {len(b.pairs)} | {b.queries:,} | {b.hits:,} | {counts} |")
    return "\n".join(rows)


def retrieval_parity_nothing_missing(parity: Parity) -> CheckOutcome:
    missing = parity.total(MISSING)
    examples = [e for b in parity.buckets.values() for e in b.examples if e.endswith(MISSING)]
    lost = parity.total(LOST)
    summary = ", ".join(f"{parity.total(name):,} {name}" for name in HIT_CLASSES)
    return CheckOutcome(
        RETRIEVAL_PARITY_NOTHING_MISSING,
        passed=missing == 0,
        description=(
            f"{missing:,} Qdrant hits have no memory on the new DB: " + "; ".join(examples[:5])
            if missing
            else f"{parity.queries:,} queries, Qdrant answered by {parity.qdrant_answered_by}: {summary}"
            + (f" ({lost:,} lost to the index's approximation)" if lost else "")
        ),
        metadata={
            "parity": Markdown(parity_markdown(parity)),
            **{f"hits_{name}": parity.total(name) for name in HIT_CLASSES},
        },
    )
