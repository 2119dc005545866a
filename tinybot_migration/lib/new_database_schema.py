"""How the new database gets its schema: the bot's, then the pipeline's own.

Two ways in, one result:
- an **empty** database gets the bot's schema from `schema.bot_schema_sql()` plus the two rows
  Prisma would have written in `_prisma_migrations`, so the bot's next `prisma migrate deploy`
  continues from the targeted version;
- a database **prepared by the bot's own** `prisma migrate deploy` is prechecked: its applied
  migrations must be exactly the supported ones, and its catalog must hold every column, type,
  foreign key and unique index the migration relies on; any difference is named, nothing written.

The pipeline's own tables then live in `PROJECT_SCHEMA`, brought up to date by ordered steps
(`PROJECT_STEPS`), each recorded once in `PROJECT_SCHEMA.schema_steps`. A step is any SQL (a table,
a column, a constraint, a type change), applied in its own transaction under one advisory lock, so
runs, workers and tests may apply the schema side by side.

A database built by this project before it targeted the bot's schema (memory ids in another
namespace, `public.schema_version`) cannot be upgraded in place: it is refused, naming the fix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from tinybot_migration.lib import schema
from tinybot_migration.lib.ids import NAMESPACE

# Serialises concurrent schema application (webserver, run workers, tests) on one server.
_SCHEMA_LOCK_KEY = 0x7469_6E79  # "tiny"


@dataclass(frozen=True)
class PrismaMigration:
    name: str
    checksum: str  # SHA-256 hex of the migration's migration.sql, as Prisma records it


# The bot's migrations that make the targeted schema, in order.
BOT_MIGRATIONS: tuple[PrismaMigration, ...] = (
    PrismaMigration(
        "20250131000000_init", "a2715490b3bdbc82ff27b946749ebb3937cb2226d658b533684065e731f5f6d7"
    ),
    PrismaMigration(
        "20251102225623_add_discord_message_id_to_conversation_history",
        "fc02ca9e16394786724fa6541623c523a98086e8779986ea3769c759baef3652",
    ),
)
SUPPORTED_BOT_VERSION = BOT_MIGRATIONS[-1].name

# Prisma's own table, in Prisma's DDL.
PRISMA_MIGRATIONS_SQL = """
CREATE TABLE public._prisma_migrations (
    id character varying(36) PRIMARY KEY NOT NULL,
    checksum character varying(64) NOT NULL,
    finished_at timestamp with time zone,
    migration_name character varying(255) NOT NULL,
    logs text,
    rolled_back_at timestamp with time zone,
    started_at timestamp with time zone NOT NULL DEFAULT now(),
    applied_steps_count integer NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class ProjectStep:
    version: int
    description: str
    statements: str


def _project_tables_sql(tables: tuple[schema.Table, ...]) -> str:
    return "\n".join(table.create_sql() for table in tables)


def _added_indexes_sql(indexes: tuple[tuple[str, schema.Index], ...]) -> str:
    return "\n".join(index.ddl(table) for table, index in indexes)


# Append only: a database records the steps it has, and gets the ones after them.
PROJECT_STEPS: tuple[ProjectStep, ...] = (
    ProjectStep(
        1,
        "the pipeline's own tables (embedding cache, shapes rejects, memory coverage, pending-memory "
        "outcomes) and its indexes on the bot's tables",
        f"{_project_tables_sql(schema.PROJECT_TABLES_OF_STEP_1)}\n{_added_indexes_sql(schema.ADDED_INDEXES_OF_STEP_1)}",
    ),
    ProjectStep(
        2,
        "relational_rejects: the old rows left out for a missing parent, accounted for",
        _project_tables_sql((schema.RELATIONAL_REJECTS,)),
    ),
    ProjectStep(
        3,
        "the search_memories function goes: searches run the bot's own statement (bot_query.py)",
        f"DROP FUNCTION IF EXISTS {schema.PROJECT_SCHEMA}.search_memories("
        "vector, uuid, uuid, integer, double precision, timestamptz);",
    ),
    ProjectStep(
        4,
        "qdrant_points and qdrant_collections: the Qdrant store the migration replaces, landed point by point",
        _project_tables_sql((schema.QDRANT_POINTS, schema.QDRANT_COLLECTIONS)),
    ),
    ProjectStep(
        5,
        "a B-tree on memories (persona_id, personality_id, created_at): the bot's query with a personality "
        "reads that pair's rows alone",
        _added_indexes_sql((schema.PERSONA_PERSONALITY_INDEX,)),
    ),
    ProjectStep(
        6,
        "qdrant_vector_classes: which classes of Qdrant vectors are reused, on which samples; the persona and "
        "personality each decided Qdrant point stands for",
        _project_tables_sql((schema.QDRANT_VECTOR_CLASSES,))
        + f"\nALTER TABLE {schema.QDRANT_POINTS.qualified} ADD COLUMN IF NOT EXISTS persona_id uuid,"
        " ADD COLUMN IF NOT EXISTS personality_id uuid;",
    ),
)
PROJECT_SCHEMA_VERSION = PROJECT_STEPS[-1].version


class NewDatabaseSchemaError(RuntimeError):
    """The new database is not one the pipeline can fill as it is; nothing was written."""


def apply_new_schema(conn: psycopg.Connection) -> int:
    """Give the new database the bot's schema (or precheck the one it has), then bring the
    pipeline's own schema up to date; safe to run concurrently and repeatedly.

    Returns the project schema version recorded in the database.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        refuse_legacy_database(conn)
        recorded = project_schema_version(conn)
        if recorded is not None and recorded > PROJECT_SCHEMA_VERSION:
            raise NewDatabaseSchemaError(
                f"the new database has tinybot_migration schema version {recorded}, newer than this "
                f"code's {PROJECT_SCHEMA_VERSION}: upgrade tinybot_migration before migrating into it"
            )
        if recorded == PROJECT_SCHEMA_VERSION:
            return recorded
        ensure_bot_schema(conn)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema.PROJECT_SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema.PROJECT_SCHEMA}.schema_steps ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for step in PROJECT_STEPS:
            if recorded is None or step.version > recorded:
                conn.execute(step.statements)
                conn.execute(
                    f"INSERT INTO {schema.PROJECT_SCHEMA}.schema_steps (version, description) VALUES (%s, %s)",
                    (step.version, step.description),
                )
    return PROJECT_SCHEMA_VERSION


def project_schema_version(conn: psycopg.Connection) -> int | None:
    """The newest step of the pipeline's own schema this database has (None: never applied)."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{schema.PROJECT_SCHEMA}.schema_steps",)
    ).fetchone()[0]
    if not exists:
        return None
    return conn.execute(f"SELECT max(version) FROM {schema.PROJECT_SCHEMA}.schema_steps").fetchone()[0]


