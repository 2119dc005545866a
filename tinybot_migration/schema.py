"""The SQL schemas of both databases, in one place.

`OLD_SCHEMA_SQL` is the old bot database (random UUIDv4 ids, naive `timestamp(3)` in UTC). The
pipeline never applies it to a real old database; the demo data and the tests use it to build a
source. `NEW_SCHEMA_SQL` is the new database (deterministic ids, `timestamptz`, pgvector), applied
idempotently by the pipeline itself before it writes anything.
"""

from __future__ import annotations

import psycopg

# Bump when NEW_SCHEMA_SQL changes; recorded in the new DB's `schema_version` table.
SCHEMA_VERSION = 3  # 2: embedding_cache; 3: embeddings stored inline (STORAGE PLAIN)

# Serialises concurrent schema application (webserver, run workers, tests) on one server.
_SCHEMA_LOCK_KEY = 0x7469_6E79  # "tiny"

OLD_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY,
    discord_id varchar(20) NOT NULL UNIQUE,
    username text NOT NULL,
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS personas (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text,
    content text NOT NULL,
    preferred_name text,
    pronouns text,
    owner_id uuid NOT NULL REFERENCES users(id),
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS user_default_personas (
    user_id uuid PRIMARY KEY REFERENCES users(id),
    persona_id uuid NOT NULL REFERENCES personas(id),
    updated_at timestamp(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS system_prompts (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text,
    content text NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS llm_configs (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text,
    owner_id uuid REFERENCES users(id),
    is_global boolean NOT NULL DEFAULT false,
    is_default boolean NOT NULL DEFAULT false,
    model text NOT NULL,
    vision_model text,
    temperature numeric(3,2),
    top_p numeric(3,2),
    top_k integer,
    frequency_penalty numeric(3,2),
    presence_penalty numeric(3,2),
    repetition_penalty numeric(3,2),
    max_tokens integer,
    memory_score_threshold numeric(3,2),
    memory_limit integer,
    context_window_size integer NOT NULL DEFAULT 20,
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS personalities (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    display_name text,
    slug text NOT NULL UNIQUE,
    system_prompt_id uuid REFERENCES system_prompts(id),
    character_info text NOT NULL,
    personality_traits text NOT NULL,
    personality_tone text,
    personality_age text,
    personality_appearance text,
    personality_likes text,
    personality_dislikes text,
    conversational_goals text,
    conversational_examples text,
    custom_fields jsonb,
    voice_enabled boolean NOT NULL DEFAULT false,
    voice_settings jsonb,
    image_enabled boolean NOT NULL DEFAULT false,
    image_settings jsonb,
    avatar_data bytea,
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS personality_default_configs (
    personality_id uuid PRIMARY KEY REFERENCES personalities(id),
    llm_config_id uuid NOT NULL REFERENCES llm_configs(id),
    updated_at timestamp(3) NOT NULL
);
CREATE TABLE IF NOT EXISTS personality_owners (
    personality_id uuid NOT NULL REFERENCES personalities(id),
    user_id uuid NOT NULL REFERENCES users(id),
    role text NOT NULL DEFAULT 'owner',
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL,
    PRIMARY KEY (personality_id, user_id)
);
CREATE TABLE IF NOT EXISTS user_personality_configs (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id),
    personality_id uuid NOT NULL REFERENCES personalities(id),
    persona_id uuid REFERENCES personas(id),
    llm_config_id uuid REFERENCES llm_configs(id),
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL,
    UNIQUE (user_id, personality_id)
);
CREATE TABLE IF NOT EXISTS activated_channels (
    id uuid PRIMARY KEY,
    channel_id varchar(20) NOT NULL,
    personality_id uuid NOT NULL REFERENCES personalities(id),
    auto_respond boolean NOT NULL DEFAULT true,
    created_by uuid REFERENCES users(id),
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL,
    UNIQUE (channel_id, personality_id)
);
CREATE TABLE IF NOT EXISTS conversation_history (
    id uuid PRIMARY KEY,
    channel_id varchar(20) NOT NULL,
    guild_id varchar(20),
    personality_id uuid NOT NULL REFERENCES personalities(id),
    persona_id uuid NOT NULL REFERENCES personas(id),
    role text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content text NOT NULL,
    created_at timestamp(3) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_conversation_history_context
    ON conversation_history (channel_id, personality_id, created_at DESC);
"""

NEW_SCHEMA_SQL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY,
    discord_id varchar(20) NOT NULL UNIQUE,
    username text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS personas (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text,
    content text NOT NULL,
    preferred_name text,
    pronouns text,
    owner_id uuid NOT NULL REFERENCES users(id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS user_default_personas (
    user_id uuid PRIMARY KEY REFERENCES users(id),
    persona_id uuid NOT NULL REFERENCES personas(id),
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS system_prompts (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text,
    content text NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS llm_configs (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text,
    owner_id uuid REFERENCES users(id),
    is_global boolean NOT NULL DEFAULT false,
    is_default boolean NOT NULL DEFAULT false,
    model text NOT NULL,
    vision_model text,
    temperature numeric(3,2),
    top_p numeric(3,2),
    top_k integer,
    frequency_penalty numeric(3,2),
    presence_penalty numeric(3,2),
    repetition_penalty numeric(3,2),
    max_tokens integer,
    memory_score_threshold numeric(3,2),
    memory_limit integer,
    context_window_size integer NOT NULL DEFAULT 20,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS personalities (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    display_name text,
    slug text NOT NULL UNIQUE,
    system_prompt_id uuid REFERENCES system_prompts(id),
    character_info text NOT NULL,
    personality_traits text NOT NULL,
    personality_tone text,
    personality_age text,
    personality_appearance text,
    personality_likes text,
    personality_dislikes text,
    conversational_goals text,
    conversational_examples text,
    custom_fields jsonb,
    voice_enabled boolean NOT NULL DEFAULT false,
    voice_settings jsonb,
    image_enabled boolean NOT NULL DEFAULT false,
    image_settings jsonb,
    avatar_data bytea,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS personality_default_configs (
    personality_id uuid PRIMARY KEY REFERENCES personalities(id),
    llm_config_id uuid NOT NULL REFERENCES llm_configs(id),
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS personality_owners (
    personality_id uuid NOT NULL REFERENCES personalities(id),
    user_id uuid NOT NULL REFERENCES users(id),
    role text NOT NULL DEFAULT 'owner',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (personality_id, user_id)
);
CREATE TABLE IF NOT EXISTS user_personality_configs (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id),
    personality_id uuid NOT NULL REFERENCES personalities(id),
    persona_id uuid REFERENCES personas(id),
    llm_config_id uuid REFERENCES llm_configs(id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (user_id, personality_id)
);
CREATE TABLE IF NOT EXISTS activated_channels (
    id uuid PRIMARY KEY,
    channel_id varchar(20) NOT NULL,
    personality_id uuid NOT NULL REFERENCES personalities(id),
    auto_respond boolean NOT NULL DEFAULT true,
    created_by uuid REFERENCES users(id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (channel_id, personality_id)
);
CREATE TABLE IF NOT EXISTS conversation_history (
    id uuid PRIMARY KEY,
    channel_id varchar(20) NOT NULL,
    guild_id varchar(20),
    personality_id uuid NOT NULL REFERENCES personalities(id),
    persona_id uuid NOT NULL REFERENCES personas(id),
    role text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_conversation_history_context
    ON conversation_history (channel_id, personality_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_conversation_history_persona ON conversation_history (persona_id);
CREATE TABLE IF NOT EXISTS memories (
    id uuid PRIMARY KEY,
    persona_id uuid REFERENCES personas(id),
    personality_id uuid NOT NULL REFERENCES personalities(id),
    content text NOT NULL,
    embedding vector(1536),
    is_summarized boolean NOT NULL DEFAULT false,
    original_message_count integer,
    summarized_at timestamptz,
    session_id text,
    canon_scope text CHECK (canon_scope IN ('personal', 'session', 'global')),
    summary_type text,
    channel_id varchar(20),
    guild_id varchar(20),
    message_ids text[] NOT NULL DEFAULT '{}',
    senders text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    legacy_shapes_user_id uuid,
    source_system text NOT NULL DEFAULT 'tinybot' CHECK (source_system IN ('tinybot', 'shapes-inc'))
);
-- Every text ever embedded, by (model, dimensions, h(text)): no text is paid for twice.
CREATE TABLE IF NOT EXISTS embedding_cache (
    model text NOT NULL,
    dimensions integer NOT NULL,
    text_hash char(32) NOT NULL,
    embedding vector NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, dimensions, text_hash)
);
CREATE INDEX IF NOT EXISTS idx_memories_persona_id ON memories (persona_id);
CREATE INDEX IF NOT EXISTS idx_memories_personality_id ON memories (personality_id);
CREATE INDEX IF NOT EXISTS idx_memories_created_at ON memories (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_memories_legacy_shapes_user_id ON memories (legacy_shapes_user_id);
CREATE INDEX IF NOT EXISTS idx_memories_source_system ON memories (source_system);
CREATE TABLE IF NOT EXISTS shapes_persona_mappings (
    id uuid PRIMARY KEY,
    shapes_user_id uuid NOT NULL UNIQUE,
    persona_id uuid NOT NULL REFERENCES personas(id),
    mapped_at timestamptz NOT NULL,
    mapped_by text,
    verification_status text NOT NULL DEFAULT 'unverified'
);
-- A 1536-dim vector is 6 KB of incompressible floats: kept inline and uncompressed, writes skip a
-- futile compression attempt and TOAST, and scans and index builds skip detoasting (about 2x on
-- bulk loads here). The row still fits a page because text columns stay toastable.
ALTER TABLE memories ALTER COLUMN embedding SET STORAGE PLAIN;
ALTER TABLE embedding_cache ALTER COLUMN embedding SET STORAGE PLAIN;
"""


def apply_old_schema(conn: psycopg.Connection) -> None:
    """Create the old DB's tables (demo data and tests only; the pipeline never writes the old DB)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute(OLD_SCHEMA_SQL)


def apply_new_schema(conn: psycopg.Connection) -> int:
    """Create or complete the new DB's schema; safe to run concurrently and repeatedly.

    Returns the schema version recorded in the database.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        recorded = _recorded_version(conn)
        if recorded is not None and recorded > SCHEMA_VERSION:
            raise RuntimeError(
                f"the new database has schema version {recorded}, newer than this code's "
                f"{SCHEMA_VERSION}: upgrade tinybot_migration before migrating into it"
            )
        if recorded == SCHEMA_VERSION:
            return recorded
        conn.execute(NEW_SCHEMA_SQL)
        conn.execute(
            "INSERT INTO schema_version (version) VALUES (%s) ON CONFLICT DO NOTHING",
            (SCHEMA_VERSION,),
        )
    return SCHEMA_VERSION


def _recorded_version(conn: psycopg.Connection) -> int | None:
    exists = conn.execute("SELECT to_regclass('public.schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return None
    return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
