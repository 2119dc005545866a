"""Every table of both databases, described once; the DDL, the precheck and the copy read these
descriptions.

The new database is **the bot's own**: its tables are exactly what the bot's Prisma migrations
`20250131000000_init` + `20251102225623_add_discord_message_id_to_conversation_history` make (types,
defaults, constraint and index names, foreign-key actions), recorded in `_prisma_migrations` so the
bot's `prisma migrate deploy` continues from there (`bot_schema.py` creates or prechecks them).
Column types are written as `format_type` prints them, so the description is also the catalog the
precheck compares a prepared target with.

The pipeline's own tables (embedding cache, rejects, coverage, pending-memory outcomes) live in
the schema `PROJECT_SCHEMA`, created and upgraded by ordered steps (`project_schema.py`); nothing
of ours sits in `public` but a few added indexes, named so that no bot migration can collide.

The old database has the same relational tables (naive `timestamp(3)` in UTC, random UUIDv4 ids)
and `pending_memories` with `personality_name`; the pipeline never applies its DDL to a real old
database (the demo data and the tests use it to build a source).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

EMBEDDING_DIMENSIONS = 1536
# The project's own PostgreSQL schema: never in the way of the bot's migrations.
PROJECT_SCHEMA = "tinybot_migration"

TIMESTAMP = "timestamp(3) without time zone"  # the bot's timestamps: UTC, without a zone


def bot_timestamp(moment: datetime | None = None) -> datetime:
    """A moment as the bot's columns hold it: naive UTC (now when not given). A naive moment is
    taken as UTC already, the convention of both databases."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


CASCADE, SET_NULL = "CASCADE", "SET NULL"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as format_type() prints it: the DDL type and the catalog fact at once
    null: bool = False
    default: str | None = None
    references: str | None = None  # the parent table, whose `id` this column holds
    on_delete: str = CASCADE  # the bot's foreign keys all update in cascade
    constrained: bool = True  # False: a reference the bot's schema does not enforce
    new_only: bool = False  # not in the old database (a later bot migration added it)
    old_only: bool = False  # only in the old database

    def ddl(self) -> str:
        parts = [f'"{self.name}"', self.type]
        if not self.null:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        return " ".join(parts)

    @property
    def foreign_key(self) -> bool:
        return self.references is not None and self.constrained


@dataclass(frozen=True)
class Index:
    name: str
    columns: str  # the parenthesised part of CREATE INDEX, e.g. "channel_id, created_at DESC"
    unique: bool = False

    def ddl(self, table: str, schema: str = "public") -> str:
        unique = "UNIQUE " if self.unique else ""
        return f"CREATE {unique}INDEX IF NOT EXISTS {self.name} ON {schema}.{table} ({self.columns});"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ("id",)
    indexes: tuple[Index, ...] = ()  # besides the primary key's, with the bot's (Prisma's) names
    plain_storage: tuple[str, ...] = ()  # columns kept inline and uncompressed (new DB)
    schema: str = "public"

    def in_database(self, database: str) -> Table:
        """The table as the old or the new database has it."""
        drop = "new_only" if database == "old" else "old_only"
        columns = tuple(
            replace(c, old_only=False, new_only=False) for c in self.columns if not getattr(c, drop)
        )
        names = {c.name for c in columns}
        return Table(
            self.name,
            columns,
            self.primary_key,
            tuple(i for i in self.indexes if {c.split()[0] for c in i.columns.split(",")} <= names),
            self.plain_storage,
            self.schema,
        )

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        """The new database's columns."""
        return tuple(c.name for c in self.columns if not c.old_only)

    @property
    def unique(self) -> tuple[tuple[str, ...], ...]:
        """Unique keys besides the primary key (Prisma makes them unique indexes, not constraints)."""
        keys = [tuple(c.strip() for c in i.columns.split(",")) for i in self.indexes if i.unique]
        return tuple(key for key in keys if key != self.primary_key)

    @property
    def foreign_keys(self) -> tuple[tuple[str, str], ...]:
        """(column, parent table) for every column that references another table."""
        return tuple(
            (c.name, c.references) for c in self.columns if c.references is not None and not c.old_only
        )

    def foreign_key_definitions(self) -> dict[str, str]:
        """Constraint name → definition, as pg_get_constraintdef prints it."""
        return {
            f"{self.name}_{c.name}_fkey": (
                f"FOREIGN KEY ({c.name}) REFERENCES {c.references}(id) ON UPDATE CASCADE ON DELETE {c.on_delete}"
            )
            for c in self.columns
            if c.foreign_key and not c.old_only
        }

    def create_sql(self, with_foreign_keys: bool = True) -> str:
        lines = [c.ddl() for c in self.columns]
        lines.append(f"CONSTRAINT {self.name}_pkey PRIMARY KEY ({', '.join(self.primary_key)})")
        statements = [f"CREATE TABLE {self.qualified} (\n    " + ",\n    ".join(lines) + "\n);"]
        statements += [index.ddl(self.name, self.schema) for index in self.indexes]
        statements += [
            f"ALTER TABLE {self.qualified} ALTER COLUMN {c} SET STORAGE PLAIN;" for c in self.plain_storage
        ]
        if with_foreign_keys:
            statements += self.foreign_keys_sql()
        return "\n".join(statements)

    def foreign_keys_sql(self) -> list[str]:
        return [
            f"ALTER TABLE {self.qualified} ADD CONSTRAINT {name} {definition};"
            for name, definition in self.foreign_key_definitions().items()
        ]


