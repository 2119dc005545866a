"""The promises the Qdrant landing makes, checked on the new DB."""

from __future__ import annotations

import psycopg

from tinybot_migration.lib.check_outcome import CheckOutcome, Markdown
from tinybot_migration.lib.qdrant.landing import Landing
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
