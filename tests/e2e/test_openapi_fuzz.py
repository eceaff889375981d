"""schemathesis against a live `batchledger serve`: no 5xx, no response that breaks the document."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.adapters.dsn import with_database
from service.adapters.tokens import Role, create_token
from service.entrypoints.api.openapi import document
from service.net import free_port
from tests.e2e.live import start, start_emulator, stop, wait_http
from tests.pgharness import Server

schema = schemathesis.openapi.from_dict(document()).exclude(path="/api/admin/legacy/events/stream")
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Live:
    url: str
    headers: dict[str, str]


async def _prepare(dsn: str, admin_dsn: str, name: str, template: str) -> str:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        return await create_token(conn, "fuzzer", Role.superadmin)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def live_api(pg_server: Server, template_db: str) -> Iterator[Live]:
    name = f"bl_fuzz_api_{os.getpid()}"  # two runs on one server do not share it
    dsn = with_database(pg_server.dsn, name)
    token = asyncio.run(_prepare(dsn, pg_server.dsn, name, template_db))
    emulator, emulator_url = start_emulator()
    port = free_port()
    serve = start(
        ["serve"],
        {
            "DATABASE_URL": dsn,
            "OPENAI_BASE_URL": f"{emulator_url}/v1",
            "OPENAI_API_KEY": "sk-test",
            "PORT": str(port),
            "BATCH_CREATION_INTERVAL_SECONDS": "0",
            "BATCH_POLLING_INTERVAL_SECONDS": "0",
            "LOG_LEVEL": "ERROR",
            "API_RATE_LIMIT_PER_MINUTE": "1000000",
        },
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield Live(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"})
    finally:
        stop(serve)
        stop(emulator)
        asyncio.run(_drop(pg_server.dsn, name))


async def _drop(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_live_api_never_answers_5xx_nor_breaks_its_document(case, live_api: Live) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=live_api.url, headers=live_api.headers, checks=CHECKS)
