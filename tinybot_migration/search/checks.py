"""The promises the vector index and the search make, checked on the new DB."""

from __future__ import annotations

import psycopg

from tinybot_migration.check_outcome import CheckOutcome
from tinybot_migration.search.vector_index import INDEX_NAME, index_state

VECTOR_INDEX_PRESENT_AND_VALID = "vector_index_present_and_valid"
EVERY_MEMORY_HAS_AN_EMBEDDING = "every_memory_has_an_embedding"

SEARCH_CHECK_DESCRIPTIONS = {
    VECTOR_INDEX_PRESENT_AND_VALID: f"{INDEX_NAME} exists, is an HNSW index with vector_cosine_ops, and is valid.",
    EVERY_MEMORY_HAS_AN_EMBEDDING: "No memory lacks an embedding (it would be invisible to the index and to search).",
}


def vector_index_present_and_valid(conn: psycopg.Connection) -> CheckOutcome:
    state = index_state(conn)
    kind_ok = "USING hnsw (embedding vector_cosine_ops)" in state.definition
    passed = state.exists and state.valid and kind_ok
    if not state.exists:
        description = f"{INDEX_NAME} does not exist"
    elif not state.valid:
        description = f"{INDEX_NAME} is invalid (an interrupted concurrent build): materialize memory_vector_index again"
    elif not kind_ok:
        description = f"{INDEX_NAME} is not the HNSW cosine index: {state.definition}"
    else:
        description = f"{INDEX_NAME} is valid ({state.size_bytes / 2**20:,.1f} MB)"
    return CheckOutcome(
        VECTOR_INDEX_PRESENT_AND_VALID,
        passed=passed,
        description=description,
        metadata={"index_size_bytes": state.size_bytes, "definition": state.definition},
    )


def every_memory_has_an_embedding(conn: psycopg.Connection) -> CheckOutcome:
    total, without = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE embedding IS NULL) FROM memories"
    ).fetchone()
    return CheckOutcome(
        EVERY_MEMORY_HAS_AN_EMBEDDING,
        passed=without == 0,
        description=f"{without:,} of {total:,} memories have no embedding"
        if without
        else f"all {total:,} memories have an embedding",
        metadata={"memories": total, "without_embedding": without},
    )
