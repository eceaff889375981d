"""Failed-auth throttling never refuses a valid token; 401s, 403s and lockouts are logged
(capped, never a secret); 403s count against the token's own rate limit."""

from __future__ import annotations

import io
import json
import secrets

import pytest

from service.entrypoints.api.deps import DEPS, Deps
from service.entrypoints.api.ratelimit import parse_networks
from service.logs import configure
from tests.integration.api_fixtures import Api

SUMMARY = "/api/admin/legacy/summary"
REQUEUE = "/api/admin/legacy/requests/requeue"


def random_token() -> str:
    """Well-formed (`bl_<16 hex>_<secret>`) and unknown."""
    return f"bl_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def deps_of(api: Api) -> Deps:
    return api.client.server.app[DEPS]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


# Finding 3: anyone could lock every admin out of an address.


async def test_a_locked_out_address_still_serves_valid_tokens_and_refuses_bad_ones(
    api_factory,  # type: ignore[no-untyped-def]
) -> None:
    api: Api = await api_factory(auth_failures=5)
    bad = [{"Authorization": "Bearer bl_x_y"}, bearer(random_token()), {}]
    statuses = [
        (await api.client.get(SUMMARY, headers=bad[i % len(bad)])).status for i in range(30)
    ]
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}, "the address is locked out"

    valid = [(await api.client.get(SUMMARY, headers=api.auth("support"))).status for _ in range(30)]
    assert valid == [200] * 30, "a valid token is never refused by the failed-auth limit"

    for headers in (*bad, bearer(random_token()), api.auth("revoked")):
        r = await api.client.get(SUMMARY, headers=headers)
        assert r.status == 429, headers
        assert (await r.json())["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1


async def test_guessing_one_token_id_from_many_addresses_is_slowed_but_its_holder_is_not(
    api_factory,  # type: ignore[no-untyped-def]
) -> None:
    api: Api = await api_factory(auth_failures=5)
    deps_of(api).trusted_proxies = parse_networks("127.0.0.1")  # one address per guess
    token_id = api.tokens["admin"].split("_")[1]
    statuses = []
    for i in range(30):
        guess = f"bl_{token_id}_{secrets.token_urlsafe(32)}"
        r = await api.client.get(
            SUMMARY, headers={**bearer(guess), "X-Forwarded-For": f"198.51.100.{i}"}
        )
        statuses.append(r.status)
        if r.status == 429:
            assert int(r.headers["Retry-After"]) >= 1
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}, "the token id is locked, whatever the address"

    r = await api.client.get(
        SUMMARY, headers={**api.auth("admin"), "X-Forwarded-For": "198.51.100.200"}
    )
    assert r.status == 200, "the holder of the locked token id is still served"
    r = await api.client.get(
        SUMMARY, headers={**bearer(random_token()), "X-Forwarded-For": "198.51.100.201"}
    )
    assert r.status == 401, "another token id from a fresh address is not locked"


