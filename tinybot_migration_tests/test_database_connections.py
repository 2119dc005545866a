"""Connecting to a database: each way it fails is its own one-line message with its own advice, the
password never shown, and a server that never answers costs seconds, not minutes."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest

from tinybot_migration.lib import database
from tinybot_migration.lib.database import DatabaseConnectionError, connection_failure, open_connection


def test_a_refused_port_says_nothing_accepts_connections_there():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(DatabaseConnectionError) as refused:
            open_connection(f"postgresql://me:hunter2@127.0.0.1:{port}/db", "new database")
    message = str(refused.value)
    assert message.startswith(
        f"cannot connect to the new database at postgresql://me:***@127.0.0.1:{port}/db:"
    )
    assert "nothing accepts connections there" in message and "hunter2" not in message
    assert message.count("cannot connect") == 1 and "\n" not in message


def test_a_port_that_accepts_and_never_answers_fails_within_the_connect_timeout(monkeypatch):
    monkeypatch.setattr(database, "CONNECT_TIMEOUT_SECONDS", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DatabaseConnectionError) as hung:
            open_connection(f"postgresql://me@127.0.0.1:{port}/db", "old database")
        seconds = time.monotonic() - started
    assert seconds < 10 and "no answer within the connect timeout" in str(hung.value)


@pytest.mark.parametrize(
    ("driver_message", "advice"),
    [
        ('FATAL:  password authentication failed for user "me"', "refused the user or password"),
        ('could not translate host name "db.internal" to address: Name or service not known', "unknown host"),
        ('FATAL:  database "tinybot" does not exist', "has no such database"),
        ("connection to server at 10.0.0.1 port 5432 failed: timeout expired", "connect timeout"),
    ],
)
def test_each_cause_has_its_own_advice_and_the_password_is_masked(driver_message, advice):
    url = "postgresql://me:hunter2@db.internal:5432/tinybot"
    message = connection_failure(url, "new database", psycopg.OperationalError(f"{driver_message} hunter2"))
    assert advice in message and "hunter2" not in message and message.count(advice) == 1
    assert message.startswith(
        "cannot connect to the new database at postgresql://me:***@db.internal:5432/tinybot"
    )
