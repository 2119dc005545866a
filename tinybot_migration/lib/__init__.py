"""The Dagster-free core: ids, schemas and migrations, the embeddings client and cache, the memory
store and vector index, the relational copy, the shapes.inc reader, the sync engine, typed progress
and settings. Nothing here imports Dagster, `tinybot_migration.defs` or the app shell."""
