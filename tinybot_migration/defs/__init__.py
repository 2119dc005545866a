"""The Dagster definitions, per domain, over the core in `tinybot_migration.lib`; assembled into
one `Definitions` in `tinybot_migration.definitions`."""

import warnings

import dagster as _dg

# Dagster prints beta/preview warnings for features this project relies on (backfill policies,
# partitioned checks) in every process; silence them before any decorator runs.
warnings.filterwarnings("ignore", category=_dg.BetaWarning)
warnings.filterwarnings("ignore", category=_dg.PreviewWarning)
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
