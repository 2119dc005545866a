"""Partitions: memories split by personality slug, registered when personalities are migrated."""

import uuid
from collections.abc import Sequence

import psycopg
from dagster import DagsterInstance, DynamicPartitionsDefinition

personality_partitions = DynamicPartitionsDefinition(name="personality")


def unregistered_personality_slugs(conn: psycopg.Connection, instance: DagsterInstance) -> list[str]:
    """Slugs in the new DB's personalities that are not partitions yet, alphabetically (registering
    them appends, so existing keys keep their order)."""
    slugs = [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]
    known = set(instance.get_dynamic_partitions(personality_partitions.name))
    return [s for s in slugs if s not in known]


def register_personality_partitions(conn: psycopg.Connection, instance: DagsterInstance) -> int:
    """Add every slug of `conn`'s personalities as a memory partition (the new DB's, or for a dry
    run before the first migration the old DB's: slugs are the same in both); existing keys keep
    their order. Returns how many were added."""
    new_slugs = unregistered_personality_slugs(conn, instance)
    if new_slugs:
        instance.add_dynamic_partitions(personality_partitions.name, new_slugs)
    return len(new_slugs)


class UnknownPersonalityError(ValueError):
    """A partition key names a slug that the new DB's personalities table does not have."""


def personality_ids_for(conn: psycopg.Connection, slugs: Sequence[str]) -> dict[str, uuid.UUID]:
    """slug -> personality id for every partition key, in the given order."""
    rows = conn.execute("SELECT slug, id FROM personalities WHERE slug = ANY(%s)", (list(slugs),)).fetchall()
    found = dict(rows)
    unknown = [s for s in slugs if s not in found]
    if unknown:
        raise UnknownPersonalityError(
            f"personality partition(s) {', '.join(map(repr, unknown[:5]))} have no row in the new DB's "
            "personalities table: migrate the relational tables first, or delete the stale partition"
        )
    return {slug: found[slug] for slug in slugs}
