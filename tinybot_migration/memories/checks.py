"""The promises the memory rebuild makes, checked over the personalities a run covered.

In a range run a check is evaluated once for all keys (DESIGN §8), so each function takes every
personality id of the run. Each looks only at memories of its source system, so legacy shapes.inc
memories of the same personalities never count for (or against) the rebuild. Tests corrupt
memories on purpose to prove each check can fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

import psycopg

from tinybot_migration.check_outcome import CheckOutcome
from tinybot_migration.memories.writer import SOURCE_TINYBOT, memory_ids
from tinybot_migration.schema import EMBEDDING_DIMENSIONS

EVERY_EXCHANGE_HAS_ONE_MEMORY = "every_exchange_has_one_memory"
EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS = "embeddings_present_with_right_dimensions"
NO_DUPLICATE_MEMORIES = "no_duplicate_memories"
SAMPLES = 5

MEMORY_CHECK_DESCRIPTIONS = {
    EVERY_EXCHANGE_HAS_ONE_MEMORY: "Every exchange in the conversation history has its memory (one per "
    "distinct exchange text: ids are derived from persona, personality and content).",
    EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS: f"No rebuilt memory lacks an embedding or has one that is not "
    f"{EMBEDDING_DIMENSIONS} long.",
    NO_DUPLICATE_MEMORIES: "No two rebuilt memories share (persona, personality, content).",
}


def every_exchange_has_one_memory(
    conn: psycopg.Connection,
    expected_ids: Collection[uuid.UUID],
    personality_ids: Sequence[uuid.UUID],
    source_system: str = SOURCE_TINYBOT,
) -> CheckOutcome:
    present = memory_ids(conn, personality_ids, source_system)
    missing = [memory for memory in expected_ids if memory not in present]
    metadata = {"expected_memories": len(expected_ids), "missing_memories": len(missing)}
    if missing:
        metadata["missing_examples"] = ", ".join(sorted(str(m) for m in missing)[:SAMPLES])
    return CheckOutcome(
        EVERY_EXCHANGE_HAS_ONE_MEMORY,
        passed=not missing,
        description=f"{len(missing):,} of {len(expected_ids):,} exchanges have no memory"
        if missing
        else f"all {len(expected_ids):,} exchanges have their memory",
        metadata=metadata,
    )


def embeddings_present_with_right_dimensions(
    conn: psycopg.Connection,
    personality_ids: Sequence[uuid.UUID],
    dimensions: int = EMBEDDING_DIMENSIONS,
    source_system: str = SOURCE_TINYBOT,
) -> CheckOutcome:
    total, without, wrong = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE embedding IS NULL),"
        " count(*) FILTER (WHERE vector_dims(embedding) <> %s)"
        " FROM memories WHERE personality_id = ANY(%s) AND source_system = %s",
        (dimensions, list(personality_ids), source_system),
    ).fetchone()
    bad = without + wrong
    return CheckOutcome(
        EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS,
        passed=bad == 0,
        description=f"{without:,} memories without an embedding, {wrong:,} with the wrong dimensions"
        if bad
        else f"all {total:,} memories have a {dimensions}-dimensional embedding",
        metadata={"memories": total, "without_embedding": without, "wrong_dimensions": wrong},
    )


def no_duplicate_memories(
    conn: psycopg.Connection, personality_ids: Sequence[uuid.UUID], source_system: str = SOURCE_TINYBOT
) -> CheckOutcome:
    # An unmapped legacy memory has no persona: its shapes user stands in for one.
    groups, extra = conn.execute(
        "SELECT count(*), coalesce(sum(n - 1), 0) FROM ("
        " SELECT count(*) AS n FROM memories WHERE personality_id = ANY(%s) AND source_system = %s"
        " GROUP BY personality_id, coalesce(persona_id, legacy_shapes_user_id), content"
        " HAVING count(*) > 1) AS duplicated",
        (list(personality_ids), source_system),
    ).fetchone()
    return CheckOutcome(
        NO_DUPLICATE_MEMORIES,
        passed=groups == 0,
        description=f"{groups:,} (persona, personality, content) groups hold {extra:,} extra memories"
        if groups
        else "no duplicate memories",
        metadata={"duplicate_groups": groups, "extra_memories": int(extra)},
    )
