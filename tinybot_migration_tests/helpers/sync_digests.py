"""Every synced table's rows as key -> the sync's own row digest, to compare two databases."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tinybot_migration.lib.sync.engine import prepare_session
from tinybot_migration.lib.sync.tables import SYNC_TABLES


def digests(conn: psycopg.Connection) -> dict[str, dict[tuple, str]]:
    prepare_session(conn)
    out = {}
    for table in SYNC_TABLES:
        query = sql.SQL("SELECT {}, {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, table.key)), table.row_hash(), table.identifier
        )
        out[table.name] = {tuple(r[:-1]): r[-1] for r in conn.execute(query).fetchall()}
    return out
