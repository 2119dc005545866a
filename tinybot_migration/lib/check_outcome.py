"""The result of one check function, in plain terms; `tinybot_migration.defs.check_results` turns it
into Dagster's `AssetCheckResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ERROR: Literal["ERROR"] = "ERROR"  # blocking: the pipeline could have lost or broken something
WARN: Literal["WARN"] = "WARN"  # a defect in the source, accounted for and named


class Markdown(str):
    """A metadata value shown as markdown (a table, a list of examples)."""


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    severity: Literal["ERROR", "WARN"] = ERROR
