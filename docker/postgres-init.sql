-- Run once by the PostgreSQL image on an empty volume: Dagster's own storage gets its own
-- database beside the new bot database (POSTGRES_DB, tinybot), which the pipeline sets up itself
-- (the vector extension and its schema) before writing anything.
CREATE DATABASE dagster;