def _timestamps(*names: str, default: bool = False) -> tuple[Column, ...]:
    return tuple(Column(n, TIMESTAMP, default="CURRENT_TIMESTAMP" if default else None) for n in names)


def _created_updated() -> tuple[Column, ...]:
    return (Column("created_at", TIMESTAMP, default="CURRENT_TIMESTAMP"), Column("updated_at", TIMESTAMP))


def _uuid(name: str, references: str | None = None, null: bool = False, on_delete: str = CASCADE) -> Column:
    return Column(name, "uuid", null=null, references=references, on_delete=on_delete)


def _varchar(name: str, length: int, null: bool = False, default: str | None = None) -> Column:
    return Column(
        name,
        f"character varying({length})",
        null=null,
        default=None if default is None else f"'{default}'::character varying",
    )


def _text(name: str, null: bool = False) -> Column:
    return Column(name, "text", null=null)


def _bool(name: str, default: bool) -> Column:
    return Column(name, "boolean", default="true" if default else "false")


def _indexes(table: str, *keys: str, unique: tuple[str, ...] = ()) -> tuple[Index, ...]:
    """Prisma's names: `{table}_{columns}_idx` for an index, `{table}_{columns}_key` for a unique one."""

    def name(columns: str, suffix: str) -> str:
        return f"{table}_{'_'.join(c.split()[0] for c in columns.split(','))}_{suffix}"

    return (
        *(Index(name(k, "key"), k, unique=True) for k in unique),
        *(Index(name(k, "idx"), k) for k in keys),
    )


# --- the bot's tables, in both databases, in foreign-key order ------------------------------------

