"""Each admin route: its success shape and every error status it can return."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from service.adapters.tokens import Role
from service.entrypoints.api.routes import ROUTES
from service.ids import request_id
from service.tools.synthetic import ledger, queue_many, run_batch
from statemachine.batch import BATCHES
from tests.conftest import Running
from tests.integration.api_fixtures import Api

BASE = "/api/admin/legacy"
TRANSCRIPT = (
    "[01.10.2026 09:00:00] User: Can I swap my shift? Thanks!\n[01.10.2026 09:00:10] Bot: Yes."
)


async def get(api: Api, path: str, role: str = "support", **params: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = await api.client.get(
        f"{BASE}{path}", params={k: str(v) for k, v in params.items()}, headers=api.auth(role)
    )
    return r.status, await r.json()


async def post(api: Api, path: str, body: object, role: str = "admin") -> tuple[int, dict]:  # type: ignore[type-arg]
    r = await api.client.post(f"{BASE}{path}", json=body, headers=api.auth(role))
    return r.status, await r.json()


async def seed(api: Api, n: int = 8, *, fail_every: int = 4) -> list[str]:
    agg = ledger(api.runtime.store)
    ids = await queue_many(agg, n)
    await run_batch(agg, "b1", ids, fail_every=fail_every, retryable=False)
    await api.runtime.catch_up()
    return ids


async def test_summary_has_the_seed_shape_with_all_four_keys(api: Api) -> None:
    status, body = await get(api, "/summary")
    assert status == 200
    assert body == {
        "ok": True,
        "summary": {
            "pending_batching": 0,
            "batching_in_progress": 0,
            "processing_complete": 0,
            "processing_failed": 0,
        },
    }
    await seed(api)
    _, body = await get(api, "/summary", companyId="acme")
    assert body["summary"] == {
        "pending_batching": 0,
        "batching_in_progress": 0,
        "processing_complete": 6,
        "processing_failed": 2,
    }
    _, body = await get(api, "/summary", companyId="nobody")
    assert set(body["summary"].values()) == {0}


async def test_summary_refuses_unknown_or_repeated_parameters(api: Api) -> None:
    assert (await get(api, "/summary", bogus=1))[0] == 400
    r = await api.client.get(f"{BASE}/summary?companyId=a&companyId=b", headers=api.auth("support"))
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_parameter"


async def test_requests_pages_have_the_seed_shape_and_end_with_a_null_cursor(api: Api) -> None:
    await seed(api, 8)
    status, body = await get(api, "/requests", status="processing_complete", limit=4)
    assert status == 200
    assert set(body) == {"ok", "requests", "nextCursor"}
    first = body["requests"][0]
    assert {"id", "sessionId", "status", "companyId", "batchId", "attempts", "lastError"} <= set(
        first
    )
    assert first["status"] == "processing_complete"
    seen = [r["id"] for r in body["requests"]]
    _, body2 = await get(
        api, "/requests", status="processing_complete", limit=4, cursor=body["nextCursor"]
    )
    seen += [r["id"] for r in body2["requests"]]
    assert body2["nextCursor"] is None
    assert len(seen) == len(set(seen)) == 6
    _, failed = await get(api, "/requests", status="processing_failed")
    assert failed["requests"][0]["lastError"] == {"code": "server_error", "message": "500"}


async def test_requests_validation_errors_are_400s(api: Api) -> None:
    for params in (
        {},
        {"status": "done"},
        {"status": "processing failed"},
        {"status": "processing_failed", "limit": 0},
        {"status": "processing_failed", "limit": 501},
        {"status": "processing_failed", "limit": "x"},
        {"status": "processing_failed", "cursor": "tampered"},
        {"status": "processing_failed", "companyId": "a b"},
    ):
        status, body = await get(api, "/requests", **params)
        assert status == 400, params
        assert body["ok"] is False
        assert body["error"]["code"] in {
            "invalid_parameter",
            "invalid_cursor",
        }


async def test_a_cursor_is_bound_to_its_filters_and_refused_when_tampered(api: Api) -> None:
    await seed(api, 8, fail_every=0)
    _, body = await get(api, "/requests", status="processing_complete", limit=2)
    cursor = body["nextCursor"]
    status, err = await get(api, "/requests", status="processing_failed", limit=2, cursor=cursor)
    assert (status, err["error"]["code"]) == (400, "invalid_cursor")
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    assert (await get(api, "/requests", status="processing_complete", cursor=flipped))[0] == 400


async def test_keyset_walk_while_requests_are_inserted_returns_each_existing_row_once(
    api: Api,
) -> None:
    agg = ledger(api.runtime.store)
    existing = set(await queue_many(agg, 30))
    await api.runtime.catch_up()
    seen: list[str] = []
    cursor = None
    n = 0
    while True:
        params = {
            "status": "pending_batching",
            "limit": 7,
            **({"cursor": cursor} if cursor else {}),
        }
        _, body = await get(api, "/requests", **params)
        seen += [r["id"] for r in body["requests"]]
        await queue_many(agg, 3, prefix=f"new{n}-")  # inserted between pages
        await api.runtime.catch_up()
        n += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "no row twice"
    assert existing <= set(seen), "every row that existed is seen"


async def test_requeue_has_the_seed_shape_counts_and_is_idempotent(api: Api) -> None:
    ids = await seed(api, 8)
    failed = ["r0", "r4"]
    status, body = await post(api, "/requests/requeue", {"requestIds": [*failed, "r1", "ghost"]})
    assert status == 200
    assert body == {"ok": True, "requeuedCount": 2, "notFoundCount": 1, "skippedCount": 1}
    _, again = await post(api, "/requests/requeue", {"requestIds": failed})
    assert (again["requeuedCount"], again["skippedCount"]) == (0, 2)
    _, history = await get(api, "/requests/r0/history")
    last = history["history"][-1]
    assert (last["type"], last["actor"]) == ("RequestRequeued", "token:admin-token")
    assert json.loads(json.dumps(last["data"]))["reason"] == "admin"
    assert len(ids) == 8


async def test_requeue_refuses_bad_bodies(api: Api) -> None:
    cases = [
        {"requestIds": []},
        {"requestIds": [f"r{i}" for i in range(1001)]},
        {"requestIds": "r1"},
        {"requestIds": [1, 2]},
        {"ids": ["r1"]},
        {"requestIds": ["a b"]},
    ]
    for body in cases:
        status, err = await post(api, "/requests/requeue", body)
        assert status == 400, body
        assert err["error"]["code"] == "invalid_body"
    r = await api.client.post(
        f"{BASE}/requests/requeue",
        data=b"{not json",
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert (r.status, (await r.json())["error"]["code"]) == (400, "malformed_json")
    r = await api.client.post(
        f"{BASE}/requests/requeue",
        data=b"requestIds=r1",
        headers={**api.auth(), "Content-Type": "text/plain"},
    )
    assert r.status == 415
    big = json.dumps({"requestIds": ["r" * 200] * 1000, "pad": "x" * 1_100_000}).encode()
    headers = {**api.auth(), "Content-Type": "application/json"}
    r = await api.client.post(f"{BASE}/requests/requeue", data=io.BytesIO(big), headers=headers)
    assert (r.status, (await r.json())["error"]["code"]) == (413, "payload_too_large")


async def test_enqueue_is_idempotent_per_company_and_session(api: Api) -> None:
    body = {"companyId": "acme", "sessionId": "S-1", "transcript": TRANSCRIPT}
    status, created = await post(api, "/requests", body)
    assert (status, created["created"]) == (201, True)
    assert created["requestId"] == request_id("acme", "S-1")
    status, again = await post(api, "/requests", body)
    assert (status, again) == (
        200,
        {"ok": True, "requestId": created["requestId"], "created": False},
    )
    status, by_messages = await post(
        api,
        "/requests",
        {
            "companyId": "acme",
            "sessionId": "S-2",
            "model": "gpt-4o",
            "messages": [{"role": "User", "content": "Hi?"}],
        },
    )
    assert status == 201
    await api.runtime.catch_up()
    _, detail = await get(api, f"/requests/{by_messages['requestId']}")
    assert (detail["request"]["model"], detail["request"]["source"]) == ("gpt-4o", "api")
    _, history = await get(api, f"/requests/{created['requestId']}/history")
    assert history["history"][0]["actor"] == "token:admin-token"


async def test_enqueue_refuses_bad_input(api: Api) -> None:
    for body in (
        {"companyId": "acme", "sessionId": "S"},
        {
            "companyId": "acme",
            "sessionId": "S",
            "transcript": TRANSCRIPT,
            "messages": [{"role": "User", "content": "x"}],
        },
        {"companyId": "acme", "sessionId": "S", "transcript": "no header line"},
        {"companyId": "", "sessionId": "S", "transcript": TRANSCRIPT},
    ):
        status, _ = await post(api, "/requests", body)
        assert status == 400, body


async def test_one_request_with_analysis_usage_and_cost_then_404(api: Api) -> None:
    await seed(api, 4)
    status, body = await get(api, "/requests/r1")
    assert status == 200
    req = body["request"]
    assert req["analysis"]["category"] == "SCHEDULE_HOURS"
    assert req["usage"] == {"promptTokens": 10, "completionTokens": 5, "totalTokens": 15}
    assert req["costMicroUsd"] == 7
    _, failed = await get(api, "/requests/r0")
    assert failed["request"]["analysis"] is None
    assert (await get(api, "/requests/nope"))[0] == 404
    assert (await get(api, "/requests/nope/history"))[0] == 404
    assert (await get(api, "/requests/r1", extra=1))[0] == 400


async def test_batches_list_detail_history_and_404(api: Api) -> None:
    await seed(api, 4)
    status, body = await get(api, "/batches")
    assert status == 200
    assert body["nextCursor"] is None
    (batch,) = body["batches"]
    assert (batch["id"], batch["status"], batch["openaiBatchId"]) == ("b1", "processed", "batch_b1")
    assert batch["outcome"] == {"completed": 3, "failed": 1, "missing": 0, "rejectedLines": 0}
    assert (await get(api, "/batches", status="failed"))[1]["batches"] == []
    assert (await get(api, "/batches", status="bogus"))[0] == 400
    assert (await get(api, "/batches/b1"))[1]["batch"]["requestCount"] == 4
    _, history = await get(api, "/batches/b1/history")
    assert [h["type"] for h in history["history"]][:2] == ["BatchPlanned", "BatchUploadStarted"]
    assert (await get(api, "/batches/zzz"))[0] == 404
    assert (await get(api, "/batches/zzz/history"))[0] == 404


async def test_cancel_a_running_batch_then_409_when_finished_and_404_when_unknown(
    api: Api, emulator: Running
) -> None:
    await emulator.knobs(in_progress_seconds=30, partial_lines=0, cancelling_seconds=0)
    await queue_many(ledger(api.runtime.store), 3, transcript=TRANSCRIPT)
    await api.runtime.catch_up()
    await api.runtime.creator.run_once()
    await api.runtime.catch_up()
    (bid,) = [
        r["batch_id"] for r in await api.runtime.store.pool.fetch("SELECT batch_id FROM batches")
    ]
    for _ in range(50):
        await api.runtime.poller.run_once()
        if (await api.runtime.app.ledger.load(BATCHES, bid)).state.value == "IN_PROGRESS":  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    assert (await post(api, f"/batches/{bid}/cancel", None, role="support"))[0] == 403
    status, body = await post(api, f"/batches/{bid}/cancel", None)
    expected = {"ok": True, "batchId": bid, "status": "cancelling", "openaiCancel": "sent"}
    assert (status, body) == (202, expected)
    await emulator.knobs(in_progress_seconds=0)  # the retry batch runs at once
    async with asyncio.timeout(30):
        await api.runtime.run_until_idle()
    assert {
        r["attempts"] for r in await api.runtime.store.pool.fetch("SELECT attempts FROM requests")
    } == {2}
    status, err = await post(api, f"/batches/{bid}/cancel", None)
    assert (status, err["error"]["code"]) == (409, "not_cancellable")
    assert (await post(api, "/batches/unknown/cancel", None))[0] == 404
    _, history = await get(api, f"/batches/{bid}/history")
    assert ("BatchCancelRequested", "token:admin-token") in [
        (h["type"], h["actor"]) for h in history["history"]
    ]


async def test_event_feed_pages_by_position_and_filters(api: Api) -> None:
    await seed(api, 4)
    status, body = await get(api, "/events", limit=3)
    assert status == 200
    assert [e["position"] for e in body["events"]] == [1, 2, 3]
    _, nxt = await get(api, "/events", after=body["nextAfter"], limit=2)
    assert [e["position"] for e in nxt["events"]] == [4, 5]
    _, batches = await get(api, "/events", category="batch", limit=100)
    assert {e["streamId"] for e in batches["events"]} == {"batch-b1"}
    _, queued = await get(api, "/events", type="RequestQueued", limit=100)
    assert len(queued["events"]) == 4
    assert queued["events"][0]["data"]["type"] == "RequestQueued"
    for params in ({"after": -1}, {"limit": 1001}, {"type": "a b"}, {"category": "Batch!"}):
        assert (await get(api, "/events", **params))[0] == 400


async def test_openapi_document_validates_and_lists_every_route(api: Api) -> None:
    from openapi_spec_validator import validate

    status, doc = await get(api, "/openapi.json")
    assert status == 200
    validate(doc)
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path]


async def test_metrics_parse_and_count_requests(api: Api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await seed(api, 4)
    r = await api.client.get("/metrics", headers=api.auth("support"))
    assert r.status == 200
    families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    requests = {s.labels["status"]: s.value for s in families["batchledger_requests"].samples}
    assert requests == {"processing_complete": 3.0, "processing_failed": 1.0}
    assert "batchledger_projection_lag_events" in families


def test_roles_are_ordered() -> None:
    assert Role.support < Role.admin < Role.superadmin


async def test_cancel_records_the_intent_when_openai_fails_and_the_poller_sends_it(
    api: Api, emulator: Running
) -> None:
    await emulator.knobs(in_progress_seconds=30)
    await queue_many(ledger(api.runtime.store), 2, transcript=TRANSCRIPT)
    await api.runtime.catch_up()
    await api.runtime.creator.run_once()
    await api.runtime.catch_up()
    bid = await api.runtime.store.pool.fetchval("SELECT batch_id FROM batches")
    await emulator.knobs(fail_next_calls=1, fail_status=500)
    r = await api.client.post(f"{BASE}/batches/{bid}/cancel", headers=api.auth())
    assert r.status == 202
    assert (await r.json())["openaiCancel"] == "deferred"
    types = [e.type for e in await api.runtime.store.read_stream(f"batch-{bid}")]
    assert types[-1] == "BatchCancelRequested"
    (openai_batch,) = emulator.state.batches.values()
    assert openai_batch.status != "cancelling"  # OpenAI never took it
    await api.runtime.catch_up()
    await api.runtime.poller.run_once()
    assert openai_batch.status in ("cancelling", "cancelled")


async def test_metrics_move_as_the_pipeline_runs(api: Api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async def scrape() -> dict[str, float]:
        r = await api.client.get("/metrics", headers=api.auth("support"))
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(await r.text()):
            for sample in family.samples:
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
                if "le" not in sample.labels:
                    values[f"{sample.name}{{{label}}}"] = sample.value
        return values

    before = await scrape()
    await queue_many(ledger(api.runtime.store), 5, transcript=TRANSCRIPT)
    async with asyncio.timeout(30):
        await api.runtime.run_until_idle()
    after = await scrape()
    assert before.get("batchledger_requests{status=processing_complete}", 0) == 0
    assert after["batchledger_requests{status=processing_complete}"] == 5
    assert after["batchledger_batches{status=processed}"] == 1
    assert (
        after["batchledger_events_appended_total{}"] > before["batchledger_events_appended_total{}"]
    )
    assert after["batchledger_poll_seconds_count{}"] > before["batchledger_poll_seconds_count{}"]
    assert after["batchledger_ingest_seconds_count{}"] == 1
    assert after["batchledger_projection_lag_events{projection=requests}"] == 0


NO_QUERY_ROUTES = [
    r
    for r in __import__("service.entrypoints.api.routes", fromlist=["ROUTES"]).ROUTES
    if r.query is not None
]


@pytest.mark.parametrize(
    "route", NO_QUERY_ROUTES, ids=[f"{r.method} {r.path}" for r in NO_QUERY_ROUTES]
)
async def test_every_route_refuses_an_unknown_query_parameter_with_a_400(api: Api, route) -> None:  # type: ignore[no-untyped-def]
    r = await api.client.request(
        route.method,
        route.path.replace("{id}", "x"),
        params={"nonsense": "1"},
        headers=api.auth("superadmin"),
    )
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_parameter"


BODY_ROUTES = [
    r
    for r in __import__("service.entrypoints.api.routes", fromlist=["ROUTES"]).ROUTES
    if r.body is not None
]


@pytest.mark.parametrize("route", BODY_ROUTES, ids=[f"{r.method} {r.path}" for r in BODY_ROUTES])
async def test_every_body_route_answers_413_for_a_huge_body_and_415_for_a_non_json_one(
    api: Api, route
) -> None:  # type: ignore[no-untyped-def]
    auth = api.auth(route.role.name)
    headers = {**auth, "Content-Type": "application/json"}
    huge = io.BytesIO(b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}')
    r = await api.client.post(route.path, data=huge, headers=headers)
    assert r.status == 413
    r = await api.client.post(
        route.path,
        data=b"a=b",
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 415
    r = await api.client.post(route.path, data=b"{", headers=headers)
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "malformed_json"


async def test_readyz_fails_while_the_database_is_unreachable(api_factory) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    import asyncpg
    from aiohttp.test_utils import TestClient, TestServer

    from eventstore import EventStore
    from service.entrypoints.api.app import create_app
    from service.entrypoints.api.deps import DEPS

    api: Api = await api_factory()
    deps = api.client.server.app[DEPS]
    nowhere = "postgresql://postgres@127.0.0.1:1/none"
    pool = await asyncpg.create_pool(nowhere, min_size=0)  # readiness asks through the pool
    client = TestClient(TestServer(create_app(replace(deps, store=EventStore(pool, nowhere)))))
    await client.start_server()
    try:
        r = await client.get("/readyz")
        assert r.status == 503
        assert (await r.json())["checks"]["database"].startswith("unreachable")
    finally:
        await client.close()
        await pool.close()


async def test_a_route_answers_503_with_retry_after_while_the_database_is_down(
    api_factory,  # type: ignore[no-untyped-def]
) -> None:
    from dataclasses import replace

    import asyncpg
    from aiohttp.test_utils import TestClient, TestServer

    from eventstore import EventStore
    from service.entrypoints.api.app import create_app
    from service.entrypoints.api.deps import DEPS

    api: Api = await api_factory()
    deps = api.client.server.app[DEPS]
    nowhere = "postgresql://postgres@127.0.0.1:1/none"
    pool = await asyncpg.create_pool(nowhere, min_size=0)
    client = TestClient(TestServer(create_app(replace(deps, store=EventStore(pool, nowhere)))))
    await client.start_server()
    try:
        r = await client.get(f"{BASE}/summary", headers=api.auth("support"))
        assert r.status == 503
        assert r.headers["Retry-After"] == "5"
        assert (await r.json())["error"]["code"] == "database_unavailable"
    finally:
        await client.close()
        await pool.close()


async def test_nul_characters_are_refused_at_the_edge_not_by_the_database(api: Api) -> None:
    body = {"companyId": "a", "sessionId": "s", "messages": [{"role": "User", "content": "a\x00b"}]}
    status, err = await post(api, "/requests", body)
    assert (status, err["error"]["code"]) == (400, "invalid_body")
    r = await api.client.get(f"{BASE}/requests/a%00b", headers=api.auth("support"))
    assert (r.status, (await r.json())["error"]["code"]) == (400, "invalid_parameter")
    r = await api.client.post(f"{BASE}/batches/a%00b/cancel", headers=api.auth())
    assert r.status == 400


async def test_requeue_answers_409_when_a_request_keeps_changing_under_it(api_factory) -> None:  # type: ignore[no-untyped-def]
    from eventstore.store import WRITER_LOCK_KEY
    from statemachine.events import RequestFailed
    from statemachine.request import REQUESTS

    api: Api = await api_factory(requeue_attempts=1)
    await seed(api, 4)  # r0 is failed
    store = api.runtime.store
    async with store.pool.acquire() as held:
        await held.execute("SELECT pg_advisory_lock($1)", WRITER_LOCK_KEY)  # writers now queue
        call = asyncio.create_task(post(api, "/requests/requeue", {"requestIds": ["r0"]}))
        async with asyncio.timeout(10):
            while not await store.pool.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                await asyncio.sleep(0.01)
        # The handler read r0 and waits to append; r0 moves on meanwhile (this session re-enters
        # the lock it holds).
        version = await store.stream_version("request-r0")
        moved = RequestFailed(
            request_id="r0", batch_id="b1", code="x", message="again", retryable=False, attempt=1
        )
        await store.append(
            "request-r0",
            version,
            api.runtime.app.ledger.to_new_events([moved], api.runtime.app.batching.actor),
            conn=held,
        )
        await held.execute("SELECT pg_advisory_unlock($1)", WRITER_LOCK_KEY)
        status, body = await call
    assert (status, body["error"]["code"]) == (409, "conflict")
    types = [e.type for e in await store.read_stream(REQUESTS.stream_id("r0"))]
    assert "RequestRequeued" not in types, "nothing of the refused requeue was written"
