"""`memory_vector_index`: the HNSW index over every memory, built once both memory sources are
loaded, and the checks that the bot's search is as good as exact search and fast."""

from dagster import AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from tinybot_migration.defs.check_results import check_results
from tinybot_migration.defs.cli_logger import progress_of
from tinybot_migration.defs.pools import NEW_DATABASE_POOL
from tinybot_migration.defs.resources import EmbeddingProviderResource, NewDatabaseResource
from tinybot_migration.lib.memories.search_checks import (
    EVERY_MEMORY_HAS_AN_EMBEDDING,
    SEARCH_CHECK_DESCRIPTIONS,
    SEARCH_LATENCY_WITHIN_BOUND,
    SEARCH_RECALL_AGAINST_EXACT,
    SEARCH_USES_THE_INTENDED_PLAN,
    VECTOR_INDEX_PRESENT_AND_VALID,
    every_memory_has_an_embedding,
    search_latency_within_bound,
    search_recall_against_exact,
    search_uses_the_intended_plan,
    vector_index_present_and_valid,
)
from tinybot_migration.lib.memories.search_quality import (
    RECALL_AT,
    SearchQuality,
    measure_search,
    search_plans,
)
from tinybot_migration.lib.memories.vector_index import (
    APPROXIMATE_PERSONA_INDEX_MIN_ROWS,
    AUTO_BUILD_MEMORY,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_EF_SEARCH,
    DEFAULT_M,
    DEFAULT_MAX_BUILD_MEMORY_MB,
    DEFAULT_PERSONA_INDEX_MIN_ROWS,
    INDEX_NAME,
    ITERATIVE_SCAN,
    PERSONA_INDEX_PREFIX,
    PersonaIndexes,
    ensure_persona_indexes,
    ensure_vector_index,
    vacuum_for_search,
    vector_index_lock,
)

SEARCH_GROUP = "search"


class VectorIndexConfig(Config):
    m: int = Field(default=DEFAULT_M, description="HNSW links per node")
    ef_construction: int = Field(
        default=DEFAULT_EF_CONSTRUCTION, description="HNSW candidates while building"
    )
    max_build_memory_mb: int = Field(
        default=AUTO_BUILD_MEMORY,
        description="the most maintenance_work_mem the build may take (sized from the table up to this); 0: "
        f"half this machine's available memory for a server running here, {DEFAULT_MAX_BUILD_MEMORY_MB} MB "
        "for one elsewhere. A graph that does not fit is finished on disk, several times slower.",
    )
    persona_index_min_rows: int = Field(
        default=DEFAULT_PERSONA_INDEX_MIN_ROWS,
        description="0 (the default): no persona index, and the bot's query reads a persona's rows exactly. "
        "Otherwise a persona, or a persona with one personality, with this many memories gets its own partial "
        f"HNSW index (one below half of it loses it): faster for large personas but approximate (e.g. "
        f"{APPROXIMATE_PERSONA_INDEX_MIN_ROWS:,}: recall@15 0.987-0.997 at 3-7 ms where exact takes 15-50 ms at "
        "100x, benchmarks/README.md); lower min_recall to what you accept",
    )
    ef_search: int = Field(
        default=DEFAULT_EF_SEARCH,
        description="hnsw.ef_search set on the database for every session: candidates an HNSW scan starts from",
    )
    min_recall: float = Field(
        default=1.0,
        description=f"recall@{RECALL_AT} of the bot's query against exact search below this fails (1.0: exactly "
        "the rows an exact scan returns)",
    )
    max_p95_ms: float = Field(
        default=5.0, description="a p95 search latency above this in any persona size bucket warns"
    )
    personas_per_bucket: int = Field(default=3, description="personas sampled per size bucket")
    queries_per_persona: int = Field(default=5, description="queries per sampled persona")


