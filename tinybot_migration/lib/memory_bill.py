"""The memory bill: what every memory source would write and what embedding it would cost, before
anything is written (`tinybot-migration run --dry-run`, the demo's first step, and the
`memory_bill` job in the UI).

It reads only: the new database (a read-only connection is enough), the old one, the export
folder; no provider is called. Each source is priced by the same pipeline that writes it
(`memories/pipeline.estimate_memories`). Before the first migration the new database has no
history and no people yet: the old database's are read instead (their ids differ; the texts, and
so the bill, do not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tinybot_migration.lib.check_outcome import CheckOutcome
from tinybot_migration.lib.embeddings.cache import CostEstimate, cache_model_name
from tinybot_migration.lib.embeddings.client import EmbeddingClient
from tinybot_migration.lib.memories.pipeline import estimate_memories
from tinybot_migration.lib.memories.rebuild import RebuildReport, RebuildSource
from tinybot_migration.lib.new_database_schema import has_new_schema, has_rows
from tinybot_migration.lib.personalities import people_database, personality_ids_for, personality_slugs
from tinybot_migration.lib.postgres import Connect
from tinybot_migration.lib.progress import Progress
from tinybot_migration.lib.schema import CONVERSATION_HISTORY
from tinybot_migration.lib.shapes.checks import survey_checks
from tinybot_migration.lib.shapes.export import survey_export
from tinybot_migration.lib.shapes.importer import ShapesImportReport, ShapesSource

# The assets that write each source's memories: the bill's figures are keyed by them.
REBUILT_MEMORIES = "rebuilt_memories"
SHAPES_MEMORIES = "shapes_memories"
SHAPES_EXPORT = "shapes_export"


@dataclass
class MemoryBill:
    model: str
    sources: dict[str, dict] = field(default_factory=dict)  # asset -> its estimate's figures
    findings: list[CheckOutcome] = field(default_factory=list)  # the export survey's failed checks
    seconds: float = 0.0

    @property
    def estimated_cost_usd(self) -> float:
        return sum(figures["estimated_cost_usd"] for figures in self.sources.values())


def estimate_memory_bill(
    new_conn: psycopg.Connection,
    old_connect: Connect,
    provider: EmbeddingClient,
    export_dir: Path | None,
    log: Progress | None = None,
) -> MemoryBill:
    """The bill of every personality's memories: the rebuild's and the shapes.inc import's (none
    when `export_dir` is None), with the export survey's findings."""
    started = time.perf_counter()
    model = cache_model_name(provider)
    cache = new_conn if has_new_schema(new_conn) else None
    bill = MemoryBill(model)
    rebuild = estimate_rebuild(new_conn, old_connect, provider, cache, log)
    bill.sources[REBUILT_MEMORIES] = rebuild.estimate_metadata(model)
    shapes = ShapesImportReport(estimate=CostEstimate())
    if export_dir is not None:
        with people_database(new_conn, old_connect) as (migrated, people):
            slugs = personality_slugs(people)
            survey = survey_export(export_dir, set(slugs))
            bill.findings = [o for o in survey_checks(export_dir, survey) if not o.passed]
            source = ShapesSource(migrated, people, export_dir, personality_ids_for(people, slugs))
            shapes = estimate_memories(source, cache, provider, log)
    bill.sources[SHAPES_MEMORIES] = shapes.estimate_metadata(model)
    bill.seconds = time.perf_counter() - started
    return bill


def estimate_rebuild(
    new_conn: psycopg.Connection,
    old_connect: Connect,
    provider: EmbeddingClient,
    cache: psycopg.Connection | None,
    log: Progress | None = None,
) -> RebuildReport:
    """What rebuilding every personality's memories would embed and cost; the new database's
    history once it has some, the old database's before (nothing present yet)."""
    if has_rows(new_conn, CONVERSATION_HISTORY):
        source = RebuildSource(new_conn, new_conn, personality_slugs(new_conn))
        return estimate_memories(source, cache, provider, log)
    with old_connect() as old_conn:
        source = RebuildSource(old_conn, None, personality_slugs(old_conn), history_from="old database")
        return estimate_memories(source, cache, provider, log)
