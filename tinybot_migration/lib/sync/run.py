"""A whole sync between the DEV and PROD new databases: the precheck, the tables, the vector index
when the sync was a bulk load, and the target's checks after it.

The source is always opened read-only, and the target too in a dry run. The URLs come from
DEV_DATABASE_URL and PROD_DATABASE_URL and reach logs, metadata and errors only masked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

import psycopg
from psycopg import sql

from tinybot_migration.lib.check_outcome import CheckOutcome
from tinybot_migration.lib.database import open_connection, open_read_only
from tinybot_migration.lib.memories.vector_index import (
    IndexBuild,
    PersonaIndexes,
    drop_for_bulk_load,
    ensure_persona_indexes,
    ensure_vector_index,
    index_state,
)
from tinybot_migration.lib.passwords import redact_url
from tinybot_migration.lib.postgres import SYNC_TARGET_LOCK, Connect, advisory_lock
from tinybot_migration.lib.progress import Progress, quiet
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS
from tinybot_migration.lib.settings import SYNC_SIDES
from tinybot_migration.lib.sync.engine import SyncOptions, row_count, sync_tables
from tinybot_migration.lib.sync.precheck import precheck, side_facts
from tinybot_migration.lib.sync.progress import SyncProgress
from tinybot_migration.lib.sync.results import TableSync
from tinybot_migration.lib.sync.tables import SYNC_TABLES, SYNC_TABLES_BY_NAME

# The sync rebuilds the HNSW index right after, so it drops it whenever that is cheaper: measured
# (benchmarks/db_sync.py --index-threshold, 20,000 indexed memories) maintaining it cost 28.3 s for
# 10% more memories against 30.3 s to drop and rebuild, 68.8 s against 40.4 s for 25%.
SYNC_INDEX_DROP_SHARE = 0.1
SYNC_INDEX_DROP_MIN_ROWS = 1_000


class SyncSettingError(ValueError):
    pass


@dataclass
class SyncReport:
    source: str
    target: str
    options: SyncOptions
    tables: list[TableSync]
    checks: list[CheckOutcome] = field(default_factory=list)
    index: IndexBuild | None = None
    persona_indexes: PersonaIndexes | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.passed for check in self.checks)


def side_url(side: str, environment: Mapping[str, str] | None = None) -> str:
    environment = os.environ if environment is None else environment
    if side not in SYNC_SIDES:
        raise SyncSettingError(f"a sync side is one of {', '.join(SYNC_SIDES)}, not {side!r}")
    url = environment.get(SYNC_SIDES[side].variable)
    if not url:
        raise SyncSettingError(f"{SYNC_SIDES[side].variable} is not set: the {side} new database's URL")
    return url


def run_sync(
    source: str,
    target: str,
    options: SyncOptions,
    log: Progress = quiet,
    environment: Mapping[str, str] | None = None,
    progress: SyncProgress | None = None,
) -> SyncReport:
    """`log` takes the sync's messages; `progress` its tables and batches (by default as lines on `log`)."""
    if source == target:
        raise SyncSettingError(f"source and target are both {source}: nothing to sync")
    source_url, target_url = side_url(source, environment), side_url(target, environment)
    started = time.perf_counter()
    source_role, target_role = f"source ({source})", f"target ({target})"
    with (
        open_read_only(source_url, f"{source_role} database") as source_conn,
        (
            open_read_only(target_url, f"{target_role} database")
            if options.dry_run
            else open_connection(target_url, f"{target_role} database", autocommit=True)
        ) as target_conn,
    ):
        precheck(
            side_facts(source_conn, source_role, redact_url(source_url)),
            side_facts(target_conn, target_role, redact_url(target_url)),
        )
        mode = "dry run: nothing is written" if options.dry_run else f"prefer {options.prefer} on conflicts"
        log(f"sync {redact_url(source_url)} → {redact_url(target_url)} ({mode})")
        # Two syncs into one target take turns: side by side they deadlock on the same rows and
        # the index, and each one's counts would move under the other's writes.
        with (
            nullcontext()
            if options.dry_run
            else advisory_lock(
                target_conn, SYNC_TARGET_LOCK, f"another sync into {target} is running; waiting for it", log
            )
        ):
            watch = partial(open_read_only, target_url, f"{target_role} database")
            report = _sync_locked(source, target, source_conn, target_conn, options, log, progress, watch)
    report.seconds = time.perf_counter() - started
    return report


