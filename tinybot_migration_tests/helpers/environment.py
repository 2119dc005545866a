"""The environment a person starts the CLI with on a fresh machine: no database, Dagster home or
export configured (the embedded server and `$TINYBOT_HOME` instead), the provider optional."""

from __future__ import annotations

import os
from pathlib import Path

from tinybot_migration_tests.helpers.openai_server import OpenAITestServer

CONFIGURED = ("OLD_DATABASE_URL", "DATABASE_URL", "DAGSTER_HOME", "DAGSTER_STORAGE_URL", "SHAPES_EXPORT_DIR")


def fresh_environment(home: Path, server: OpenAITestServer | None = None, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED}
    env["TINYBOT_HOME"] = str(home)
    if server is not None:
        env.update(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=server.base_url)
    env.update(overrides)
    return env
