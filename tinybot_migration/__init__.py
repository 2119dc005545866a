"""tinybot_migration: moves tinybot's data into PostgreSQL + pgvector with deterministic ids."""

import warnings

import dagster as _dg

# Dagster prints beta/preview warnings for features this project relies on (backfill policies,
# partitioned checks) in every process; silence them before any decorator runs.
warnings.filterwarnings("ignore", category=_dg.BetaWarning)
warnings.filterwarnings("ignore", category=_dg.PreviewWarning)
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
