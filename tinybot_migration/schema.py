"""Every table of both databases, described once; both DDLs are derived from these descriptions.

The old bot database has the eleven relational tables with random UUIDv4 ids and naive
`timestamp(3)` in UTC; the pipeline never applies its DDL to a real old database (the demo data and
the tests use it to build a source). The new database has the same tables with `timestamptz`,
plus the tables only it has (memories, the embedding cache, shapes.inc persona mappings, the
schema version), and is applied idempotently by the pipeline itself before it writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

# Bump when the new DB's DDL changes; recorded in the new DB's `schema_version` table.
# 2: embedding_cache; 3: embeddings stored inline (STORAGE PLAIN); 4: shapes_rejects;
# 5: the search_memories() function; 6: memories.embedding_bits and the search's covering B-tree;
# 7: memory_coverage, conversation_history's created_at indexes and memories.answer_id
# (the delta rebuild and the reconciliation)
SCHEMA_VERSION = 7
EMBEDDING_DIMENSIONS = 1536

# Serialises concurrent schema application (webserver, run workers, tests) on one server.
_SCHEMA_LOCK_KEY = 0x7469_6E79  # "tiny"

# The one type that differs between the databases: naive UTC in the old, timestamptz in the new.
TIMESTAMP = "timestamp"
_TIMESTAMP_TYPES = {"old": "timestamp(3)", "new": "timestamptz"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    null: bool = False
    default: str | None = None
    check: str | None = None
    references: str | None = None  # the parent table, whose `id` this column holds
    generated: str | None = None  # computed by the database from other columns; never written

    def ddl(self, database: str) -> str:
        parts = [self.name, _TIMESTAMP_TYPES[database] if self.type == TIMESTAMP else self.type]
        if self.generated is not None:
            parts.append(f"GENERATED ALWAYS AS ({self.generated}) STORED")
        if not self.null:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.check is not None:
            parts.append(f"CHECK ({self.check})")
        if self.references is not None:
            parts.append(f"REFERENCES {self.references}(id)")
        return " ".join(parts)


@dataclass(frozen=True)
class Index:
    name: str
    columns: str  # the parenthesised part of CREATE INDEX, e.g. "channel_id, created_at DESC"
    new_only: bool = False
    include: str | None = None  # columns stored in the index for index-only scans

    def ddl(self, table: str) -> str:
        include = f" INCLUDE ({self.include})" if self.include else ""
        return f"CREATE INDEX IF NOT EXISTS {self.name} ON {table} ({self.columns}){include};"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ("id",)
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[Index, ...] = ()
    plain_storage: tuple[str, ...] = ()  # columns kept inline and uncompressed (new DB)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def written_columns(self) -> tuple[str, ...]:
        """The columns a writer supplies (generated ones are the database's)."""
        return tuple(c.name for c in self.columns if c.generated is None)

    @property
    def foreign_keys(self) -> tuple[tuple[str, str], ...]:
        """(column, parent table) for every column that references another table."""
        return tuple((c.name, c.references) for c in self.columns if c.references is not None)

    def ddl(self, database: str) -> str:
        lines = [c.ddl(database) for c in self.columns if c.generated is None]
        lines.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        lines += [f"UNIQUE ({', '.join(key)})" for key in self.unique]
        statements = [f"CREATE TABLE IF NOT EXISTS {self.name} (\n    " + ",\n    ".join(lines) + "\n);"]
        # Generated columns came with later schema versions: added, so older databases get them too.
        statements += [
            f"ALTER TABLE {self.name} ADD COLUMN IF NOT EXISTS {c.ddl(database)};"
            for c in self.columns
            if c.generated is not None
        ]
        statements += [
            index.ddl(self.name) for index in self.indexes if database == "new" or not index.new_only
        ]
        if database == "new":
            statements += [
                f"ALTER TABLE {self.name} ALTER COLUMN {c} SET STORAGE PLAIN;" for c in self.plain_storage
            ]
        return "\n".join(statements)


def _timestamps(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name, TIMESTAMP) for name in names)


def _uuid(name: str, references: str | None = None, null: bool = False) -> Column:
    return Column(name, "uuid", null=null, references=references)


# --- the relational tables, in both databases, in foreign-key order ------------------------------

