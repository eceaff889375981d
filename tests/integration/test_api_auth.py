"""Every admin route refuses missing, invalid and revoked tokens, and roles that are too low."""

from __future__ import annotations

import asyncio

import pytest

from service.adapters.tokens import Role
from service.entrypoints.api.routes import ROUTES
from tests.integration.api_fixtures import Api

PROTECTED = [r for r in ROUTES if r.role is not None]


def concrete(path: str) -> str:
    return path.replace("{id}", "some-id")


@pytest.mark.parametrize("route", PROTECTED, ids=[f"{r.method} {r.path}" for r in PROTECTED])
async def test_protected_route_answers_401_without_a_token_or_with_a_bad_or_revoked_one(
    api: Api, route
) -> None:  # type: ignore[no-untyped-def]
    for headers in (
        {},
        {"Authorization": "Bearer bl_nope_nope"},
        {"Authorization": "Basic abc"},
        api.auth("revoked"),
    ):
        r = await api.client.request(route.method, concrete(route.path), headers=headers)
        assert r.status == 401, (route.path, headers, await r.text())
        body = await r.json()
        assert body["ok"] is False
        assert body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("route", PROTECTED, ids=[f"{r.method} {r.path}" for r in PROTECTED])
async def test_protected_route_answers_403_to_a_role_that_is_too_low(api: Api, route) -> None:  # type: ignore[no-untyped-def]
    lower = [role for role in Role if role < route.role]
    for role in lower:
        r = await api.client.request(
            route.method, concrete(route.path), headers=api.auth(role.name)
        )
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "forbidden"
    if not lower:
        r = await api.client.request(
            route.method, concrete(route.path), headers=api.auth("support")
        )
        assert r.status not in (401, 403)


def test_every_admin_route_is_protected_and_only_health_is_public() -> None:
    public = {r.path for r in ROUTES if r.role is None}
    assert public == {"/healthz", "/readyz"}
    assert all(r.role is not None for r in ROUTES if r.path.startswith("/api/admin/legacy"))


async def test_revocation_takes_effect_at_once(api: Api) -> None:
    from service.adapters.tokens import create_token, revoke_token

    token = await create_token(api.runtime.store.pool, "short-lived", Role.support)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/api/admin/legacy/summary", headers=headers)).status == 200
    await revoke_token(api.runtime.store.pool, "short-lived")
    assert (await api.client.get("/api/admin/legacy/summary", headers=headers)).status == 401


async def test_tokens_are_stored_only_as_hashes(api: Api) -> None:
    rows = await api.runtime.store.pool.fetch("SELECT * FROM api_tokens")
    stored = " ".join(str(v) for r in rows for v in r.values())
    for token in api.tokens.values():
        assert token.split("_", 2)[2] not in stored


async def test_repeated_bad_tokens_from_one_address_are_rate_limited(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(auth_failures=3)
    statuses = [
        (
            await api.client.get(
                "/api/admin/legacy/summary", headers={"Authorization": "Bearer bl_x_y"}
            )
        ).status
        for _ in range(5)
    ]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429
    r = await api.client.get("/api/admin/legacy/summary", headers={"Authorization": "Basic a"})
    assert r.status == 429
    assert int(r.headers["Retry-After"]) >= 1
    r = await api.client.get("/api/admin/legacy/summary", headers=api.auth("support"))
    assert r.status == 200, "a valid token is never refused by the failed-auth limit"


async def test_heavy_use_of_one_token_is_rate_limited_with_retry_after(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(per_token=5)
    statuses = [
        (await api.client.get("/api/admin/legacy/summary", headers=api.auth("support"))).status
        for _ in range(7)
    ]
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 429
    r = await api.client.get("/api/admin/legacy/summary", headers=api.auth("admin"))
    assert r.status == 200, "another token has its own budget"


class _Transport:
    """Just enough of a transport for aiohttp to read the peer address from."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def test_only_the_direct_peer_counts_unless_a_proxy_is_trusted() -> None:
    from aiohttp.test_utils import make_mocked_request

    from service.entrypoints.api.ratelimit import client_address, parse_networks

    headers = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.0.0.2"}
    via_proxy = make_mocked_request("GET", "/", headers=headers, transport=_Transport("10.0.0.1"))
    assert client_address(via_proxy, []) == "10.0.0.1", "X-Forwarded-For is ignored by default"
    assert client_address(via_proxy, parse_networks("10.0.0.0/8")) == "203.0.113.9"
    direct = make_mocked_request("GET", "/", headers=headers, transport=_Transport("192.0.2.5"))
    assert client_address(direct, parse_networks("10.0.0.0/8")) == "192.0.2.5", (
        "an untrusted peer's header is ignored"
    )


async def test_healthz_is_public_and_readyz_checks_database_and_migrations(api: Api) -> None:
    assert (await api.client.get("/healthz")).status == 200
    r = await api.client.get("/readyz")
    assert r.status == 200
    assert (await r.json())["checks"] == {"database": "ok", "migrations": "ok"}
    await api.runtime.store.pool.execute(
        "DELETE FROM schema_migrations WHERE name LIKE 'service/%'"
    )
    await asyncio.sleep(1.1)  # /readyz keeps its answer for a second (readiness.CACHE_SECONDS)
    r = await api.client.get("/readyz")
    assert r.status == 503
    assert "migrations" in (await r.json())["checks"]
    await asyncio.sleep(0)