def has_new_schema(conn: psycopg.Connection) -> bool:
    """Whether the pipeline has applied its schema to this database (a dry run applies nothing)."""
    return project_schema_version(conn) is not None


def has_rows(conn: psycopg.Connection, table: schema.Table) -> bool:
    """Whether the new database has its schema and `table` holds a row (a dry run before the first
    migration reads the old database instead)."""
    if not has_new_schema(conn):
        return False
    return conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table.qualified})").fetchone()[0]


# --- the bot's schema ---------------------------------------------------------------------------


def refuse_legacy_database(conn: psycopg.Connection) -> None:
    """A database built by this project before it targeted the bot's schema: memory ids in
    another namespace, timestamptz, its bookkeeping in public. Filling it would mix two id rules."""
    legacy = conn.execute("SELECT to_regclass('public.schema_version') IS NOT NULL").fetchone()[0]
    if legacy:
        raise NewDatabaseSchemaError(
            f"the new database {conn.info.dbname} was built by an earlier tinybot_migration (public.schema_version;"
            " memory ids in the namespace 'tinybot-memory', timestamptz, no _prisma_migrations): it is not the"
            " bot's schema and cannot be upgraded in place. Rebuild it: drop and re-create the database (or point"
            " DATABASE_URL at an empty one) and run the migration again"
        )


def ensure_bot_schema(conn: psycopg.Connection) -> None:
    """Create the bot's schema in an empty database, or precheck the one the bot prepared."""
    prepared = conn.execute("SELECT to_regclass('public._prisma_migrations') IS NOT NULL").fetchone()[0]
    if prepared:
        precheck_bot_schema(conn)
        return
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
    ]
    if tables:
        raise NewDatabaseSchemaError(
            f"the new database {conn.info.dbname} is neither empty nor prepared by the bot's `prisma migrate"
            f" deploy`: public holds {', '.join(tables[:8])}{' …' if len(tables) > 8 else ''} but no"
            " _prisma_migrations. Point DATABASE_URL at an empty database, or at one the bot's migrations"
            f" prepared up to {SUPPORTED_BOT_VERSION}"
        )
    conn.execute(schema.bot_schema_sql())
    conn.execute(PRISMA_MIGRATIONS_SQL)
    for migration in BOT_MIGRATIONS:
        conn.execute(
            "INSERT INTO public._prisma_migrations"
            " (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count)"
            " VALUES (%s, %s, now(), %s, NULL, NULL, now(), 1)",
            (
                str(uuid.uuid5(NAMESPACE, f"prisma_migration:{migration.name}")),
                migration.checksum,
                migration.name,
            ),
        )


