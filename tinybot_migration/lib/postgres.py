"""psycopg helpers shared by every domain: COPY text lines and fields, column types, bulk-load
preparation and deadlock retries."""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import psycopg
from psycopg import sql

from tinybot_migration.lib.progress import Notice, Progress

# Opens a connection to one database (a resource's `connect`), for work that runs side by side.
Connect = Callable[[], AbstractContextManager[psycopg.Connection]]

T = TypeVar("T")
DEADLOCK_ATTEMPTS = 4


def retry_deadlocks(transaction: Callable[[], T], attempts: int = DEADLOCK_ATTEMPTS) -> T:
    """Run `transaction` (a function that opens and commits one transaction) again when the server
    chose it as a deadlock victim. Writers insert in key order, which rules out deadlocks between
    single statements; this covers whatever ordering cannot (e.g. two runs sharing texts)."""
    for attempt in range(1, attempts + 1):
        try:
            return transaction()
        except psycopg.errors.DeadlockDetected:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.05, 0.2) * attempt)
    raise AssertionError("unreachable")


# Session advisory locks of the project's (first key), so two runs or syncs never run the same DDL
# at once: the second waits, then finds the work done.
LOCK_CLASS = 0x7469_6E64  # "tind"
VECTOR_INDEX_LOCK = (LOCK_CLASS, 1)  # building or dropping idx_memories_embedding
QDRANT_STORE_LOCK = (LOCK_CLASS, 2)  # a local-mode Qdrant store open (one client per folder)
SYNC_TARGET_LOCK = (LOCK_CLASS, 2)  # a sync writing into this database
LOCK_POLL_SECONDS = 1.0


@contextmanager
def advisory_lock(
    conn: psycopg.Connection, lock: tuple[int, int], waiting: str, log: Progress
) -> Iterator[None]:
    """Hold a session advisory lock on `conn` (autocommit) while the block runs; say `waiting` once
    if another session holds it. It is polled, never waited on inside a statement: a session blocked
    in pg_advisory_lock holds a snapshot, and CREATE INDEX CONCURRENTLY in the session holding the
    lock would wait for that snapshot: a deadlock."""
    said = False
    while not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock).fetchone()[0]:
        if not said:
            log(Notice(waiting))
            said = True
        time.sleep(LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)


def take_turns_in_transaction(conn: psycopg.Connection, what: str) -> None:
    """Inside a transaction: wait for any other run's transaction writing `what` (a table) to end.
    Two runs upserting the same rows at once can collide on a unique key their ON CONFLICT does not
    name (a duplicate-key error instead of an update); one after the other, the second finds the rows."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, what))


def copy_line_batches(copy, size: int) -> Iterator[list[bytes]]:
    """Lines of a text-format COPY TO STDOUT, without their newline, in lists of about `size`.

    The server sends one row per CopyData message; `size` messages are joined and cut at the
    newlines at once (values never contain one), so a block cut any other way still gives whole
    lines.
    """
    blocks = iter(copy)
    carry = b""
    # bytes() first: joining psycopg's memoryviews directly costs twice as much.
    while chunk := [bytes(block) for block in islice(blocks, size)]:
        lines = (carry + b"".join(chunk)).split(b"\n")
        carry = lines.pop()
        if lines:
            yield lines
    if carry:
        yield [carry]


def copy_lines(copy) -> Iterator[bytes]:
    """Lines of a text-format COPY TO STDOUT, one by one, without their newline."""
    for lines in copy_line_batches(copy, 1024):
        yield from lines


_COPY_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_COPY_UNESCAPED = {b"\\": b"\\", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def copy_text_field(field: bytes) -> bytes:
    """A text-format COPY field's value: the server escapes backslash, tab, newline and the other
    control characters it names with a backslash (\\N alone is NULL, which a seed never is)."""
    if b"\\" not in field:
        return field
    if field == b"\\N":
        raise ValueError("a NULL where a value is required (a seed column is NULL?)")
    return _COPY_ESCAPE.sub(lambda m: _COPY_UNESCAPED[m.group(1)], field)


def copy_text_fields(fields: list[bytes]) -> list[bytes]:
    """`copy_text_field` of every field, in place: a field without a backslash is left as it is."""
    for i, field in enumerate(fields):
        if b"\\" in field:
            fields[i] = copy_text_field(field)
    return fields


@dataclass(frozen=True)
class ColumnType:
    name: str
    data_type: str  # information_schema data_type, or the type name for user-defined and arrays

    @property
    def is_timestamp(self) -> bool:
        return self.data_type.startswith("timestamp")

    @property
    def is_zoned(self) -> bool:
        return self.data_type == "timestamp with time zone"


def table_columns(conn: psycopg.Connection, table: str) -> set[str]:
    """The columns `table` has in this database."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return {name for (name,) in rows}


