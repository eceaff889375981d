"""An admin API on a real database and emulator, with one token per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.adapters.tokens import Role, create_token, revoke_token
from service.config import Settings
from service.entrypoints.api.app import create_app
from service.entrypoints.api.ratelimit import RateLimiter
from service.entrypoints.api.server import build_deps
from service.entrypoints.runtime import Runtime
from tests.conftest import Running


@dataclass
class Api:
    """A running API: the client, the runtime behind it, and tokens."""

    client: TestClient  # type: ignore[type-arg]
    runtime: Runtime
    tokens: dict[str, str]

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
async def api_factory(db_dsn: str, emulator: Running) -> AsyncIterator[object]:
    made: list[tuple[TestClient, Runtime]] = []  # type: ignore[type-arg]

    async def make(**limits: float) -> Api:
        settings = Settings(batch_creation_interval_seconds=0, batch_polling_interval_seconds=0)
        client = openai.AsyncOpenAI(base_url=f"{emulator.url}/v1", api_key="sk-test", max_retries=0)
        runtime = await Runtime.open(settings, db_dsn, client)
        if "requeue_attempts" in limits:  # conflicts retried by the unit of work
            runtime.app.ledger.attempts = int(limits["requeue_attempts"])
        deps = await build_deps(runtime.store, runtime.app, runtime.metrics, settings)
        deps = replace(
            deps,
            token_limiter=RateLimiter(int(limits.get("per_token", 100_000))),
            auth_failure_limiter=RateLimiter(int(limits.get("auth_failures", 100_000))),
            heartbeat_seconds=limits.get("heartbeat", deps.heartbeat_seconds),
        )
        test_client = TestClient(TestServer(create_app(deps)))
        await test_client.start_server()
        tokens = {
            role.name: await create_token(runtime.store.pool, f"{role.name}-token", role)
            for role in Role
        }
        tokens["revoked"] = await create_token(runtime.store.pool, "old-token", Role.superadmin)
        await revoke_token(runtime.store.pool, "old-token")
        made.append((test_client, runtime))
        return Api(test_client, runtime, tokens)

    yield make
    for test_client, runtime in made:
        await test_client.close()
        await runtime.close()


@pytest.fixture
async def api(api_factory) -> Api:  # type: ignore[no-untyped-def]
    result: Api = await api_factory()
    return result