USERS = Table(
    "users",
    (_uuid("id"), _varchar("discord_id", 20), _varchar("username", 255), *_created_updated()),
    indexes=_indexes("users", "discord_id", unique=("discord_id",)),
)
PERSONAS = Table(
    "personas",
    (
        _uuid("id"),
        _varchar("name", 255),
        _text("description", null=True),
        _text("content"),
        _varchar("preferred_name", 255, null=True),
        _varchar("pronouns", 100, null=True),
        _uuid("owner_id", references="users"),
        *_created_updated(),
    ),
    indexes=_indexes("personas", "owner_id"),
)
USER_DEFAULT_PERSONAS = Table(
    "user_default_personas",
    (
        _uuid("user_id", references="users"),
        _uuid("persona_id", references="personas"),
        *_timestamps("updated_at"),
    ),
    primary_key=("user_id",),
    indexes=_indexes("user_default_personas", "persona_id", unique=("user_id",)),
)
SYSTEM_PROMPTS = Table(
    "system_prompts",
    (
        _uuid("id"),
        _varchar("name", 255),
        _text("description", null=True),
        _text("content"),
        _bool("is_default", False),
        *_created_updated(),
    ),
    indexes=_indexes("system_prompts", "is_default"),
)
_SETTING = "numeric(3,2)"
LLM_CONFIGS = Table(
    "llm_configs",
    (
        _uuid("id"),
        _varchar("name", 255),
        _text("description", null=True),
        _uuid("owner_id", references="users", null=True),
        _bool("is_global", False),
        _bool("is_default", False),
        _varchar("model", 255),
        _varchar("vision_model", 255, null=True),
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
        *_created_updated(),
    ),
    indexes=_indexes("llm_configs", "owner_id", "is_global"),
)
PERSONALITIES = Table(
    "personalities",
    (
        _uuid("id"),
        _varchar("name", 255),
        _varchar("display_name", 255, null=True),
        _varchar("slug", 255),
        _uuid("system_prompt_id", references="system_prompts", null=True, on_delete=SET_NULL),
        _text("character_info"),
        _text("personality_traits"),
        *(
            _text(name, null=True)
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
        _bool("voice_enabled", False),
        Column("voice_settings", "jsonb", null=True),
        _bool("image_enabled", False),
        Column("image_settings", "jsonb", null=True),
        Column("avatar_data", "bytea", null=True),
        *_created_updated(),
    ),
    indexes=_indexes("personalities", "slug", unique=("slug",)),
)
PERSONALITY_DEFAULT_CONFIGS = Table(
    "personality_default_configs",
    (
        _uuid("personality_id", references="personalities"),
        _uuid("llm_config_id", references="llm_configs"),
        *_timestamps("updated_at"),
    ),
    primary_key=("personality_id",),
    indexes=_indexes("personality_default_configs", "llm_config_id", unique=("personality_id",)),
)
PERSONALITY_OWNERS = Table(
    "personality_owners",
    (
        _uuid("personality_id", references="personalities"),
        _uuid("user_id", references="users"),
        _varchar("role", 50, default="owner"),
        *_created_updated(),
    ),
    primary_key=("personality_id", "user_id"),
    indexes=_indexes("personality_owners", "user_id", "personality_id"),
)
USER_PERSONALITY_CONFIGS = Table(
    "user_personality_configs",
    (
        _uuid("id"),
        _uuid("user_id", references="users"),
        _uuid("personality_id", references="personalities"),
        _uuid("persona_id", references="personas", null=True, on_delete=SET_NULL),
        _uuid("llm_config_id", references="llm_configs", null=True, on_delete=SET_NULL),
        *_created_updated(),
    ),
    indexes=_indexes(
        "user_personality_configs", "user_id", "personality_id", unique=("user_id, personality_id",)
    ),
)
ACTIVATED_CHANNELS = Table(
    "activated_channels",
    (
        _uuid("id"),
        _varchar("channel_id", 20),
        _uuid("personality_id", references="personalities"),
        _bool("auto_respond", True),
        _uuid("created_by", references="users", null=True, on_delete=SET_NULL),
        *_created_updated(),
    ),
    indexes=_indexes(
        "activated_channels", "channel_id", "personality_id", unique=("channel_id, personality_id",)
    ),
)
CONVERSATION_HISTORY = Table(
    "conversation_history",
    (
        _uuid("id"),
        _varchar("channel_id", 20),
        _varchar("guild_id", 20, null=True),
        _uuid("personality_id", references="personalities"),
        _uuid("persona_id", references="personas"),
        _varchar("role", 20),
        _text("content"),
        *_timestamps("created_at", default=True),
        # 20251102225623: the old database may not have it yet (the copy then writes NULL).
        Column("discord_message_id", "character varying(20)", null=True, new_only=True),
    ),
    indexes=_indexes(
        "conversation_history",
        "channel_id, personality_id, created_at DESC",
        "persona_id",
        "discord_message_id",
    ),
)
# The memory the bot never stored: its text and metadata, retried by the bot's processor. The
# old database's rows are accounted for by `relational/pending.py`; its persona and personality are
# not foreign keys in the bot's schema.
PENDING_MEMORIES = Table(
    "pending_memories",
    (
        _uuid("id"),
        _uuid("conversation_history_id", references="conversation_history"),
        Column("persona_id", "uuid", references="personas", constrained=False),
        Column("personality_id", "uuid", references="personalities", constrained=False),
        Column("personality_name", "text", null=True, old_only=True),
        _text("text"),
        Column("metadata", "jsonb"),
        *_timestamps("created_at", default=True),
        Column("attempts", "integer", default="0"),
        Column("last_attempt_at", TIMESTAMP, null=True),
        _text("error", null=True),
    ),
    indexes=_indexes(
        "pending_memories",
        "persona_id",
        "personality_id",
        "created_at",
        "attempts, created_at",
        unique=("conversation_history_id",),
    ),
)

# Copied by the relational stage, in foreign-key order (pending_memories is accounted for apart).
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

# --- the bot's tables only the new database has ---------------------------------------------------

# A 1536-dim vector is 6 KB of incompressible floats: kept inline and uncompressed, writes skip a
# futile compression attempt and TOAST, and scans and index builds skip detoasting (about 2x on
# bulk loads here). The row still fits a page because text columns stay toastable.
MEMORIES = Table(
    "memories",
    (
        _uuid("id"),
        # NULL: a legacy memory whose shapes.inc user is not mapped to a persona yet.
        _uuid("persona_id", references="personas", null=True),
        _uuid("personality_id", references="personalities"),
        _text("content"),
        Column("embedding", f"vector({EMBEDDING_DIMENSIONS})", null=True),
        _bool("is_summarized", False),
        Column("original_message_count", "integer", null=True),
        Column("summarized_at", TIMESTAMP, null=True),
        _varchar("session_id", 255, null=True),
        _varchar("canon_scope", 20, null=True),
        _varchar("summary_type", 50, null=True),
        _varchar("channel_id", 20, null=True),
        _varchar("guild_id", 20, null=True),
        Column("message_ids", "text[]", null=True),
        Column("senders", "text[]", null=True),
        *_timestamps("created_at", default=True),
        _uuid("legacy_shapes_user_id", null=True),
        _varchar("source_system", 50, default="tzurot-v3"),
    ),
    indexes=_indexes(
        "memories",
        "persona_id",
        "personality_id",
        "created_at DESC",
        "channel_id",
        "guild_id",
        "session_id",
        "is_summarized",
        "legacy_shapes_user_id",
        "source_system",
    ),
    plain_storage=("embedding",),
)
SHAPES_PERSONA_MAPPINGS = Table(
    "shapes_persona_mappings",
    (
        _uuid("id"),
        _uuid("shapes_user_id"),
        _uuid("persona_id", references="personas"),
        *_timestamps("mapped_at", default=True),
        _uuid("mapped_by", null=True),
        _varchar("verification_status", 50, default="unverified"),
    ),
    indexes=_indexes("shapes_persona_mappings", "persona_id", unique=("shapes_user_id",)),
)

# Every table of the bot's schema at the targeted version, in the order Prisma's init creates them.
BOT_TABLES: tuple[Table, ...] = (*RELATIONAL_TABLES, PENDING_MEMORIES, MEMORIES, SHAPES_PERSONA_MAPPINGS)
OLD_TABLES: tuple[Table, ...] = tuple(t.in_database("old") for t in (*RELATIONAL_TABLES, PENDING_MEMORIES))

# --- the pipeline's own tables, in PROJECT_SCHEMA -------------------------------------------------

# Every text ever embedded, by (model, dimensions, h(text)): no text is paid for twice.
EMBEDDING_CACHE = Table(
    "embedding_cache",
    (
        Column("model", "text"),
        Column("dimensions", "integer"),
        Column("text_hash", "character(32)"),
        Column("embedding", "vector"),
        Column("created_at", "timestamp with time zone", default="now()"),
    ),
    primary_key=("model", "dimensions", "text_hash"),
    plain_storage=("embedding",),
    schema=PROJECT_SCHEMA,
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
        Column("rejected_at", "timestamp with time zone", default="now()"),
    ),
    primary_key=("source_file", "record_index"),
    indexes=(Index("shapes_rejects_personality_slug_idx", "personality_slug"),),
    schema=PROJECT_SCHEMA,
)
# Per personality, how far the memory rebuild has covered its history: every message created
# before `covered_through` (naive UTC, as conversation_history.created_at) was paired by a rebuild
# that succeeded. The incremental sensor and its runs read only what came after (memories/coverage.py).
MEMORY_COVERAGE = Table(
    "memory_coverage",
    (
        Column("personality_id", "uuid"),
        Column("covered_through", TIMESTAMP),
        Column("updated_at", "timestamp with time zone", default="now()"),
    ),
    primary_key=("personality_id",),
    schema=PROJECT_SCHEMA,
)
# One row per old `pending_memories` row: what became of it (relational/pending.py).
PENDING_MEMORY_OUTCOMES = Table(
    "pending_memory_outcomes",
    (
        Column("old_id", "uuid"),
        Column("outcome", "text"),  # 'resolved', 'copied' or 'rejected'
        Column("new_id", "uuid", null=True),  # the copied row's id in public.pending_memories
        Column("conversation_history_id", "uuid", null=True),  # its assistant message, re-keyed
        Column("reason", "text", null=True),
        Column("decided_at", "timestamp with time zone", default="now()"),
    ),
    primary_key=("old_id",),
    schema=PROJECT_SCHEMA,
)