USERS = Table(
    "users",
    (
        _uuid("id"),
        Column("discord_id", "varchar(20)"),
        Column("username", "text"),
        *_timestamps("created_at", "updated_at"),
    ),
    unique=(("discord_id",),),
)
PERSONAS = Table(
    "personas",
    (
        _uuid("id"),
        Column("name", "text"),
        Column("description", "text", null=True),
        Column("content", "text"),
        Column("preferred_name", "text", null=True),
        Column("pronouns", "text", null=True),
        _uuid("owner_id", references="users"),
        *_timestamps("created_at", "updated_at"),
    ),
)
USER_DEFAULT_PERSONAS = Table(
    "user_default_personas",
    (
        _uuid("user_id", references="users"),
        _uuid("persona_id", references="personas"),
        *_timestamps("updated_at"),
    ),
    primary_key=("user_id",),
)
SYSTEM_PROMPTS = Table(
    "system_prompts",
    (
        _uuid("id"),
        Column("name", "text"),
        Column("description", "text", null=True),
        Column("content", "text"),
        Column("is_default", "boolean", default="false"),
        *_timestamps("created_at", "updated_at"),
    ),
)
_SETTING = "numeric(3,2)"
LLM_CONFIGS = Table(
    "llm_configs",
    (
        _uuid("id"),
        Column("name", "text"),
        Column("description", "text", null=True),
        _uuid("owner_id", references="users", null=True),
        Column("is_global", "boolean", default="false"),
        Column("is_default", "boolean", default="false"),
        Column("model", "text"),
        Column("vision_model", "text", null=True),
        Column("temperature", _SETTING, null=True),
        Column("top_p", _SETTING, null=True),
        Column("top_k", "integer", null=True),
        Column("frequency_penalty", _SETTING, null=True),
        Column("presence_penalty", _SETTING, null=True),
        Column("repetition_penalty", _SETTING, null=True),
        Column("max_tokens", "integer", null=True),
        Column("memory_score_threshold", _SETTING, null=True),
        Column("memory_limit", "integer", null=True),
        Column("context_window_size", "integer", default="20"),
        *_timestamps("created_at", "updated_at"),
    ),
)
PERSONALITIES = Table(
    "personalities",
    (
        _uuid("id"),
        Column("name", "text"),
        Column("display_name", "text", null=True),
        Column("slug", "text"),
        _uuid("system_prompt_id", references="system_prompts", null=True),
        Column("character_info", "text"),
        Column("personality_traits", "text"),
        *(
            Column(name, "text", null=True)
            for name in (
                "personality_tone",
                "personality_age",
                "personality_appearance",
                "personality_likes",
                "personality_dislikes",
                "conversational_goals",
                "conversational_examples",
            )
        ),
        Column("custom_fields", "jsonb", null=True),
        Column("voice_enabled", "boolean", default="false"),
        Column("voice_settings", "jsonb", null=True),
        Column("image_enabled", "boolean", default="false"),
        Column("image_settings", "jsonb", null=True),
        Column("avatar_data", "bytea", null=True),
        *_timestamps("created_at", "updated_at"),
    ),
    unique=(("slug",),),
)
PERSONALITY_DEFAULT_CONFIGS = Table(
    "personality_default_configs",
    (
        _uuid("personality_id", references="personalities"),
        _uuid("llm_config_id", references="llm_configs"),
        *_timestamps("updated_at"),
    ),
    primary_key=("personality_id",),
)
PERSONALITY_OWNERS = Table(
    "personality_owners",
    (
        _uuid("personality_id", references="personalities"),
        _uuid("user_id", references="users"),
        Column("role", "text", default="'owner'"),
        *_timestamps("created_at", "updated_at"),
    ),
    primary_key=("personality_id", "user_id"),
)
USER_PERSONALITY_CONFIGS = Table(
    "user_personality_configs",
    (
        _uuid("id"),
        _uuid("user_id", references="users"),
        _uuid("personality_id", references="personalities"),
        _uuid("persona_id", references="personas", null=True),
        _uuid("llm_config_id", references="llm_configs", null=True),
        *_timestamps("created_at", "updated_at"),
    ),
    unique=(("user_id", "personality_id"),),
)
ACTIVATED_CHANNELS = Table(
    "activated_channels",
    (
        _uuid("id"),
        Column("channel_id", "varchar(20)"),
        _uuid("personality_id", references="personalities"),
        Column("auto_respond", "boolean", default="true"),
        _uuid("created_by", references="users", null=True),
        *_timestamps("created_at", "updated_at"),
    ),
    unique=(("channel_id", "personality_id"),),
)
CONVERSATION_HISTORY = Table(
    "conversation_history",
    (
        _uuid("id"),
        Column("channel_id", "varchar(20)"),
        Column("guild_id", "varchar(20)", null=True),
        _uuid("personality_id", references="personalities"),
        _uuid("persona_id", references="personas"),
        Column("role", "text", check="role IN ('user', 'assistant', 'system')"),
        Column("content", "text"),
        *_timestamps("created_at"),
    ),
    indexes=(
        Index("idx_conversation_history_context", "channel_id, personality_id, created_at DESC"),
        Index("idx_conversation_history_persona", "persona_id", new_only=True),
        # The incremental rebuild reads a personality's history after its coverage mark.
        Index("idx_conversation_history_personality_time", "personality_id, created_at", new_only=True),
        # The sensor's tick finds the personalities that moved since its last tick.
        Index("idx_conversation_history_created_at", "created_at", new_only=True),
    ),
)