async def test_a_locked_out_flood_of_repeated_or_malformed_credentials_costs_no_query(
    api_factory,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import service.entrypoints.api.app as app_module

    checked: list[str] = []
    real_verify = app_module.verify

    async def counting_verify(conn, token):  # type: ignore[no-untyped-def]
        checked.append(token)
        return await real_verify(conn, token)

    monkeypatch.setattr(app_module, "verify", counting_verify)
    api: Api = await api_factory(auth_failures=3)
    stale = random_token()  # e.g. a revoked token a misconfigured client keeps sending
    assert [(await api.client.get(SUMMARY, headers=bearer(stale))).status for _ in range(3)] == [
        401
    ] * 3
    assert len(checked) == 1, "a credential that failed is remembered: it can never be valid"
    for headers in (
        bearer(stale),
        {"Authorization": "Bearer bl_x_y"},
        {"Authorization": "Basic a"},
    ):
        for _ in range(10):
            assert (await api.client.get(SUMMARY, headers=headers)).status == 429
    assert len(checked) == 1, "a credential that failed before, or a malformed one, is not checked"
    assert (await api.client.get(SUMMARY, headers=bearer(random_token()))).status == 429
    assert len(checked) == 2, "a new well-formed token is checked: it might be valid"
    assert (await api.client.get(SUMMARY, headers=api.auth("support"))).status == 200


# Finding 8: 403s did not count against the token's rate limit.


async def test_forbidden_requests_count_against_the_tokens_rate_limit(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(per_token=5)
    statuses, retry = [], []
    for _ in range(8):
        r = await api.client.post(REQUEUE, json={"requestIds": ["x"]}, headers=api.auth("support"))
        statuses.append(r.status)
        retry.append(r.headers.get("Retry-After"))
    assert statuses == [403] * 5 + [429] * 3
    assert None not in retry[5:]
    assert all(int(str(s)) >= 1 for s in retry[5:])
    r = await api.client.post(REQUEUE, json={"requestIds": ["x"]}, headers=api.auth("admin"))
    assert r.status == 200, "another token has its own budget"


# Finding 7: no log line for 401s, 403s and lockouts.


async def test_401s_403s_and_lockouts_are_logged_with_address_token_id_and_route_never_a_secret(
    api_factory,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api: Api = await api_factory(auth_failures=2)
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    configure("INFO", "json")
    guess = random_token()
    token_id = guess.split("_")[1]
    support = api.tokens["support"]
    assert (await api.client.post(REQUEUE, json={}, headers=bearer(support))).status == 403
    assert (await api.client.get(SUMMARY)).status == 401
    assert (await api.client.get(SUMMARY, headers=bearer(guess))).status == 401
    assert (await api.client.get(SUMMARY, headers=bearer(guess))).status == 429

    lines = log_lines(stderr)
    by_event: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_event.setdefault(str(line["event"]), []).append(line)
    failed = by_event.get("api.auth_failed", [])
    assert len(failed) == 2, lines
    assert all(f["address"] == "127.0.0.1" for f in failed)
    assert all((f["route"], f["method"]) == (SUMMARY, "GET") for f in failed)
    assert failed[0]["token_id"] is None
    assert failed[1]["token_id"] == token_id
    (locked,) = by_event.get("api.locked_out", [])
    assert (locked["address"], locked["token_id"], locked["route"]) == (
        "127.0.0.1",
        token_id,
        SUMMARY,
    )
    assert int(str(locked["retry_after"])) >= 1
    (forbidden,) = by_event.get("api.forbidden", [])
    assert forbidden["token_id"] == support.split("_")[1]
    assert (forbidden["route"], forbidden["method"]) == (REQUEUE, "POST")
    assert forbidden["token_name"] == "support-token"
    text = stderr.getvalue()
    for secret in (guess, guess.split("_", 2)[2], support, support.split("_", 2)[2]):
        assert secret not in text
    assert "Bearer" not in text


async def test_auth_logs_are_capped_per_address_and_the_rest_is_counted_in_a_summary(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.entrypoints.api.ratelimit import AuthLog

    clock = Clock()
    deps_of(api).auth_log = AuthLog(per_key_per_minute=3, clock=clock)
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    configure("INFO", "json")
    tokens = [random_token() for _ in range(8)]
    for token in tokens:
        assert (await api.client.get(SUMMARY, headers=bearer(token))).status == 401
    events = [line["event"] for line in log_lines(stderr)]
    assert events == ["api.auth_failed"] * 3, "one line per failure up to the cap"

    clock.now += 61
    assert (await api.client.get(SUMMARY, headers=bearer(tokens[0]))).status == 401
    lines = log_lines(stderr)[3:]
    assert [line["event"] for line in lines] == ["api.auth_failures_suppressed", "api.auth_failed"]
    summary = lines[0]
    assert summary["count"] == 5
    assert summary["by_event"] == {"api.auth_failed": 5}
    assert summary["top_addresses"] == {"127.0.0.1": 5}
    text = stderr.getvalue()
    assert not any(t.split("_", 2)[2] in text for t in tokens)
