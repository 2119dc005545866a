"""Shared fixtures: one real embedded PostgreSQL server per test session, a fresh database per use."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg
import pytest

from tinybot_migration.runtime.embedded_postgres import embedded_database_url, embedded_server
from tinybot_migration.schema import apply_new_schema

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def tinybot_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tinybot")


@pytest.fixture(scope="session")
def pg_server(tinybot_home):
    return embedded_server(tinybot_home)


@pytest.fixture
def make_database(pg_server, tinybot_home):
    """Create a new empty database on the session's server and return its psycopg URL."""

    def make(prefix: str = "db") -> str:
        return embedded_database_url(f"{prefix}_{next(_counter)}", tinybot_home)

    return make


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
