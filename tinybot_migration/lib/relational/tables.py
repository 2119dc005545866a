"""What the relational copy knows about each table beyond its columns: the id seed, the read order
that settles collisions, and a description.

Columns, keys and foreign keys come from the table's one description in `schema.py`; the specs are
listed in foreign-key order, and the copy engine, the asset factory and the checks all read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from tinybot_migration.lib import ids, schema
from tinybot_migration.lib.postgres import table_columns


@dataclass(frozen=True)
class ForeignKey:
    column: str
    parent: str  # name of the parent table (whose ids the column holds)


@dataclass(frozen=True)
class TableSpec:
    table: schema.Table
    # Seed of the new id from the (remapped) values of `seed_columns`; None for junction tables,
    # which keep their natural key of remapped ids.
    seed: Callable[..., str] | None = None
    # The same seed as a SQL expression over the seed columns' SQL expressions (see ids.py).
    seed_sql: Callable[..., str] | None = None
    seed_columns: tuple[str, ...] = ()
    # Read order: decides which row of a colliding natural key is first (docs/design.md §3).
    order_by: str = "created_at, id"
    description: str = ""

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def columns(self) -> tuple[str, ...]:
        """Same names and order in both databases."""
        return self.table.column_names

    def columns_in(self, old_conn: psycopg.Connection) -> tuple[str, ...]:
        """The columns the copy writes: the new table's, less any the old table lacks (a column a
        later bot migration added keeps its default)."""
        present = table_columns(old_conn, self.name)
        return tuple(c for c in self.columns if c in present)

    @property
    def conflict_key(self) -> tuple[str, ...]:
        return self.table.primary_key

    def row_key_sql(self, alias: str = "t") -> sql.Composable:
        """A row's conflict key as text, comma-joined: how relational_rejects names a left-out row,
        and how the checks find it again in the old table."""
        return sql.SQL("({})::text").format(
            sql.SQL(" || ',' || ").join(sql.Identifier(alias, c) for c in self.conflict_key)
        )

    @property
    def foreign_keys(self) -> tuple[ForeignKey, ...]:
        return tuple(ForeignKey(column, parent) for column, parent in self.table.foreign_keys)

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


# What the copy needs of each relational table, by table name; the tables and their foreign-key
# order are schema.RELATIONAL_TABLES.
_COPY_RULES: dict[str, dict] = {
    "users": dict(
        seed=ids.user_seed,
        seed_sql=ids.user_seed_sql,
        seed_columns=("discord_id",),
        description="Discord users of the bot.",
    ),
    "personas": dict(
        seed=ids.persona_seed,
        seed_sql=ids.persona_seed_sql,
        seed_columns=("owner_id", "name"),
        description="Personas users present to personalities.",
    ),
    "user_default_personas": dict(
        order_by="user_id",
        description="Each user's default persona.",
    ),
    "system_prompts": dict(
        seed=ids.system_prompt_seed,
        seed_sql=ids.system_prompt_seed_sql,
        seed_columns=("name",),
        description="System prompts personalities are built on.",
    ),
    "llm_configs": dict(
        seed=ids.llm_config_seed,
        seed_sql=ids.llm_config_seed_sql,
        seed_columns=("owner_id", "name"),
        description="Model settings, global or owned by a user.",
    ),
    "personalities": dict(
        seed=ids.personality_seed,
        seed_sql=ids.personality_seed_sql,
        seed_columns=("slug",),
        description="The AI personalities the bot hosts.",
    ),
    "personality_default_configs": dict(
        order_by="personality_id",
        description="Each personality's default LLM config.",
    ),
    "personality_owners": dict(
        order_by="personality_id, user_id",
        description="Who owns which personality.",
    ),
    "user_personality_configs": dict(
        seed=ids.user_personality_config_seed,
        seed_sql=ids.user_personality_config_seed_sql,
        seed_columns=("user_id", "personality_id"),
        description="Per-user overrides of a personality's persona and LLM config.",
    ),
    "activated_channels": dict(
        seed=ids.activated_channel_seed,
        seed_sql=ids.activated_channel_seed_sql,
        seed_columns=("channel_id", "personality_id"),
        description="Channels where a personality answers.",
    ),
    "conversation_history": dict(
        seed=ids.conversation_message_seed,
        seed_sql=ids.conversation_message_seed_sql,
        seed_columns=("channel_id", "personality_id", "persona_id", "created_at", "role", "content"),
        description="Every message exchanged with the bot.",
    ),
}

# Foreign-key order: every table comes after the tables its foreign keys point to.
RELATIONAL_TABLES: tuple[TableSpec, ...] = tuple(
    TableSpec(table, **_COPY_RULES[table.name]) for table in schema.RELATIONAL_TABLES
)
TABLES_BY_NAME = {spec.name: spec for spec in RELATIONAL_TABLES}
PERSONALITIES = TABLES_BY_NAME["personalities"]
