"""What both sides of a sync must agree on before anything is written: the bot's migrations (exactly
the version the sync's table descriptions follow), the project schema's version, the vector
dimension and a pgvector that reads the other side's binary vectors (≥ 0.8.2)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from tinybot_migration.lib.new_database_schema import (
    applied_bot_migrations,
    migration_problems,
    project_schema_version,
)

MIN_PGVECTOR = (0, 8, 2)


class SyncPrecheckError(RuntimeError):
    """The two sides cannot be synced as they are; nothing was written."""


@dataclass(frozen=True)
class SideFacts:
    role: str  # "source (dev)", "target (prod)"
    url: str  # masked
    schema_version: int | None
    bot_migration_problems: tuple[str, ...]  # how the bot's applied migrations differ from the supported ones
    dimensions: int | None
    pgvector: str | None


def side_facts(conn: psycopg.Connection, role: str, url: str) -> SideFacts:
    pgvector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    dimensions = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass('public.memories')"
        " AND attname = 'embedding' AND NOT attisdropped"
    ).fetchone()
    return SideFacts(
        role,
        url,
        project_schema_version(conn),
        tuple(migration_problems(applied_bot_migrations(conn))) if _has_prisma_migrations(conn) else (),
        dimensions[0] if dimensions and dimensions[0] > 0 else None,
        pgvector[0] if pgvector else None,
    )


def _has_prisma_migrations(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('public._prisma_migrations') IS NOT NULL").fetchone()[0]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def precheck(source: SideFacts, target: SideFacts) -> None:
    """Raise SyncPrecheckError naming the side that differs, and how, for every problem found."""
    problems = []
    for side in (source, target):
        if side.schema_version is None:
            problems.append(f"the {side.role} {side.url} has no tinybot schema: migrate into it first")
        if side.bot_migration_problems:
            problems.append(
                f"the {side.role} {side.url} is not at the bot's schema version the sync copies: "
                + "; ".join(side.bot_migration_problems)
            )
        if side.pgvector is None:
            problems.append(f"the {side.role} {side.url} has no pgvector extension")
        elif _version(side.pgvector) < MIN_PGVECTOR:
            problems.append(
                f"the {side.role} {side.url} has pgvector {side.pgvector}; the sync needs "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or newer on both sides (ALTER EXTENSION vector UPDATE)"
            )
    if (
        None not in (source.schema_version, target.schema_version)
        and source.schema_version != target.schema_version
    ):
        older = source if source.schema_version < target.schema_version else target
        problems.append(
            f"schema versions differ: {source.role} {source.schema_version}, {target.role} {target.schema_version}; "
            f"bring the {older.role} {older.url} up to date first (any tinybot-migration run against it applies "
            "the schema)"
        )
    if None not in (source.dimensions, target.dimensions) and source.dimensions != target.dimensions:
        problems.append(
            f"vector dimensions differ: {source.role} memories.embedding is vector({source.dimensions}), "
            f"{target.role} vector({target.dimensions}); the vectors cannot be copied, and re-embedding is not a sync"
        )
    if problems:
        raise SyncPrecheckError("cannot sync, nothing was written: " + "; ".join(problems))