RELATIONAL_TABLES: tuple[Table, ...] = (
    USERS,
    PERSONAS,
    USER_DEFAULT_PERSONAS,
    SYSTEM_PROMPTS,
    LLM_CONFIGS,
    PERSONALITIES,
    PERSONALITY_DEFAULT_CONFIGS,
    PERSONALITY_OWNERS,
    USER_PERSONALITY_CONFIGS,
    ACTIVATED_CHANNELS,
    CONVERSATION_HISTORY,
)

# --- the tables only the new database has -------------------------------------------------------

SCHEMA_VERSION_TABLE = Table(
    "schema_version",
    (Column("version", "integer"), Column("applied_at", "timestamptz", default="now()")),
    primary_key=("version",),
)
# A 1536-dim vector is 6 KB of incompressible floats: kept inline and uncompressed, writes skip a
# futile compression attempt and TOAST, and scans and index builds skip detoasting (about 2x on
# bulk loads here). The row still fits a page because text columns stay toastable.
# The bot's search reads its first pass from this covering B-tree (search/sql.py).
MEMORIES_SEARCH_INDEX = "idx_memories_search"
MEMORIES = Table(
    "memories",
    (
        _uuid("id"),
        # NULL: a legacy memory whose shapes.inc user is not mapped to a persona yet.
        _uuid("persona_id", references="personas", null=True),
        _uuid("personality_id", references="personalities"),
        Column("content", "text"),
        Column("embedding", f"vector({EMBEDDING_DIMENSIONS})", null=True),
        Column("is_summarized", "boolean", default="false"),
        Column("original_message_count", "integer", null=True),
        Column("summarized_at", "timestamptz", null=True),
        Column("session_id", "text", null=True),
        Column("canon_scope", "text", null=True, check="canon_scope IN ('personal', 'session', 'global')"),
        Column("summary_type", "text", null=True),
        Column("channel_id", "varchar(20)", null=True),
        Column("guild_id", "varchar(20)", null=True),
        Column("message_ids", "text[]", default="'{}'"),
        Column("senders", "text[]", default="'{}'"),
        Column("created_at", "timestamptz"),
        _uuid("legacy_shapes_user_id", null=True),
        Column(
            "source_system", "text", default="'tinybot'", check="source_system IN ('tinybot', 'shapes-inc')"
        ),
        # The embedding's signs, 192 bytes: the search's first pass ranks a persona's memories by
        # hamming distance on these alone, read from SEARCH_INDEX without touching the 6 kB rows.
        Column(
            "embedding_bits",
            f"bit({EMBEDDING_DIMENSIONS})",
            null=True,
            generated=f"binary_quantize(embedding)::bit({EMBEDDING_DIMENSIONS})",
        ),
        # The answer a rebuilt memory stands for (its last message id): the sensor's reconciliation
        # finds answers without a memory through idx_memories_answer_id alone, never these 6 kB rows.
        Column("answer_id", "text", null=True, generated="message_ids[cardinality(message_ids)]"),
    ),
    indexes=(
        *(
            Index(f"idx_memories_{name}", columns)
            for name, columns in (
                ("persona_id", "persona_id"),
                ("personality_id", "personality_id"),
                ("created_at", "created_at DESC"),
                ("legacy_shapes_user_id", "legacy_shapes_user_id"),
                ("source_system", "source_system"),
            )
        ),
        Index(MEMORIES_SEARCH_INDEX, "persona_id, personality_id, created_at", include="id, embedding_bits"),
        Index("idx_memories_answer_id", "answer_id"),
    ),
    plain_storage=("embedding",),
)
# Every text ever embedded, by (model, dimensions, h(text)): no text is paid for twice.
EMBEDDING_CACHE = Table(
    "embedding_cache",
    (
        Column("model", "text"),
        Column("dimensions", "integer"),
        Column("text_hash", "char(32)"),
        Column("embedding", "vector"),
        Column("created_at", "timestamptz", default="now()"),
    ),
    primary_key=("model", "dimensions", "text_hash"),
    plain_storage=("embedding",),
)
SHAPES_PERSONA_MAPPINGS = Table(
    "shapes_persona_mappings",
    (
        _uuid("id"),
        _uuid("shapes_user_id"),
        _uuid("persona_id", references="personas"),
        Column("mapped_at", "timestamptz"),
        Column("mapped_by", "text", null=True),
        Column("verification_status", "text", default="'unverified'"),
    ),
    unique=(("shapes_user_id",),),
)

