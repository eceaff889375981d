"""Company-scoped tokens: a token sees and touches only its companies, on every route and feed.

Also: revocation and expiry end open event streams, token names cannot pass for the
service's own actors, and tokens record their expiry and last use.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from service.adapters.tokens import Role, TokenError, create_token, revoke_token
from service.entrypoints.cli import main
from service.tools.synthetic import ledger, queue_many, run_batch
from tests.integration.api_fixtures import Api
from tests.integration.test_api_sse import read_events

BASE = "/api/admin/legacy"


async def token(api: Api, name: str, role: Role = Role.admin, **kw: object) -> dict[str, str]:
    made = await create_token(api.runtime.store.pool, name, role, **kw)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {made}"}


async def two_companies(api: Api) -> None:
    """acme: batch b-acme (a0 failed, a1 complete); globex: batch b-globex (g0 failed, g1)."""
    led = ledger(api.runtime.store)
    for company, prefix in (("acme", "a"), ("globex", "g")):
        ids = await queue_many(led, 2, company=company, prefix=prefix)
        await run_batch(led, f"b-{company}", ids, fail_every=2, retryable=False)
        await queue_many(led, 1, company=company, prefix=f"{prefix}w")  # one still waiting
    await api.runtime.catch_up()


async def test_a_scoped_token_reads_only_its_companys_requests_batches_and_counts(
    api: Api,
) -> None:
    await two_companies(api)
    acme = await token(api, "integrator-acme-2", Role.support, companies=["acme"])
    get = api.client.get
    summary = await (await get(f"{BASE}/summary", headers=acme)).json()
    assert summary["summary"] == {
        "pending_batching": 1,
        "batching_in_progress": 0,
        "processing_complete": 1,
        "processing_failed": 1,
    }
    listed = await (
        await get(f"{BASE}/requests", params={"status": "processing_failed"}, headers=acme)
    ).json()
    assert [r["id"] for r in listed["requests"]] == ["a0"]
    batches = await (await get(f"{BASE}/batches", headers=acme)).json()
    assert [b["id"] for b in batches["batches"]] == ["b-acme"]
    assert (await get(f"{BASE}/requests/a0", headers=acme)).status == 200
    assert (await get(f"{BASE}/requests/a0/history", headers=acme)).status == 200
    for path in (
        "/requests/g0",
        "/requests/g0/history",
        "/batches/b-globex",
        "/batches/b-globex/history",
    ):
        r = await get(f"{BASE}{path}", headers=acme)
        assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found"), path
    for path, params in (
        ("/summary", {"companyId": "globex"}),
        ("/requests", {"status": "processing_failed", "companyId": "globex"}),
    ):
        assert (await get(f"{BASE}{path}", params=params, headers=acme)).status == 404


async def test_an_unscoped_token_still_sees_every_company(api: Api) -> None:
    await two_companies(api)
    r = await api.client.get(
        f"{BASE}/requests", params={"status": "processing_failed"}, headers=api.auth("support")
    )
    assert sorted(x["id"] for x in (await r.json())["requests"]) == ["a0", "g0"]


async def test_the_event_feed_and_stream_carry_only_the_tokens_companies(api: Api) -> None:
    await two_companies(api)
    acme = await token(api, "feed-acme", Role.support, companies=["acme"])
    page = await (
        await api.client.get(f"{BASE}/events", params={"limit": 1000}, headers=acme)
    ).json()
    streams = {e["streamId"] for e in page["events"]}
    assert streams == {"request-a0", "request-a1", "request-aw0", "batch-b-acme"}
    assert page["nextAfter"] == page["events"][-1]["position"]
    async with api.client.get(f"{BASE}/events/stream", headers=acme) as r:
        got = await read_events(r, len(page["events"]))
        assert {data["streamId"] for _, _, data in got} == streams
        await queue_many(ledger(api.runtime.store), 1, company="globex", prefix="late-g")
        await queue_many(ledger(api.runtime.store), 1, company="acme", prefix="late-a")
        ((_, kind, data),) = await read_events(r, 1)
        assert (kind, data["streamId"]) == ("RequestQueued", "request-late-a0")


async def test_a_scoped_token_writes_only_for_its_companies(api: Api) -> None:
    await two_companies(api)
    acme = await token(api, "ops-acme", Role.admin, companies=["acme"])
    post = api.client.post
    r = await post(f"{BASE}/requests/requeue", json={"requestIds": ["a0", "g0"]}, headers=acme)
    assert await r.json() == {
        "ok": True,
        "requeuedCount": 1,
        "notFoundCount": 1,
        "skippedCount": 0,
    }
    history = await api.runtime.store.read_stream("request-g0")
    assert history[-1].type == "RequestFailed", "globex's request was not touched"
    body = {"companyId": "globex", "sessionId": "s-9", "transcript": "[01.10.2026 09:00:00] U: hi"}
    r = await post(f"{BASE}/requests", json=body, headers=acme)
    assert (r.status, (await r.json())["error"]["code"]) == (403, "forbidden")
    assert await api.runtime.store.head() == (await api.runtime.store.head())
    r = await post(f"{BASE}/batches/b-globex/cancel", headers=acme)
    assert r.status == 404
    ok = await post(f"{BASE}/requests", json={**body, "companyId": "acme"}, headers=acme)
    assert ok.status == 201


async def _open_then_wait_for_the_end(api: Api, headers: dict[str, str], end: object) -> float:
    """Seconds from `end()` until the server closes the open stream."""
    async with api.client.get(f"{BASE}/events/stream", headers=headers) as r:
        assert r.status == 200
        await r.content.readline()  # ": connected"
        started = time.monotonic()
        await end()  # type: ignore[operator]
        tail = b""
        async with asyncio.timeout(8):
            while chunk := await r.content.read(1024):
                tail += chunk
        assert b": token revoked or expired" in tail
        return time.monotonic() - started


async def test_revoking_a_token_ends_its_open_event_stream_within_five_seconds(
    api: Api,
) -> None:
    headers = await token(api, "streamer", Role.support)

    async def revoke() -> None:
        assert await revoke_token(api.runtime.store.pool, "streamer")

    assert await _open_then_wait_for_the_end(api, headers, revoke) < 5
    r = await api.client.get(f"{BASE}/events/stream", headers=headers)
    assert r.status == 401


async def test_an_expiring_token_works_until_it_expires_and_its_stream_ends_then(
    api: Api,
) -> None:
    headers = await token(api, "short", Role.support, expires_in=timedelta(seconds=2))
    assert (await api.client.get(f"{BASE}/summary", headers=headers)).status == 200
    assert await _open_then_wait_for_the_end(api, headers, lambda: asyncio.sleep(0)) < 7
    assert (await api.client.get(f"{BASE}/summary", headers=headers)).status == 401


@pytest.mark.parametrize(
    "name", ["batch-poller", "Batch-Creator", "IMPORT", "cli", "scheduler", "system", "-rm"]
)
async def test_token_names_cannot_pass_for_the_services_own_actors(api: Api, name: str) -> None:
    with pytest.raises(TokenError):
        await create_token(api.runtime.store.pool, name, Role.admin)


async def test_token_names_are_unique_whatever_their_case(api: Api) -> None:
    await create_token(api.runtime.store.pool, "Alice", Role.support)
    with pytest.raises(TokenError, match="in any case"):
        await create_token(api.runtime.store.pool, "alice", Role.support)


async def test_a_tokens_writes_are_recorded_under_an_actor_marked_as_a_token(api: Api) -> None:
    await two_companies(api)
    await api.client.post(
        f"{BASE}/requests/requeue", json={"requestIds": ["a0"]}, headers=api.auth("admin")
    )
    history = await api.runtime.store.read_stream("request-a0")
    assert history[-1].metadata.actor == "token:admin-token"
    assert {e.metadata.actor for e in history[:-1]} == {"scheduler"}


async def test_last_use_is_recorded_at_most_once_a_minute(api: Api) -> None:
    headers = await token(api, "counted", Role.support)
    pool = api.runtime.store.pool
    last_used = "SELECT last_used_at FROM api_tokens WHERE name = 'counted'"
    assert await pool.fetchval(last_used) is None
    await api.client.get(f"{BASE}/summary", headers=headers)
    first = await pool.fetchval(last_used)
    assert first is not None
    await api.client.get(f"{BASE}/summary", headers=headers)
    assert await pool.fetchval(last_used) == first
    await pool.execute(
        "UPDATE api_tokens SET last_used_at = last_used_at - interval '2 minutes'"
        " WHERE name = 'counted'"
    )
    await api.client.get(f"{BASE}/summary", headers=headers)
    assert await pool.fetchval(last_used) > first - timedelta(minutes=2)


async def test_a_scoped_superadmin_grants_only_within_its_companies(api: Api) -> None:
    boss = await token(api, "boss-acme", Role.superadmin, companies=["acme", "initech"])
    tokens = f"{BASE}/tokens"
    post = api.client.post
    everything = await post(tokens, json={"name": "all", "role": "support"}, headers=boss)
    assert (everything.status, (await everything.json())["error"]["code"]) == (403, "forbidden")
    outside = {"name": "g", "role": "support", "companies": ["globex"]}
    assert (await post(tokens, json=outside, headers=boss)).status == 403
    inside = {"name": "a", "role": "support", "companies": ["acme"], "expiresIn": "90d"}
    made = await post(tokens, json=inside, headers=boss)
    assert made.status == 201
    body = await made.json()
    assert (body["companies"], body["expiresAt"] is not None) == (["acme"], True)
    listed = await (await api.client.get(tokens, headers=boss)).json()
    assert {t["name"] for t in listed["tokens"]} == {"boss-acme", "a"}
    assert (await post(f"{tokens}/admin-token/revoke", headers=boss)).status == 404
    unscoped = await (await api.client.get(tokens, headers=api.auth("superadmin"))).json()
    entry = {t["name"]: t for t in unscoped["tokens"]}["a"]
    assert (entry["companies"], entry["lastUsedAt"]) == (["acme"], None)


def test_tokens_command_scopes_a_token_to_companies_with_an_expiry(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create = ["tokens", "create", "--name", "acme-ops", "--role", "admin", "--company", "acme"]
    assert (
        main([*create, "--company", "initech", "--expires-in", "90d", "--database-url", db_dsn])
        == 0
    )
    assert "acme, initech" in capsys.readouterr().err
    assert main(["tokens", "list", "--database-url", db_dsn]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.split()[:3] == ["acme-ops", "admin", "acme,initech"]
    assert "expires" in line
    assert "never used" in line
    bad = ["tokens", "create", "--name", "x1", "--role", "admin", "--expires-in", "soon"]
    with pytest.raises(SystemExit) as refused:  # argparse refuses it before any database work
        main([*bad, "--database-url", db_dsn])
    assert refused.value.code == 2
    assert "not a duration" in capsys.readouterr().err


async def test_metrics_count_only_the_scoped_tokens_companies(api: Api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await two_companies(api)
    acme = await token(api, "metrics-acme", Role.support, companies=["acme"])

    async def gauges(headers: dict[str, str]) -> dict[tuple[str, str], float]:
        text = await (await api.client.get("/metrics", headers=headers)).text()
        return {
            (family.name, sample.labels["status"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name in ("batchledger_requests", "batchledger_batches")
            for sample in family.samples
        }

    everyone, scoped = await gauges(api.auth("support")), await gauges(acme)
    text = await (await api.client.get("/metrics", headers=acme)).text()
    assert "batchledger_events_appended" not in text, "the whole log's size is not shown"
    assert "batchledger_projection_lag_events" not in text
    assert everyone[("batchledger_requests", "processing_failed")] == 2
    assert scoped[("batchledger_requests", "processing_failed")] == 1
    assert (
        everyone[("batchledger_batches", "processed")],
        scoped[("batchledger_batches", "processed")],
    ) == (2, 1)


async def test_a_scoped_token_cannot_probe_how_far_the_whole_log_goes(api: Api) -> None:
    await two_companies(api)
    acme = await token(api, "probe-acme", Role.support, companies=["acme"])
    acme_events = await api.runtime.store.read_all(0, 1000, scopes=["acme"])
    own_head, head = acme_events[-1].position, await api.runtime.store.head()
    assert own_head < head
    between = {"after": str(own_head + 1)}
    r = await api.client.get(f"{BASE}/events", params=between, headers=acme)
    assert r.status == 400, "past the newest event of its companies: as if past the head"
    r = await api.client.get(f"{BASE}/events", params=between, headers=api.auth("support"))
    assert r.status == 200


async def test_a_revoked_tokens_stream_stops_mid_page_even_for_a_slow_reader(api: Api) -> None:
    big, n = "x" * 20_000, 1000
    await queue_many(ledger(api.runtime.store), n, prefix="big", transcript=big)
    headers = await token(api, "slow-reader", Role.support)
    async with api.client.get(
        f"{BASE}/events/stream", params={"limit": "1000"}, headers=headers
    ) as r:
        await r.content.readline()
        assert await revoke_token(api.runtime.store.pool, "slow-reader")
        received = bytearray()
        async with asyncio.timeout(60):
            while chunk := await r.content.read(16_384):
                received += chunk
                await asyncio.sleep(0.008)  # about 2 MB/s: the whole 20 MB page takes 10 s
    # The server stopped before the end of the page: not every one of its frames arrived
    # (what did arrive after the stop had sat in socket and transport buffers).
    frames = received.count(b"\nid: ") + received.startswith(b"id: ")
    assert frames < n, frames


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/requests",
            {"companyId": "acme\n", "sessionId": "s1", "transcript": "[01.10.2026 09:00:00] U: hi"},
        ),
        ("/tokens", {"name": "n1", "role": "support", "companies": ["acme\n"]}),
        ("/tokens", {"name": "n2\n", "role": "support"}),
        ("/tokens", {"name": "n3", "role": "support", "expiresIn": "90d\n"}),
    ],
)
async def test_an_id_with_a_trailing_newline_is_refused_as_bad_input(
    api: Api, path: str, body: dict[str, object]
) -> None:
    r = await api.client.post(f"{BASE}{path}", json=body, headers=api.auth("superadmin"))
    assert (r.status, (await r.json())["error"]["code"]) == (400, "invalid_body")
