"""The promises the memory rebuild makes, checked over the personalities a run covered.

In a range run a check is evaluated once for all keys (docs/design.md §8), so each function takes every
personality id of the run. A delta run (the incremental sensor's) checks what it paired: each
function then also takes those memory ids (`only_ids`), so that the check costs what the delta
costs. Each looks only at memories of its source system, so legacy shapes.inc
memories of the same personalities never count for (or against) the rebuild. Tests corrupt
memories on purpose to prove each check can fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

import psycopg

from tinybot_migration.lib.check_outcome import CheckOutcome
from tinybot_migration.lib.embeddings.client import ZERO_NORM
from tinybot_migration.lib.ids import content_hash_sql
from tinybot_migration.lib.memories.writer import SOURCE_BOT, memory_ids, present_memory_ids
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS

EVERY_EXCHANGE_HAS_ONE_MEMORY = "every_exchange_has_one_memory"
EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS = "embeddings_present_with_right_dimensions"
NO_DUPLICATE_MEMORIES = "no_duplicate_memories"
SAMPLES = 5

MEMORY_CHECK_DESCRIPTIONS = {
    EVERY_EXCHANGE_HAS_ONE_MEMORY: "Every exchange in the conversation history has its memory (one per "
    "distinct exchange text: ids are derived from persona, personality and content).",
    EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS: f"No memory lacks an embedding, has one that is not "
    f"{EMBEDDING_DIMENSIONS} long, or has an all-zero one; no cache entry of their texts is all zero.",
    NO_DUPLICATE_MEMORIES: "No two memories share (personality, legacy user or persona, content).",
}


def every_exchange_has_one_memory(
    conn: psycopg.Connection,
    expected_ids: Collection[uuid.UUID],
    personality_ids: Sequence[uuid.UUID],
    source_system: str = SOURCE_BOT,
    only_ids: Collection[uuid.UUID] | None = None,
) -> CheckOutcome:
    present = (
        memory_ids(conn, personality_ids, source_system)
        if only_ids is None
        else present_memory_ids(conn, list(only_ids), source_system)
    )
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
    source_system: str = SOURCE_BOT,
    cache_model: str | None = None,
    only_ids: Collection[uuid.UUID] | None = None,
) -> CheckOutcome:
    """Every memory has an embedding of the right length that is not a zero vector, and so does
    every cache entry of `cache_model` for these memories' texts (pgvector refuses NaN and
    infinite values, so those cannot be stored)."""
    total, without, wrong, zero = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE embedding IS NULL),"
        " count(*) FILTER (WHERE vector_dims(embedding) <> %s),"
        " count(*) FILTER (WHERE vector_norm(embedding) < %s)"
        f" FROM memories WHERE {_scope(only_ids)} AND source_system = %s",
        (dimensions, ZERO_NORM, _scope_ids(personality_ids, only_ids), source_system),
    ).fetchone()
    zero_cached = (
        0
        if cache_model is None
        else _zero_cache_entries(conn, personality_ids, source_system, cache_model, dimensions, only_ids)
    )
    problems = [
        f"{count:,} {what}"
        for count, what in (
            (without, "memories without an embedding"),
            (wrong, "with the wrong dimensions"),
            (zero, "with an all-zero embedding"),
            (zero_cached, "cache entries of their texts holding an all-zero vector"),
        )
        if count
    ]
    return CheckOutcome(
        EMBEDDINGS_PRESENT_WITH_RIGHT_DIMENSIONS,
        passed=not problems,
        description="; ".join(problems) + " (`tinybot-migration purge-bad-embeddings`, then run again)"
        if problems
        else f"all {total:,} memories have a {dimensions}-dimensional, non-zero embedding",
        metadata={
            "memories": total,
            "without_embedding": without,
            "wrong_dimensions": wrong,
            "zero_vectors": zero,
            "zero_vectors_in_cache": zero_cached,
        },
    )


def _zero_cache_entries(
    conn: psycopg.Connection,
    personality_ids: Sequence[uuid.UUID],
    source_system: str,
    model: str,
    dimensions: int,
    only_ids: Collection[uuid.UUID] | None = None,
) -> int:
    return conn.execute(
        "SELECT count(*) FROM tinybot_migration.embedding_cache c"
        f" JOIN (SELECT DISTINCT {content_hash_sql('content')} AS text_hash FROM memories"
        f"       WHERE {_scope(only_ids)} AND source_system = %s) m USING (text_hash)"
        " WHERE c.model = %s AND c.dimensions = %s AND vector_norm(c.embedding) < %s",
        (_scope_ids(personality_ids, only_ids), source_system, model, dimensions, ZERO_NORM),
    ).fetchone()[0]


def _scope(only_ids: Collection[uuid.UUID] | None) -> str:
    """The memories a check reads: of the run's personalities, or only these ids."""
    return "personality_id = ANY(%s)" if only_ids is None else "id = ANY(%s)"


def _scope_ids(personality_ids: Sequence[uuid.UUID], only_ids: Collection[uuid.UUID] | None) -> list:
    return list(personality_ids) if only_ids is None else list(only_ids)


# A legacy memory belongs to its shapes.inc user (one memory per sender, docs/design.md §4), mapped to a
# persona or not; a rebuilt one has no legacy user and belongs to its persona.
_OWNER = "coalesce(legacy_shapes_user_id, persona_id)"
_DUPLICATES_SQL = f"""
SELECT count(*), coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM memories WHERE personality_id = ANY(%s) AND source_system = %s
    GROUP BY personality_id, {_OWNER}, content HAVING count(*) > 1
) AS duplicated
"""
# Only the groups these memories belong to (read through their personalities' index).
_DUPLICATES_OF_SQL = f"""
SELECT count(*), coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n
    FROM (SELECT DISTINCT personality_id, {_OWNER} AS owner, content FROM memories WHERE id = ANY(%s)) d
    JOIN memories m ON m.personality_id = d.personality_id
     AND coalesce(m.legacy_shapes_user_id, m.persona_id) = d.owner AND m.content = d.content
    WHERE m.source_system = %s
    GROUP BY d.personality_id, d.owner, d.content HAVING count(*) > 1
) AS duplicated
"""


def no_duplicate_memories(
    conn: psycopg.Connection,
    personality_ids: Sequence[uuid.UUID],
    source_system: str = SOURCE_BOT,
    only_ids: Collection[uuid.UUID] | None = None,
) -> CheckOutcome:
    query, scope = (
        (_DUPLICATES_SQL, list(personality_ids)) if only_ids is None else (_DUPLICATES_OF_SQL, list(only_ids))
    )
    groups, extra = conn.execute(query, (scope, source_system)).fetchone()
    return CheckOutcome(
        NO_DUPLICATE_MEMORIES,
        passed=groups == 0,
        description=f"{groups:,} (persona, personality, content) groups hold {extra:,} extra memories"
        if groups
        else "no duplicate memories",
        metadata={"duplicate_groups": groups, "extra_memories": int(extra)},
    )
