"""The personalities a memory source works through: slugs, ids and batches (a personality's memories
are one partition of the memory assets)."""

import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager

import psycopg

from tinybot_migration.lib.new_database_schema import has_rows
from tinybot_migration.lib.postgres import Connect
from tinybot_migration.lib.schema import PERSONALITIES


def personality_slugs(conn: psycopg.Connection) -> list[str]:
    """The slugs of `conn`'s personalities, alphabetically; none when the table is not there yet (an
    old database before its data is loaded)."""
    if conn.execute("SELECT to_regclass('personalities')").fetchone()[0] is None:
        return []
    return [r[0] for r in conn.execute("SELECT slug FROM personalities ORDER BY slug").fetchall()]


def slugs_of(conn: psycopg.Connection, personality_ids: Collection[uuid.UUID]) -> list[str]:
    rows = conn.execute(
        "SELECT slug FROM personalities WHERE id = ANY(%s) ORDER BY slug", (list(personality_ids),)
    )
    return [r[0] for r in rows.fetchall()]


class UnknownPersonalityError(ValueError):
    """A partition key names a slug that the new DB's personalities table does not have."""


def personality_ids_for(conn: psycopg.Connection, slugs: Sequence[str]) -> dict[str, uuid.UUID]:
    """slug -> personality id for every partition key, in the given order."""
    rows = conn.execute("SELECT slug, id FROM personalities WHERE slug = ANY(%s)", (list(slugs),)).fetchall()
    found = dict(rows)
    unknown = [s for s in slugs if s not in found]
    if unknown:
        raise UnknownPersonalityError(
            f"personality partition(s) {', '.join(map(repr, unknown[:5]))} have no row in the new DB's "
            "personalities table: migrate the relational tables first, or delete the stale partition"
        )
    return {slug: found[slug] for slug in slugs}


def personality_batches(
    personality_ids: dict[str, uuid.UUID], weight: Callable[[str, uuid.UUID], int], limit: int
) -> list[dict[str, uuid.UUID]]:
    """The personalities (slug -> id, in order) in consecutive batches whose weights add up to
    about `limit`: a memory source works a batch at a time so that what it holds follows the
    batch, not the whole table. A personality is never split; one heavier than `limit` is a batch
    of its own."""
    batches: list[dict[str, uuid.UUID]] = [{}]
    size = 0
    for slug, personality_id in personality_ids.items():
        heft = weight(slug, personality_id)
        if batches[-1] and size + heft > limit:
            batches.append({})
            size = 0
        batches[-1][slug] = personality_id
        size += heft
    return batches


@contextmanager
def people_database(
    new_conn: psycopg.Connection, old_connect: Connect
) -> Iterator[tuple[psycopg.Connection | None, psycopg.Connection]]:
    """(the new database once it is migrated, the database to read users, personas and
    personalities from): the new one for both once it has personalities; before the first migration
    None and the old database, whose slugs and discord ids are the same."""
    if has_rows(new_conn, PERSONALITIES):
        yield new_conn, new_conn
        return
    with old_connect() as old_conn:
        yield None, old_conn
