"""Opening PostgreSQL connections without ever leaking a password into an error, with one clear
line that says which database, what happened and what to do."""

from __future__ import annotations

import psycopg

from tinybot_migration.lib.embedded_postgres import embedded_database_url
from tinybot_migration.lib.passwords import redact_url, scrub, unencoded_password_problem
from tinybot_migration.lib.settings import Database


class DatabaseConnectionError(RuntimeError):
    pass


# A server that accepts the connection and never answers fails here, not after minutes; a URL's
# own `connect_timeout` wins.
CONNECT_TIMEOUT_SECONDS = 10

# A server that is not (or no longer) there, over TCP or a Unix socket.
NOTHING_LISTENS = ("Connection refused", "connection refused", "No such file or directory")
# Driver messages that mean a database stopped answering mid-run (as opposed to refusing something).
CONNECTION_LOST = (
    "server closed the connection",
    "terminating connection",
    "consuming input failed",
    "the connection is lost",
    *NOTHING_LISTENS,
)


def connection_lost(message: str) -> bool:
    return any(marker in message for marker in CONNECTION_LOST)


# What a failed connection's message means, and what to do about it (first match wins).
CONNECTION_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("password authentication failed", "no password supplied", "authentication failed"),
        "the server refused the user or password: check them in the URL",
    ),
    (
        ("could not translate host name", "Name or service not known", "nodename nor servname"),
        "unknown host: check the host name in the URL",
    ),
    (
        NOTHING_LISTENS,
        "nothing accepts connections there: is the database running, and are the host and port right?",
    ),
    (
        ("timeout expired",),
        "no answer within the connect timeout: something listens there but does not answer as "
        "PostgreSQL; check the host, the port and any firewall",
    ),
    (("does not exist",), "the server has no such database (or role): create it, or fix the URL"),
)


def connection_failure(url: str, role: str, error: BaseException) -> str:
    """One line: which database, masked, what happened and what to do; each cause said once."""
    detail = scrub(str(error), url).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    advice = next((a for needles, a in CONNECTION_CAUSES if any(n in str(error) for n in needles)), None)
    return f"cannot connect to the {role} at {redact_url(url)}: " + (
        f"{advice} ({detail})" if advice else detail
    )


def open_connection(url: str, role: str, **kwargs) -> psycopg.Connection:
    problem = unencoded_password_problem(url)
    if problem is not None:
        raise DatabaseConnectionError(f"cannot use the {role} URL {redact_url(url)}: {problem}")
    if "connect_timeout" not in url:
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.Error as exc:
        raise DatabaseConnectionError(connection_failure(url, role, exc)) from None


def open_read_only(url: str, role: str) -> psycopg.Connection:
    """An autocommit connection the server itself refuses writes on."""
    conn = open_connection(url, role, autocommit=True, options="-c default_transaction_read_only=on")
    conn.read_only = True
    return conn


def database_url(url: str | None, embedded_database: str) -> str:
    """`url`, or the URL of `embedded_database` on the embedded server when unset (started here)."""
    return url or embedded_database_url(embedded_database)


def url_of(database: Database) -> str:
    """The URL a command uses for `database`: its variable's, or its embedded server database's (a
    psycopg URL either way)."""
    configured = database.configured_url()
    if configured is None and database.embedded is None:
        raise DatabaseConnectionError(f"{database.variable} is not set: the {database.role}'s URL")
    return psycopg_dialect(database_url(configured, database.embedded))


# Dagster's storage layer (SQLAlchemy) needs the psycopg2 dialect in its URL; psycopg takes none.
DAGSTER_DIALECT = "postgresql+psycopg2://"


def dagster_dialect(url: str) -> str:
    return url if url.startswith(DAGSTER_DIALECT) else url.replace("postgresql://", DAGSTER_DIALECT, 1)


def psycopg_dialect(url: str) -> str:
    return url.replace(DAGSTER_DIALECT, "postgresql://", 1)