def applied_bot_migrations(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(name, checksum) of the bot's migrations this database finished, in order."""
    return [
        (name, checksum)
        for name, checksum in conn.execute(
            "SELECT migration_name, checksum FROM public._prisma_migrations"
            " WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name"
        ).fetchall()
    ]


def precheck_bot_schema(conn: psycopg.Connection) -> None:
    """Raise NewDatabaseSchemaError naming every difference that matters between this database,
    prepared by the bot's migrations, and the schema the pipeline fills."""
    problems = migration_problems(applied_bot_migrations(conn))
    if not problems:
        problems = catalog_problems(conn)
    if problems:
        raise NewDatabaseSchemaError(
            f"the new database {conn.info.dbname} was prepared by the bot's migrations, but it is not a version this"
            f" pipeline fills (it supports exactly {', '.join(m.name for m in BOT_MIGRATIONS)}; nothing was"
            " written): " + "; ".join(problems)
        )


def migration_problems(applied: list[tuple[str, str]]) -> list[str]:
    expected = [(m.name, m.checksum) for m in BOT_MIGRATIONS]
    if applied == expected:
        return []
    names = [name for name, _ in applied]
    problems = [f"migration {m.name} is not applied" for m in BOT_MIGRATIONS if m.name not in names]
    known = {m.name: m.checksum for m in BOT_MIGRATIONS}
    problems += [
        f"migration {name} is applied with checksum {checksum[:12]}…, not the released {known[name][:12]}…"
        for name, checksum in applied
        if name in known and checksum != known[name]
    ]
    later = [name for name in names if name not in known]
    if later:
        problems.append(
            f"{len(later)} later migration(s) are applied ({', '.join(later[:3])}{' …' if len(later) > 3 else ''});"
            f" migrate first, then let the bot apply them"
        )
    return problems


def catalog_problems(conn: psycopg.Connection) -> list[str]:
    """What the pipeline relies on and this database lacks: tables, columns (type, nullability),
    foreign keys and unique indexes (the writers' ON CONFLICT keys)."""
    columns = {
        (table, column): (kind, not_null)
        for table, column, kind, not_null in conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0"
            " AND NOT a.attisdropped"
        ).fetchall()
    }
    constraints = dict(
        conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace AND contype = 'f'"
        ).fetchall()
    )
    unique_indexes = {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relnamespace = 'public'::regnamespace AND i.indisunique"
        ).fetchall()
    }
    tables = {table for table, _ in columns}
    problems: list[str] = []
    for table in schema.BOT_TABLES:
        if table.name not in tables:
            problems.append(f"table {table.name} is missing")
            continue
        for column in table.columns:
            if column.old_only:
                continue
            found = columns.get((table.name, column.name))
            if found is None:
                problems.append(f"column {table.name}.{column.name} is missing")
            elif found != (column.type, not column.null):
                problems.append(
                    f"column {table.name}.{column.name} is {_describe(*found)}, expected {_describe(column.type, not column.null)}"
                )
        for name, definition in table.foreign_key_definitions().items():
            if constraints.get(name) != definition:
                problems.append(
                    f"foreign key {name} is {constraints.get(name) or 'missing'}, expected {definition}"
                )
        problems += [
            f"unique index {index.name} is missing"
            for index in table.indexes
            if index.unique and index.name not in unique_indexes
        ]
    return problems


def _describe(kind: str, not_null: bool) -> str:
    return f"{kind}{' NOT NULL' if not_null else ''}"


def apply_old_schema(conn: psycopg.Connection) -> None:
    """Create the old DB's tables where missing (demo data and tests only; the pipeline never
    writes the old DB)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        if conn.execute("SELECT to_regclass('public.users') IS NULL").fetchone()[0]:
            conn.execute(schema.old_schema_sql())
