"""Partitions: memories split by personality slug, registered when personalities are migrated."""

from dagster import DynamicPartitionsDefinition

personality_partitions = DynamicPartitionsDefinition(name="personality")
