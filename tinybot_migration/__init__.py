"""tinybot_migration: moves tinybot's data into the bot's own PostgreSQL + pgvector database.

Three layers, each importing only from below: `lib` (the Dagster-free core), `defs` (the Dagster
definitions per domain, assembled in `definitions`), and the app shell (`cli`, `runtime`).
"""
