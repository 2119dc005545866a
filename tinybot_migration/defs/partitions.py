"""Partitions: memories split by personality slug, registered when personalities are migrated."""

from collections.abc import Callable
from contextlib import AbstractContextManager

import psycopg
from dagster import DagsterInstance, DynamicPartitionsDefinition

from tinybot_migration.lib.personalities import personality_slugs

personality_partitions = DynamicPartitionsDefinition(name="personality")


def unregistered_personality_slugs(conn: psycopg.Connection, instance: DagsterInstance) -> list[str]:
    """Slugs in `conn`'s personalities that are not partitions yet, alphabetically (registering
    them appends, so existing keys keep their order)."""
    known = set(instance.get_dynamic_partitions(personality_partitions.name))
    return [s for s in personality_slugs(conn) if s not in known]


def register_personality_partitions(conn: psycopg.Connection, instance: DagsterInstance) -> int:
    """Add every slug of `conn`'s personalities as a memory partition (the new DB's, or for a dry
    run before the first migration the old DB's: slugs are the same in both); existing keys keep
    their order. Returns how many were added."""
    new_slugs = unregistered_personality_slugs(conn, instance)
    if new_slugs:
        instance.add_dynamic_partitions(personality_partitions.name, new_slugs)
    return len(new_slugs)


def register_partitions_before_first_migration(
    instance: DagsterInstance, connect_old: Callable[[], AbstractContextManager[psycopg.Connection]]
) -> int:
    """On an instance with no personality partition yet (before the first migration), register the
    old DB's slugs, so that a dry run, or "Materialize all" in the UI, has every personality to
    offer: the `personalities` asset registers the same ones when it copies them. Once any partition
    exists this reads nothing. Returns how many were added."""
    if instance.get_dynamic_partitions(personality_partitions.name):
        return 0
    with connect_old() as conn:
        return register_personality_partitions(conn, instance)