# The old database's rows the copy left out because a foreign key points at no parent (a defect of
# the source, accounted for here and warned about, never blocking): the row as it is in the old DB.
RELATIONAL_REJECTS = Table(
    "relational_rejects",
    (
        Column("table_name", "text"),
        Column("row_key", "text"),  # the table's conflict key in the old DB, comma-joined
        Column("reason", "text"),
        Column("raw_row", "jsonb"),
        Column("rejected_at", "timestamp with time zone", default="now()"),
    ),
    primary_key=("table_name", "row_key"),
    schema=PROJECT_SCHEMA,
)

# Every point of the Qdrant store the migration replaces (lib/qdrant), landed before anything is
# decided about it: collection, id as text (a UUID or an unsigned integer), payload and vector as
# Qdrant returned them; then what became of it (outcome NULL until decided). Rejected never means
# lost: the point stays here with its reason.
QDRANT_POINTS = Table(
    "qdrant_points",
    (
        Column("collection", "text"),
        Column("point_id", "text"),
        Column("payload", "jsonb"),
        Column("vector", "real[]", null=True),  # NULL: no unnamed dense vector (vector_kind says what)
        Column("vector_kind", "text"),  # 'dense', 'named' (a dict of vectors, not landed) or 'none'
        Column("landed_at", "timestamp with time zone", default="now()"),
        Column("outcome", "text", null=True),  # matched, imported, duplicate, superseded, rejected
        Column("reason", "text", null=True),
        Column("memory_id", "uuid", null=True),
        Column("decided_at", "timestamp with time zone", null=True),
        # The new DB's persona and personality the point stands for (step 6; NULL where undecidable).
        Column("persona_id", "uuid", null=True),
        Column("personality_id", "uuid", null=True),
    ),
    primary_key=("collection", "point_id"),
    schema=PROJECT_SCHEMA,
)
# One row per Qdrant collection per landing: its configuration and the two exact counts the
# landing read between (a difference means Qdrant was written during the read).
QDRANT_COLLECTIONS = Table(
    "qdrant_collections",
    (
        Column("collection", "text"),
        Column("vector_size", "integer", null=True),
        Column("distance", "text", null=True),
        Column("count_before", "bigint"),
        Column("count_after", "bigint"),
        Column("points_read", "bigint"),
        Column("points_new", "bigint"),
        Column("points_changed", "bigint"),
        Column("landed_at", "timestamp with time zone", default="now()"),
    ),
    primary_key=("collection",),
    schema=PROJECT_SCHEMA,
)

