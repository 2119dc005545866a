"""`tinybot-migration`: demo data, the demo, the migration run, and the Dagster UI."""
