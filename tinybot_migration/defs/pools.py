"""The concurrency pools the assets declare, once (their limits are in dagster.yaml)."""

# Every asset that writes the new database in bulk: the relational copy, the vector index.
NEW_DATABASE_POOL = "tinybot_new_database"
# Every asset that calls the embedding provider: the memory sources.
EMBEDDING_POOL = "tinybot_embeddings"
