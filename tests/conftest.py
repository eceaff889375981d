"""Shared fixtures: a real PostgreSQL, a migrated template, a fresh database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from eventstore import EventStore
from service.database import migrate
from service.dsn import with_database
from tests.pgharness import Server, find_or_start

_counter = itertools.count()
_sources: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which PostgreSQL the run used (local server, binaries, container, embedded)."""
    for source in _sources:
        terminalreporter.write_line(f"PostgreSQL for tests: {source}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The PostgreSQL server every integration test of this run uses."""
    server = find_or_start()
    _sources.append(server.source)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def template_db(pg_server: Server) -> AsyncIterator[str]:
    """A migrated database that each test's database is cloned from (fast: no DDL per test)."""
    name = f"bl_tmpl_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
        await migrate(with_database(pg_server.dsn, name))
        yield name
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db_dsn(pg_server: Server, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"bl_test_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
        yield with_database(pg_server.dsn, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[EventStore]:
    """An event store on the test's database."""
    es = await EventStore.open(db_dsn, max_size=10)
    yield es
    await es.close()
