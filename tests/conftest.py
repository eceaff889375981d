"""Shared fixtures: a real PostgreSQL, a migrated template, a fresh database per test.

A test's database is cloned from the migrated template, or is one an earlier test used
and that was emptied after it: CREATE and DROP DATABASE cost about 0.6 s together on a
disk that syncs slowly, TRUNCATE about a fifth of that. A database whose schema or
migration records a test changed is dropped instead of reused, so every test starts
from the template's schema with no rows.
"""

from __future__ import annotations

import asyncio
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
_clean: list[str] = []  # databases emptied after their test, in the template's schema

_SCHEMA = """
SELECT c.relkind::text, c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'f', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'm', name || ' ' || checksum FROM schema_migrations
ORDER BY 1, 2
"""
_KEPT = ("schema_migrations",)  # the template's rows a test database keeps


async def _schema(dsn: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [(r[0], r[1]) for r in await conn.fetch(_SCHEMA)]
    finally:
        await conn.close()


async def _empty_for_reuse(admin: asyncpg.Connection, dsn: str, name: str, schema: object) -> bool:
    """Close what the test left connected, and empty every table if the schema is the
    template's; False when the database cannot be reused."""
    others = "SELECT {} FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    await admin.execute(others.format("pg_terminate_backend(pid)"), name)
    # Terminating only signals: wait until they are gone, so that the next test sees no
    # session of this one (tests count their LISTEN connections, for one).
    for _ in range(200):
        if not await admin.fetchval(others.format("count(*)"), name):
            break
        await asyncio.sleep(0.01)
    else:
        return False
    conn = await asyncpg.connect(dsn)
    try:
        if [(r[0], r[1]) for r in await conn.fetch(_SCHEMA)] != schema:
            return False
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT quote_ident(tablename) FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> ALL($1::text[])",
                list(_KEPT),
            )
        ]
        await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        return True
    finally:
        await conn.close()


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
        _template_schema.append(await _schema(with_database(pg_server.dsn, name)))
        yield name
        for clean in _clean:
            await admin.execute(f"DROP DATABASE IF EXISTS {clean} WITH (FORCE)")
        _clean.clear()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


_template_schema: list[list[tuple[str, str]]] = []


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
    """A migrated database with no rows for one test; emptied for the next one afterwards."""
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        if _clean:
            name = _clean.pop()
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        else:
            name = f"bl_test_{os.getpid()}_{next(_counter)}"
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
        dsn = with_database(pg_server.dsn, name)
        yield dsn
        try:
            reusable = await _empty_for_reuse(admin, dsn, name, _template_schema[0])
        except (OSError, asyncpg.PostgresError):
            reusable = False  # dropped below rather than reused half-emptied
        if reusable:
            # Closed while it waits, so that a task a test leaked cannot reconnect and
            # write into the next test's database.
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            _clean.append(name)
        else:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


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
