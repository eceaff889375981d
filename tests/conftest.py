"""Shared fixtures: a real PostgreSQL, a migrated template, a fresh database per test."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import openai
import pytest
from aiohttp import web

from eventstore import EventStore
from service.adapters.database import migrate
from service.adapters.dsn import with_database
from service.tools.emulator.app import EMULATOR, create_emulator_app
from service.tools.emulator.state import Emulator
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


@contextlib.asynccontextmanager
async def _scratch_database(
    server: Server, prefix: str, template: str | None = None
) -> AsyncIterator[str]:
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server.dsn)
    try:
        await admin.execute(
            f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else "")
        )
        yield with_database(server.dsn, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db_dsn(pg_server: Server, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    async with _scratch_database(pg_server, "bl_test", template_db) as dsn:
        yield dsn


@pytest.fixture
async def empty_db_dsn(pg_server: Server) -> AsyncIterator[str]:
    """A fresh database nothing has migrated, as a first run meets it; dropped afterwards."""
    async with _scratch_database(pg_server, "bl_empty") as dsn:
        yield dsn


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[EventStore]:
    """An event store on the test's database."""
    es = await EventStore.open(db_dsn, max_size=10)
    yield es
    await es.close()


@dataclass
class Running:
    """A started emulator: its base URL and its state (for assertions only)."""

    url: str
    state: Emulator

    async def knobs(self, **values: object) -> None:
        """Set knobs through the control endpoint, as a test operator would."""
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{self.url}/_emulator/knobs", json=values) as r,
        ):
            assert r.status == 200, await r.text()


@pytest.fixture
async def emulator() -> AsyncIterator[Running]:
    app = create_emulator_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Running(f"http://127.0.0.1:{port}", app[EMULATOR])
    await runner.cleanup()


@pytest.fixture
async def client(emulator: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1",
        api_key="sk-test",
        max_retries=0,
        _strict_response_validation=True,
    )
    yield c
    await c.close()


pytest_plugins = ["tests.integration.api_fixtures"]
