"""Dry runs: what the memory assets would embed and what it would cost, with nothing written and
no provider called (`tinybot-migration run --dry-run`, or run config `dry_run: true`).

An asset says how it takes part through an op tag: `config` (it takes `DryRunConfig` and reports
an observation instead of materializing) or `read_only` (it writes nothing anyway, so it runs as
usual). Every other asset is left out of a dry run.
"""

from __future__ import annotations

from dagster import AssetsDefinition, Config
from pydantic import Field

DRY_RUN_TAG = "tinybot/dry_run"
TAKES_CONFIG = "config"
READ_ONLY = "read_only"


class DryRunConfig(Config):
    dry_run: bool = Field(
        default=False,
        description="Report the texts not yet in the embedding cache, the estimated tokens and USD, "
        "and write nothing (no provider is called; the new database is opened read-only).",
    )


def dry_run_role(asset: AssetsDefinition) -> str | None:
    """`config`, `read_only`, or None for an asset a dry run leaves out."""
    return asset.op.tags.get(DRY_RUN_TAG)
