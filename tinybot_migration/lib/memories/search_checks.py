"""The promises the vector index and the search make, checked on the new DB."""

from __future__ import annotations

import psycopg

from tinybot_migration.lib.check_outcome import WARN, CheckOutcome, Markdown
from tinybot_migration.lib.memories.bot_query import PERSONA_INDEX
from tinybot_migration.lib.memories.search_quality import (
    RECALL_AT,
    THRESHOLDS,
    PersonaPlan,
    SearchPlans,
    SearchQuality,
)
from tinybot_migration.lib.memories.vector_index import INDEX_NAME, ITERATIVE_SCAN, index_state
from tinybot_migration.lib.schema import PERSONA_PERSONALITY_INDEX

VECTOR_INDEX_PRESENT_AND_VALID = "vector_index_present_and_valid"
EVERY_MEMORY_HAS_AN_EMBEDDING = "every_memory_has_an_embedding"
SEARCH_USES_THE_INTENDED_PLAN = "search_uses_the_intended_plan"
SEARCH_RECALL_AGAINST_EXACT = "search_recall_against_exact"
SEARCH_LATENCY_WITHIN_BOUND = "search_latency_within_bound"
# Below this many memories a sequential scan or the plain persona B-tree is the planner's right
# answer for the bot's query.
SEQUENTIAL_SCAN_MAX_ROWS = 10_000

# The B-trees that read a persona's rows exactly: the bot's, and the project's (persona, personality,
# created_at) one, whose leading column serves a persona alone as well.
EXACT_PATHS = (PERSONA_INDEX, PERSONA_PERSONALITY_INDEX[1].name)
EXACT_PATHS_NAMED = " or ".join(EXACT_PATHS)  # for descriptions

