"""Running the migration locally: the embedded PostgreSQL, the persistent Dagster instance, the
stages that follow the asset graph and the in-process runner."""
