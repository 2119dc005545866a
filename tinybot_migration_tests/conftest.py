"""Shared fixtures: one real embedded PostgreSQL server per test session, a fresh database per use."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg
import pytest

from tinybot_migration.lib.embedded_postgres import embedded_database_url, embedded_server
from tinybot_migration.lib.new_database_schema import apply_new_schema
from tinybot_migration_tests.helpers.servers import stop_servers_under

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def tinybot_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tinybot")


@pytest.fixture(scope="session")
def pg_server(tinybot_home):
    server = embedded_server(tinybot_home)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        # The suite writes a few GB; recycling WAL early keeps the server's share of the disk small.
        conn.execute("ALTER SYSTEM SET max_wal_size = '256MB'")
        conn.execute("SELECT pg_reload_conf()")
    yield server
    stop_servers_under(tinybot_home)


@pytest.fixture(autouse=True)
def _stop_the_tests_own_servers(tmp_path):
    """After each test, stop the embedded servers it started under its tmp dir (see helpers/servers);
    with `tmp_path_retention_policy = "failed"` pytest then deletes the dir of a passing test."""
    yield
    stop_servers_under(tmp_path)


@pytest.fixture
def make_database(pg_server, tinybot_home):
    """Create a new empty database on the session's server and return its psycopg URL; the
    databases are dropped after the test."""
    made: list[str] = []

    def make(prefix: str = "db") -> str:
        made.append(f"{prefix}_{next(_counter)}")
        return embedded_database_url(made[-1], tinybot_home)

    yield make
    with psycopg.connect(pg_server.get_uri("postgres"), autocommit=True) as conn:
        for name in made:
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


@pytest.fixture
def admin_connect():
    """Open a read-write connection to any test database (the pipeline's old-DB resource cannot)."""
    opened: list[psycopg.Connection] = []

    def connect(url: str) -> psycopg.Connection:
        conn = psycopg.connect(url, autocommit=True)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def new_db(make_database):
    """An autocommit connection to a fresh database with the new schema applied."""
    conn = psycopg.connect(make_database("new"), autocommit=True)
    apply_new_schema(conn)
    yield conn
    conn.close()