# What each class of landed Qdrant vectors was judged (lib/qdrant/vectors.py): reused (seeded into the
# embedding cache) only when sampled re-embeddings agree; the samples are kept so that a re-run over
# the same landing asks the provider nothing.
QDRANT_VECTOR_CLASSES = Table(
    "qdrant_vector_classes",
    (
        Column("model", "text"),
        Column("class_key", "text"),
        Column("points", "bigint"),
        Column("eligible", "bigint"),
        Column("sample_refs", "text[]"),
        Column("min_cosine", "double precision", null=True),
        Column("verdict", "text"),
        Column("reason", "text"),
        Column("judged_at", "timestamp with time zone", default="now()"),
    ),
    primary_key=("model", "class_key"),
    schema=PROJECT_SCHEMA,
)

# The project's tables by the step that created them (new_database_schema.PROJECT_STEPS).
PROJECT_TABLES_OF_STEP_1: tuple[Table, ...] = (
    EMBEDDING_CACHE,
    SHAPES_REJECTS,
    MEMORY_COVERAGE,
    PENDING_MEMORY_OUTCOMES,
)
PROJECT_TABLES: tuple[Table, ...] = (
    *PROJECT_TABLES_OF_STEP_1,
    RELATIONAL_REJECTS,
    QDRANT_POINTS,
    QDRANT_COLLECTIONS,
    QDRANT_VECTOR_CLASSES,
)

