"""What the relational migration knows about each table: columns, keys, foreign keys, id seed.

The specs are listed in foreign-key order; the copy engine, the asset factory and the checks all
read them, so a table is described once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tinybot_migration import ids


@dataclass(frozen=True)
class ForeignKey:
    column: str
    parent: str  # name of the parent table (whose ids the column holds)


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]  # same names and order in both databases
    conflict_key: tuple[str, ...]  # primary key in the new DB
    foreign_keys: tuple[ForeignKey, ...] = ()
    # Seed of the new id from the (remapped) values of `seed_columns`; None for junction tables,
    # which keep their natural key of remapped ids.
    seed: Callable[..., str] | None = None
    # The same seed as a SQL expression over the seed columns' SQL expressions (see ids.py).
    seed_sql: Callable[..., str] | None = None
    seed_columns: tuple[str, ...] = ()
    # Read order: decides which row of a colliding natural key is first (DESIGN §3).
    order_by: str = "created_at, id"
    description: str = ""

    @property
    def has_id(self) -> bool:
        return self.seed is not None

    @property
    def foreign_key_columns(self) -> frozenset[str]:
        return frozenset(fk.column for fk in self.foreign_keys)

    @property
    def content_columns(self) -> tuple[str, ...]:
        """Columns that carry data rather than identity: compared by the content checksum."""
        skip = self.foreign_key_columns | {"id"}
        return tuple(c for c in self.columns if c not in skip)


TIMESTAMPS = ("created_at", "updated_at")

USERS = TableSpec(
    name="users",
    columns=("id", "discord_id", "username", *TIMESTAMPS),
    conflict_key=("id",),
    seed=ids.user_seed,
    seed_sql=ids.user_seed_sql,
    seed_columns=("discord_id",),
    description="Discord users of the bot.",
)
PERSONAS = TableSpec(
    name="personas",
    columns=(
        "id",
        "name",
        "description",
        "content",
        "preferred_name",
        "pronouns",
        "owner_id",
        *TIMESTAMPS,
    ),
    conflict_key=("id",),
    foreign_keys=(ForeignKey("owner_id", "users"),),
    seed=ids.persona_seed,
    seed_sql=ids.persona_seed_sql,
    seed_columns=("owner_id", "name"),
    description="Personas users present to personalities.",
)
USER_DEFAULT_PERSONAS = TableSpec(
    name="user_default_personas",
    columns=("user_id", "persona_id", "updated_at"),
    conflict_key=("user_id",),
    foreign_keys=(ForeignKey("user_id", "users"), ForeignKey("persona_id", "personas")),
    order_by="user_id",
    description="Each user's default persona.",
)
SYSTEM_PROMPTS = TableSpec(
    name="system_prompts",
    columns=("id", "name", "description", "content", "is_default", *TIMESTAMPS),
    conflict_key=("id",),
    seed=ids.system_prompt_seed,
    seed_sql=ids.system_prompt_seed_sql,
    seed_columns=("name",),
    description="System prompts personalities are built on.",
)
LLM_CONFIGS = TableSpec(
    name="llm_configs",
    columns=(
        "id",
        "name",
        "description",
        "owner_id",
        "is_global",
        "is_default",
        "model",
        "vision_model",
        "temperature",
        "top_p",
        "top_k",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "max_tokens",
        "memory_score_threshold",
        "memory_limit",
        "context_window_size",
        *TIMESTAMPS,
    ),
    conflict_key=("id",),
    foreign_keys=(ForeignKey("owner_id", "users"),),
    seed=ids.llm_config_seed,
    seed_sql=ids.llm_config_seed_sql,
    seed_columns=("owner_id", "name"),
    description="Model settings, global or owned by a user.",
)
PERSONALITIES = TableSpec(
    name="personalities",
    columns=(
        "id",
        "name",
        "display_name",
        "slug",
        "system_prompt_id",
        "character_info",
        "personality_traits",
        "personality_tone",
        "personality_age",
        "personality_appearance",
        "personality_likes",
        "personality_dislikes",
        "conversational_goals",
        "conversational_examples",
        "custom_fields",
        "voice_enabled",
        "voice_settings",
        "image_enabled",
        "image_settings",
        "avatar_data",
        *TIMESTAMPS,
    ),
    conflict_key=("id",),
    foreign_keys=(ForeignKey("system_prompt_id", "system_prompts"),),
    seed=ids.personality_seed,
    seed_sql=ids.personality_seed_sql,
    seed_columns=("slug",),
    description="The AI personalities the bot hosts.",
)
PERSONALITY_DEFAULT_CONFIGS = TableSpec(
    name="personality_default_configs",
    columns=("personality_id", "llm_config_id", "updated_at"),
    conflict_key=("personality_id",),
    foreign_keys=(ForeignKey("personality_id", "personalities"), ForeignKey("llm_config_id", "llm_configs")),
    order_by="personality_id",
    description="Each personality's default LLM config.",
)
PERSONALITY_OWNERS = TableSpec(
    name="personality_owners",
    columns=("personality_id", "user_id", "role", *TIMESTAMPS),
    conflict_key=("personality_id", "user_id"),
    foreign_keys=(ForeignKey("personality_id", "personalities"), ForeignKey("user_id", "users")),
    order_by="personality_id, user_id",
    description="Who owns which personality.",
)
USER_PERSONALITY_CONFIGS = TableSpec(
    name="user_personality_configs",
    columns=("id", "user_id", "personality_id", "persona_id", "llm_config_id", *TIMESTAMPS),
    conflict_key=("id",),
    foreign_keys=(
        ForeignKey("user_id", "users"),
        ForeignKey("personality_id", "personalities"),
        ForeignKey("persona_id", "personas"),
        ForeignKey("llm_config_id", "llm_configs"),
    ),
    seed=ids.user_personality_config_seed,
    seed_sql=ids.user_personality_config_seed_sql,
    seed_columns=("user_id", "personality_id"),
    description="Per-user overrides of a personality's persona and LLM config.",
)
ACTIVATED_CHANNELS = TableSpec(
    name="activated_channels",
    columns=("id", "channel_id", "personality_id", "auto_respond", "created_by", *TIMESTAMPS),
    conflict_key=("id",),
    foreign_keys=(ForeignKey("personality_id", "personalities"), ForeignKey("created_by", "users")),
    seed=ids.activated_channel_seed,
    seed_sql=ids.activated_channel_seed_sql,
    seed_columns=("channel_id", "personality_id"),
    description="Channels where a personality answers.",
)
CONVERSATION_HISTORY = TableSpec(
    name="conversation_history",
    columns=("id", "channel_id", "guild_id", "personality_id", "persona_id", "role", "content", "created_at"),
    conflict_key=("id",),
    foreign_keys=(ForeignKey("personality_id", "personalities"), ForeignKey("persona_id", "personas")),
    seed=ids.conversation_message_seed,
    seed_sql=ids.conversation_message_seed_sql,
    seed_columns=("channel_id", "personality_id", "persona_id", "created_at", "role", "content"),
    description="Every message exchanged with the bot.",
)

# Foreign-key order: every table comes after the tables its foreign keys point to.
RELATIONAL_TABLES: tuple[TableSpec, ...] = (
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
TABLES_BY_NAME = {spec.name: spec for spec in RELATIONAL_TABLES}
# Tables whose ids other tables reference: their old → new id maps are kept while copying.
PARENT_TABLES = frozenset(fk.parent for spec in RELATIONAL_TABLES for fk in spec.foreign_keys)
