"""Deterministic demo data: an old tinybot database and a shapes.inc export to migrate."""

from tinybot_migration.lib.demo_data.generator import (
    BASE_DATE,
    OLD_TABLES,
    DemoDataSummary,
    generate_demo_data,
    old_database_has_data,
)

__all__ = ["BASE_DATE", "OLD_TABLES", "DemoDataSummary", "generate_demo_data", "old_database_has_data"]
