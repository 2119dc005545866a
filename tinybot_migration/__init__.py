"""tinybot_migration: moves tinybot's data into PostgreSQL + pgvector with deterministic ids."""

import warnings

# Dagster prints beta/preview warnings for features this project relies on (backfill policies,
# partitioned checks) in every process; silence them before any decorator runs.
try:
    import dagster as _dg

    warnings.filterwarnings("ignore", category=_dg.BetaWarning)
    warnings.filterwarnings("ignore", category=_dg.PreviewWarning)
except (ImportError, AttributeError):  # pragma: no cover - dagster always installed
    pass
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