# Indexes of ours on the bot's tables (the catalog allows added indexes): named apart from any
# name Prisma would give, so no later bot migration can collide with one.
ADDED_INDEXES_OF_STEP_1: tuple[tuple[str, Index], ...] = (
    # The incremental rebuild reads a personality's history after its coverage mark.
    (
        "conversation_history",
        Index("tinybot_migration_history_personality_time", "personality_id, created_at"),
    ),
    # The sensor's tick finds the personalities that moved since its last tick.
    ("conversation_history", Index("tinybot_migration_history_created_at", "created_at")),
    # The answer a rebuilt memory stands for (its last message id): the sensor's reconciliation finds
    # answers without a memory through this index alone, never the 6 kB rows.
    ("memories", Index("tinybot_migration_memories_answer", "(message_ids[cardinality(message_ids)])")),
)
# The bot's memory query with a personality reads exactly that persona-personality pair's rows (and
# from its cut-off) through this one: without it the planner ANDs the persona B-tree with the
# personality B-tree, whose side spans every persona's memories of that personality (150k at 100x):
# 32-46 ms for a pair of a few hundred memories (benchmarks/README.md, "The bot's memory query").
PERSONA_PERSONALITY_INDEX = (
    "memories",
    Index("tinybot_migration_memories_persona_personality", "persona_id, personality_id, created_at"),
)
# The answer id of a memory, as the index above has it (a query must repeat it to use the index).
MEMORY_ANSWER_ID = "message_ids[cardinality(message_ids)]"


def old_schema_sql() -> str:
    """The old database's tables (demo data and tests only; the pipeline never writes the old DB)."""
    return "\n".join(table.create_sql() for table in OLD_TABLES)


def bot_schema_sql() -> str:
    """The bot's schema at the targeted version, as its two Prisma migrations make it."""
    tables = [table.in_database("new").create_sql(with_foreign_keys=False) for table in BOT_TABLES]
    foreign_keys = [statement for table in BOT_TABLES for statement in table.foreign_keys_sql()]
    return "\n".join(["CREATE EXTENSION IF NOT EXISTS vector;", *tables, *foreign_keys])