def _sync_locked(
    source: str,
    target: str,
    source_conn: psycopg.Connection,
    target_conn: psycopg.Connection,
    options: SyncOptions,
    log: Progress,
    progress: SyncProgress | None,
    watch: Connect | None = None,
) -> SyncReport:
    dropped = not options.dry_run and _drop_index_for_a_bulk_load(source_conn, target_conn, log)
    tables = sync_tables(source_conn, target_conn, options, progress=progress or SyncProgress(log))
    report = SyncReport(source, target, options, tables)
    if not options.dry_run and (dropped or _index_missing(target_conn)):
        report.index = ensure_vector_index(target_conn, log=log, watch=watch)
    if not options.dry_run:  # personas the sync made large get their index; only what is missing is built
        report.persona_indexes = ensure_persona_indexes(target_conn, log=log)
    if not options.dry_run:
        log("checking the target: counts against the summary, orphans, embeddings, both sides again")
        report.checks = checks_after_sync(source_conn, target_conn, tables)
    return report


def _drop_index_for_a_bulk_load(
    source: psycopg.Connection, target: psycopg.Connection, log: Progress
) -> bool:
    """Drop the HNSW index when the sync brings more memories than it pays to insert into it one by
    one (`vector_index.drop_for_bulk_load`); the sized build puts it back after."""
    memories = SYNC_TABLES_BY_NAME["memories"]
    incoming = row_count(source, memories) - row_count(target, memories)
    return drop_for_bulk_load(
        target, incoming, log, share=SYNC_INDEX_DROP_SHARE, min_rows=SYNC_INDEX_DROP_MIN_ROWS
    )


def _index_missing(target: psycopg.Connection) -> bool:
    """Memories without their HNSW index (or with an invalid one): a sync stopped after it dropped
    the index and before it built it again, so the sync that resumes it builds it."""
    state = index_state(target)
    if state.exists and state.valid:
        return False
    return target.execute("SELECT EXISTS (SELECT 1 FROM memories)").fetchone()[0]


def checks_after_sync(
    source: psycopg.Connection, target: psycopg.Connection, tables: list[TableSync]
) -> list[CheckOutcome]:
    return [
        counts_match_the_summary(target, tables),
        no_orphans(target),
        embeddings_present_with_right_dimension(target),
        sides_agree_where_nothing_conflicted(source, target),
    ]


def counts_match_the_summary(target: psycopg.Connection, tables: list[TableSync]) -> CheckOutcome:
    wrong = []
    for result in tables:
        expected = result.target_rows_before + result.inserted
        actual = row_count(target, SYNC_TABLES_BY_NAME[result.table])
        if actual != expected:
            wrong.append(
                f"{result.table}: {actual:,} rows, expected {result.target_rows_before:,} + {result.inserted:,}"
            )
    return CheckOutcome(
        "counts_match_the_summary",
        not wrong,
        "; ".join(wrong) or "every table holds its rows before the sync plus those inserted",
    )


def no_orphans(target: psycopg.Connection) -> CheckOutcome:
    orphans = []
    for table in SYNC_TABLES:
        for column, parent in table.foreign_keys:
            query = sql.SQL(
                "SELECT count(*) FROM {t} c WHERE c.{col} IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM {p} p WHERE p.id = c.{col})"
            ).format(t=table.identifier, col=sql.Identifier(column), p=sql.Identifier(parent))
            count = target.execute(query).fetchone()[0]
            if count:
                orphans.append(f"{table.name}.{column}: {count:,} without their {parent} row")
    return CheckOutcome("no_orphans", not orphans, "; ".join(orphans) or "every reference has its row")


def embeddings_present_with_right_dimension(target: psycopg.Connection) -> CheckOutcome:
    missing, wrong = target.execute(
        "SELECT count(*) FILTER (WHERE embedding IS NULL),"
        " count(*) FILTER (WHERE vector_dims(embedding) <> %s) FROM memories",
        (EMBEDDING_DIMENSIONS,),
    ).fetchone()
    return CheckOutcome(
        "embeddings_present_with_right_dimension",
        missing == 0 and wrong == 0,
        f"{missing:,} memories without an embedding, {wrong:,} of another dimension than {EMBEDDING_DIMENSIONS}",
    )


def sides_agree_where_nothing_conflicted(
    source: psycopg.Connection, target: psycopg.Connection
) -> CheckOutcome:
    """Both sides fingerprinted again, from what is in them now: every source row is on the target
    with the same digest, but for the conflicts and the rows the target holds newer."""
    again = sync_tables(source, target, SyncOptions(dry_run=True))
    pending = {r.table: r.inserted + r.updated for r in again if r.inserted + r.updated}
    left = {r.table: r.conflict_count + r.target_newer for r in again if r.conflict_count + r.target_newer}
    return CheckOutcome(
        "sides_agree_where_nothing_conflicted",
        not pending,
        (
            "rows still to sync: " + ", ".join(f"{t} {n:,}" for t, n in pending.items())
            if pending
            else "every source row is identical on the target"
            + (
                "; left alone (conflicts or newer on the target): "
                + ", ".join(f"{t} {n:,}" for t, n in left.items())
                if left
                else ""
            )
        ),
        {"left_alone": left},
    )
