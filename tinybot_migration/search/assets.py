"""`memory_vector_index`: the HNSW index over every memory, built once both memory sources are
loaded, with its checks."""

from dagster import AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from tinybot_migration.memories.assets import rebuilt_memories
from tinybot_migration.relational.assets import NEW_DATABASE_POOL
from tinybot_migration.resources import NewDatabaseResource
from tinybot_migration.search.checks import (
    EVERY_MEMORY_HAS_AN_EMBEDDING,
    SEARCH_CHECK_DESCRIPTIONS,
    VECTOR_INDEX_PRESENT_AND_VALID,
    every_memory_has_an_embedding,
    vector_index_present_and_valid,
)
from tinybot_migration.search.vector_index import (
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    DEFAULT_MAX_BUILD_MEMORY_MB,
    INDEX_NAME,
    ensure_vector_index,
)
from tinybot_migration.shapes.assets import shapes_memories

SEARCH_GROUP = "search"


class VectorIndexConfig(Config):
    m: int = Field(default=DEFAULT_M, description="HNSW links per node")
    ef_construction: int = Field(
        default=DEFAULT_EF_CONSTRUCTION, description="HNSW candidates while building"
    )
    max_build_memory_mb: int = Field(
        default=DEFAULT_MAX_BUILD_MEMORY_MB,
        description="the most maintenance_work_mem the build may take (sized from the table up to this)",
    )


@asset(
    group_name=SEARCH_GROUP,
    deps=[rebuilt_memories, shapes_memories],
    check_specs=[
        AssetCheckSpec(
            name, asset="memory_vector_index", blocking=True, description=SEARCH_CHECK_DESCRIPTIONS[name]
        )
        for name in (VECTOR_INDEX_PRESENT_AND_VALID, EVERY_MEMORY_HAS_AN_EMBEDDING)
    ],
    pool=NEW_DATABASE_POOL,
    kinds={"postgres", "pgvector"},
    description=f"{INDEX_NAME}: HNSW (vector_cosine_ops) over every memory, built after both memory sources "
    "are loaded with maintenance_work_mem sized from the table, concurrently when the table serves other "
    "sessions; left in place when it exists and is valid (a large load drops it first).",
)
def memory_vector_index(
    context: AssetExecutionContext, config: VectorIndexConfig, new_database: NewDatabaseResource
) -> MaterializeResult:
    with new_database.connect() as conn:
        build = ensure_vector_index(
            conn, config.m, config.ef_construction, config.max_build_memory_mb, context.log.info
        )
        outcomes = [vector_index_present_and_valid(conn), every_memory_has_an_embedding(conn)]
    context.log.info(f"vector index: {build.action} over {build.rows:,} memories in {build.seconds:.1f}s")
    return MaterializeResult(
        metadata={
            "dagster/row_count": build.rows,
            "action": build.action,
            "build_seconds": round(build.seconds, 3),
            "index_size_bytes": build.state.size_bytes,
            "maintenance_work_mem_mb": build.maintenance_work_mem_mb,
            "built_concurrently": build.concurrently,
            "m": config.m,
            "ef_construction": config.ef_construction,
            "definition": build.state.definition,
        },
        check_results=[o.as_result() for o in outcomes],
    )


search_assets = [memory_vector_index]