@asset(
    group_name=SEARCH_GROUP,
    deps=["rebuilt_memories", "shapes_memories"],
    check_specs=[
        AssetCheckSpec(
            name, asset="memory_vector_index", blocking=True, description=SEARCH_CHECK_DESCRIPTIONS[name]
        )
        for name in (VECTOR_INDEX_PRESENT_AND_VALID, EVERY_MEMORY_HAS_AN_EMBEDDING)
    ]
    + [
        AssetCheckSpec(name, asset="memory_vector_index", description=SEARCH_CHECK_DESCRIPTIONS[name])
        for name in (SEARCH_USES_THE_INTENDED_PLAN, SEARCH_RECALL_AGAINST_EXACT, SEARCH_LATENCY_WITHIN_BOUND)
    ],
    pool=NEW_DATABASE_POOL,
    kinds={"postgres", "pgvector"},
    description=f"{INDEX_NAME}: HNSW (vector_cosine_ops) over every memory, built after both memory sources "
    "are loaded with maintenance_work_mem sized from the table, concurrently when the table serves other "
    "sessions; left in place when it exists and is valid (a large load drops it first). The bot's query never "
    "takes it (it reads a persona's rows exactly through a B-tree; with no persona index the database gets "
    "hnsw.ef_search 1000, which prices the index's walk out); it is there because the migration plan asks "
    "for it and the bot's later migrations replace it by name. Only when persona_index_min_rows is set "
    f"(approximate, off by default): a partial HNSW index ({PERSONA_INDEX_PREFIX}…) per persona, and per persona "
    "with one personality, with that many memories or more, and the "
    f"database settings their scans need (hnsw.iterative_scan = {ITERATIVE_SCAN}, hnsw.ef_search, "
    "hnsw.max_scan_tuples); only what is missing is built. Then the table is vacuumed and analyzed, and the bot's "
    f"query, in a new session as the bot's, is measured against exact search on sampled personas (recall@{RECALL_AT}, "
    "rows returned, p50/p95 per persona size) and its plans checked.",
)
def memory_vector_index(
    context: AssetExecutionContext,
    config: VectorIndexConfig,
    new_database: NewDatabaseResource,
    embedding_provider: EmbeddingProviderResource,
) -> MaterializeResult:
    # Two runs measure one at a time too: side by side, both would pay for the same query texts.
    with new_database.connect() as conn, vector_index_lock(conn, progress_of(context)):
        build = ensure_vector_index(
            conn,
            config.m,
            config.ef_construction,
            config.max_build_memory_mb,
            progress_of(context),
            watch=new_database.connect,
        )
        personas = ensure_persona_indexes(
            conn,
            config.persona_index_min_rows,
            config.m,
            config.ef_construction,
            config.ef_search,
            config.max_build_memory_mb,
            progress_of(context),
        )
        vacuum_seconds = vacuum_for_search(conn)
        # Measured in a new session: it has the database's settings, as the bot's sessions do.
        with new_database.connect() as session:
            quality = measure_search(
                session, embedding_provider.client(), config.personas_per_bucket, config.queries_per_persona
            )
            plans = search_plans(session, quality)
        outcomes = [
            vector_index_present_and_valid(conn),
            every_memory_has_an_embedding(conn),
            search_uses_the_intended_plan(plans, build.rows),
            search_recall_against_exact(quality, config.min_recall),
            search_latency_within_bound(quality, config.max_p95_ms),
        ]
    context.log.info(
        f"vector index: {build.action} over {build.rows:,} memories in {build.seconds:.1f}s; "
        f"{personas.count} persona indexes ({len(personas.built)} built in {personas.seconds:.1f}s)"
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": build.rows,
            "action": build.action,
            "build_seconds": round(build.seconds, 3),
            # None: not rewritten (the index was in place, others use the table, or no room)
            "scope_order_seconds": None
            if build.scope_order_seconds is None
            else round(build.scope_order_seconds, 3),
            "vacuum_seconds": round(vacuum_seconds, 3),
            "index_size_bytes": build.state.size_bytes,
            "maintenance_work_mem_mb": build.maintenance_work_mem_mb,
            "graph_memory_mb": build.wanted_memory_mb,
            "graph_fit_in_memory": build.graph_fit_in_memory,
            "parallel_workers": build.parallel_workers,
            "built_concurrently": build.concurrently,
            "m": config.m,
            "ef_construction": config.ef_construction,
            "definition": build.state.definition,
            **persona_index_metadata(personas),
            **search_metadata(quality),
        },
        check_results=check_results(outcomes),
    )


def persona_index_metadata(personas: PersonaIndexes) -> dict:
    metadata: dict = {
        "persona_indexes": personas.count,
        "persona_indexes_built": len(personas.built),
        "persona_indexes_dropped": len(personas.dropped),
        "persona_index_min_rows": personas.min_rows,
        "persona_index_seconds": round(personas.seconds, 3),
        "persona_index_bytes": personas.size_bytes,
        "persona_indexed_memories_built": sum(personas.built.values()),
        "database_settings": personas.settings,
    }
    if personas.refused:
        metadata["persona_indexes_refused"] = personas.refused
    return metadata


def search_metadata(quality: SearchQuality) -> dict:
    """p50/p95 per persona size bucket, numeric so the UI plots them run over run."""
    metadata: dict = {
        "search_queries": quality.queries,
        "search_worst_p95_ms": round(quality.worst_p95_ms, 3),
    }
    for bucket, figures in quality.buckets.items():
        metadata[f"search_p50_ms_{bucket}"] = round(figures.p(50), 3)
        metadata[f"search_p95_ms_{bucket}"] = round(figures.p(95), 3)
        metadata[f"search_rows_{bucket}"] = figures.rows
    metadata["search_recall_at"] = RECALL_AT
    metadata["search_min_recall"] = round(quality.min_recall, 4)
    metadata["search_fewer_rows"] = quality.fewer
    if quality.example:
        metadata["search_example"] = quality.example
    return metadata


search_assets = [memory_vector_index]