# Every shapes.inc record the import could not turn into memories, with its reason and the record
# itself: with the imported, deleted and duplicate ones, every record of the export is accounted for.
SHAPES_REJECTS = Table(
    "shapes_rejects",
    (
        Column("source_file", "text"),  # relative to the export folder: <slug>/<slug>_memories.json
        Column("record_index", "integer"),  # position in the file's array, from 0
        Column("record_id", "text", null=True),  # the record's own `id`, when it has a string one
        Column("personality_slug", "text"),
        Column("reason", "text"),
        Column("raw_record", "jsonb"),
        Column("rejected_at", "timestamptz", default="now()"),
    ),
    primary_key=("source_file", "record_index"),
    indexes=(Index("idx_shapes_rejects_personality_slug", "personality_slug"),),
)

# Per personality, how far the memory rebuild has covered its history: every message created
# before `covered_through` was paired by a rebuild that succeeded. The incremental sensor and its
# runs read only what came after (memories/coverage.py). The pipeline's own bookkeeping: not synced.
MEMORY_COVERAGE = Table(
    "memory_coverage",
    (
        _uuid("personality_id", references="personalities"),
        Column("covered_through", "timestamptz"),
        Column("updated_at", "timestamptz", default="now()"),
    ),
    primary_key=("personality_id",),
)

NEW_ONLY_TABLES: tuple[Table, ...] = (
    MEMORIES,
    EMBEDDING_CACHE,
    SHAPES_PERSONA_MAPPINGS,
    SHAPES_REJECTS,
    MEMORY_COVERAGE,
)


def old_schema_sql() -> str:
    return "\n".join(table.ddl("old") for table in RELATIONAL_TABLES)


def new_schema_sql() -> str:
    from tinybot_migration.search.sql import SEARCH_FUNCTION_SQL  # it needs the tables' names only

    tables = (SCHEMA_VERSION_TABLE, *RELATIONAL_TABLES, *NEW_ONLY_TABLES)
    ddl = "\n".join(table.ddl("new") for table in tables)
    return f"CREATE EXTENSION IF NOT EXISTS vector;\n{ddl}\n{SEARCH_FUNCTION_SQL}"


def apply_old_schema(conn: psycopg.Connection) -> None:
    """Create the old DB's tables (demo data and tests only; the pipeline never writes the old DB)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute(old_schema_sql())


def apply_new_schema(conn: psycopg.Connection) -> int:
    """Create or complete the new DB's schema; safe to run concurrently and repeatedly.

    Returns the schema version recorded in the database.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        recorded = recorded_schema_version(conn)
        if recorded is not None and recorded > SCHEMA_VERSION:
            raise RuntimeError(
                f"the new database has schema version {recorded}, newer than this code's "
                f"{SCHEMA_VERSION}: upgrade tinybot_migration before migrating into it"
            )
        if recorded == SCHEMA_VERSION:
            return recorded
        conn.execute(new_schema_sql())
        conn.execute(
            "INSERT INTO schema_version (version) VALUES (%s) ON CONFLICT DO NOTHING",
            (SCHEMA_VERSION,),
        )
    return SCHEMA_VERSION


def recorded_schema_version(conn: psycopg.Connection) -> int | None:
    """The schema version the pipeline recorded in this database (None: never applied)."""
    exists = conn.execute("SELECT to_regclass('public.schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return None
    return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]


def has_new_schema(conn: psycopg.Connection) -> bool:
    """Whether the pipeline has applied its schema to this database (a dry run applies nothing)."""
    return recorded_schema_version(conn) is not None


def has_rows(conn: psycopg.Connection, table: Table) -> bool:
    """Whether the new database has its schema and `table` holds a row (a dry run before the first
    migration reads the old database instead)."""
    if not has_new_schema(conn):
        return False
    return conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table.name})").fetchone()[0]
