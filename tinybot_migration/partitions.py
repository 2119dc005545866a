"""Partitions: memories split by personality slug, registered when personalities are migrated."""

import psycopg
from dagster import DagsterInstance, DynamicPartitionsDefinition

personality_partitions = DynamicPartitionsDefinition(name="personality")


def unregistered_personality_slugs(conn: psycopg.Connection, instance: DagsterInstance) -> list[str]:
    """Slugs in the new DB's personalities that are not partitions yet, alphabetically (registering
    them appends, so existing keys keep their order)."""
    slugs = [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]
    known = set(instance.get_dynamic_partitions(personality_partitions.name))
    return [s for s in slugs if s not in known]