SEARCH_CHECK_DESCRIPTIONS = {
    VECTOR_INDEX_PRESENT_AND_VALID: f"{INDEX_NAME} exists, is an HNSW index with vector_cosine_ops, and is valid.",
    EVERY_MEMORY_HAS_AN_EMBEDDING: "No memory lacks an embedding (it would be invisible to the index and to search).",
    SEARCH_USES_THE_INTENDED_PLAN: "In a new session (the database's settings, as the bot's sessions have them), "
    "EXPLAIN of the bot's query for the largest persona and for every scope (persona, or persona and personality) "
    "with its own HNSW index reads "
    f"the persona's rows through its own index or {EXACT_PATHS_NAMED}, never through the global {INDEX_NAME}; the "
    f"persona indexes are valid and every session scans them with hnsw.iterative_scan = {ITERATIVE_SCAN}.",
    SEARCH_RECALL_AGAINST_EXACT: "Over the smallest, median and largest personas, queried with their own "
    f"memories' text cut in half, the bot's query returns the exact answer: recall@{RECALL_AT} against exact "
    "search (every row of the persona by exact distance; the mean over a bucket's queries) is at least "
    "min_recall (1.0 unless persona indexes were chosen), with and without the 0.15 threshold, and no search "
    "returns fewer rows than qualify.",
    SEARCH_LATENCY_WITHIN_BOUND: "Over the same queries, the p95 latency of the bot's query in every persona "
    "size bucket is within max_p95_ms (a warning: it measures the machine as much as the plan).",
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


def search_uses_the_intended_plan(plans: SearchPlans, memories: int) -> CheckOutcome:
    """In a session like the bot's, the bot's query reads a persona's rows through the persona's own
    index where it has one (valid, with iterative scans set for every session) and otherwise through
    the bot's persona B-tree (or, on a table small enough, a scan of all rows): never through the
    global HNSW index, which loses rows under the persona filter."""
    everything = ([plans.largest] if plans.largest else []) + plans.indexed
    if not everything:
        return CheckOutcome(SEARCH_USES_THE_INTENDED_PLAN, True, "no persona has memories yet", {})
    problems = [
        f"the bot's query for persona {p.persona_id}"
        + (f" with personality {p.personality_id}" if p.personality_id else "")
        + f" walks {INDEX_NAME}, which loses rows under the persona filter"
        for p in everything
        if INDEX_NAME in p.plan
    ]
    problems += [f"{i.name} is invalid (an interrupted build)" for i in plans.indexes.values() if not i.valid]
    if plans.indexes and plans.iterative_scan != ITERATIVE_SCAN:
        problems.append(
            f"a new session has hnsw.iterative_scan = {plans.iterative_scan}, not {ITERATIVE_SCAN}: the persona "
            "indexes return fewer rows than qualify under a personality or cutoff filter"
        )
    largest = plans.largest
    if (
        largest
        and largest.index is None
        and not any(path in largest.plan for path in EXACT_PATHS)
        and memories >= SEQUENTIAL_SCAN_MAX_ROWS
    ):
        problems.append(
            f"the bot's query for the largest persona does not use {EXACT_PATHS_NAMED} on {memories:,} memories"
        )
    unused = [p.index for p in plans.indexed if p.index not in p.plan]
    if problems:
        description = "; ".join(problems)
    else:
        description = _largest_persona_path(largest, memories)
        if plans.indexes:
            description += (
                f"; {len(plans.indexed) - len(unused)} of {len(plans.indexes)} persona indexes serve their persona"
                + (f" (the planner prefers the B-tree for {', '.join(unused)})" if unused else "")
            )
    return CheckOutcome(
        SEARCH_USES_THE_INTENDED_PLAN,
        passed=not problems,
        description=description,
        metadata={
            "plan": Markdown(f"```\n{largest.plan if largest else everything[0].plan}\n```"),
            "memories": memories,
            "persona_indexes": len(plans.indexes),
            "persona_indexes_used": len(plans.indexed) - len(unused),
            "iterative_scan": plans.iterative_scan,
        },
    )


def _largest_persona_path(largest: PersonaPlan | None, memories: int) -> str:
    if largest is None:
        return "no persona sampled"
    if largest.index and largest.index in largest.plan:
        return f"the largest persona's rows are read through its own index {largest.index}"
    for path in EXACT_PATHS:
        if path in largest.plan:
            return f"the largest persona's rows are read through {path}"
    return f"on {memories:,} memories the planner reads the largest persona's rows another way (cheaper than {EXACT_PATHS_NAMED} here)"


def search_recall_against_exact(quality: SearchQuality, min_recall: float) -> CheckOutcome:
    metadata: dict = {
        "queries": quality.queries,
        "recall_at": RECALL_AT,
        "min_recall": round(quality.min_recall, 4),
        "fewer_rows": quality.fewer,
    }
    for bucket, figures in quality.buckets.items():
        metadata[f"recall_{bucket}"] = round(figures.recall("threshold"), 4)
        metadata[f"recall_{bucket}_no_threshold"] = round(figures.recall("no_threshold"), 4)
        metadata[f"worst_query_recall_{bucket}"] = round(
            min(figures.worst_query_recall(w) for w in THRESHOLDS), 4
        )
    below = [
        f"{bucket} ({which.replace('_', ' ')}): {figures.recall(which):.3f}"
        for bucket, figures in quality.buckets.items()
        for which in THRESHOLDS
        if figures.recall(which) < min_recall
    ]
    problems = [f"recall@{RECALL_AT} below {min_recall}: {'; '.join(below)}"] if below else []
    problems += [
        f"{bucket}: {figures.fewer} searches returned fewer rows than qualify"
        for bucket, figures in quality.buckets.items()
        if figures.fewer
    ]
    return CheckOutcome(
        SEARCH_RECALL_AGAINST_EXACT,
        passed=not problems,
        description=(
            "; ".join(problems)
            if problems
            else f"recall@{RECALL_AT} at least {quality.min_recall:.3f} in every bucket, with and without the "
            f"threshold, never fewer rows than qualify ({quality.queries} queries)"
        ),
        metadata=metadata,
    )


def search_latency_within_bound(quality: SearchQuality, max_p95_ms: float) -> CheckOutcome:
    metadata: dict = {"queries": quality.queries, "worst_p95_ms": round(quality.worst_p95_ms, 3)}
    for bucket, figures in quality.buckets.items():
        metadata[f"p95_ms_{bucket}"] = round(figures.p(95), 3)
    over = [
        f"{bucket} ({figures.rows:,} memories): {figures.p(95):.2f} ms"
        for bucket, figures in quality.buckets.items()
        if figures.p(95) > max_p95_ms
    ]
    return CheckOutcome(
        SEARCH_LATENCY_WITHIN_BOUND,
        passed=not over,
        description=f"p95 above {max_p95_ms} ms: {'; '.join(over)}"
        if over
        else f"p95 at most {quality.worst_p95_ms:.2f} ms in every bucket (bound {max_p95_ms} ms, "
        f"{quality.queries} queries)",
        metadata=metadata,
        severity=WARN,
    )