def column_types(conn: psycopg.Connection, table: str, columns: tuple[str, ...]) -> list[ColumnType]:
    """The types of `columns` of `table` as this database has them, in the order asked."""
    rows = conn.execute(
        "SELECT column_name, data_type, udt_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    found = {
        name: (udt if data_type in ("USER-DEFINED", "ARRAY") else data_type) for name, data_type, udt in rows
    }
    missing = [c for c in columns if c not in found]
    if missing:
        raise RuntimeError(
            f"table {table} has no column(s) {', '.join(missing)} in database {conn.info.dbname}"
        )
    return [ColumnType(c, found[c]) for c in columns]


def prepare_bulk_load(conn: psycopg.Connection, table_name: str) -> list[sql.Composable]:
    """Drop what slows a bulk load into an empty table; return the statements that rebuild it.

    Foreign keys and secondary indexes always go; the primary key and unique constraints go too
    when no other table references this one. Rebuilding them validates the loaded rows at once
    (a duplicate id or a missing parent fails the transaction), in a fraction of the time that
    row-by-row maintenance takes.
    """
    table = sql.Identifier(table_name)
    referenced = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = %s::regclass)", (table_name,)
    ).fetchone()[0]
    constraints = conn.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = ANY(%s) ORDER BY contype DESC, conname",
        (table_name, ["f"] if referenced else ["f", "p", "u"]),
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = %s::regclass"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) ORDER BY i.relname",
        (table_name,),
    ).fetchall()
    if constraints:
        conn.execute(
            sql.SQL("ALTER TABLE {} {}").format(
                table,
                sql.SQL(", ").join(
                    sql.SQL("DROP CONSTRAINT {}").format(sql.Identifier(name)) for name, _, _ in constraints
                ),
            )
        )
    for name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    # Keys and unique constraints first (sorted 'u', 'p' before 'f'), then indexes, then foreign keys.
    keys = [(n, d) for n, kind, d in constraints if kind != "f"]
    foreign_keys = [(n, d) for n, kind, d in constraints if kind == "f"]
    rebuild: list[sql.Composable] = [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, sql.Identifier(n), sql.SQL(d))
        for n, d in keys
    ]
    rebuild += [sql.SQL(definition) for _, definition in indexes]
    if foreign_keys:
        rebuild.append(
            sql.SQL("ALTER TABLE {} {}").format(
                table,
                sql.SQL(", ").join(
                    sql.SQL("ADD CONSTRAINT {} {}").format(sql.Identifier(n), sql.SQL(d))
                    for n, d in foreign_keys
                ),
            )
        )
    return rebuild


def storable_text(text: str) -> str | None:
    """`text` when PostgreSQL can store it as text, else None."""
    if "\x00" in text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def jsonb_safe(value: object) -> object:
    """`value` with what PostgreSQL's jsonb cannot hold made representable: NaN and infinities
    become strings, NUL characters and lone surrogates are escaped as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return storable_text(value) or value.encode("utf-8", "backslashreplace").decode().replace(
            "\x00", "\\u0000"
        )
    if isinstance(value, list):
        return [jsonb_safe(v) for v in value]
    if isinstance(value, dict):
        return {jsonb_safe(k): jsonb_safe(v) for k, v in value.items()}
    return value
