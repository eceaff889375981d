"""The HTTP edge: timeouts, a per-address connection cap, strict parameters, headers, envelopes.

Tests through the in-process client check what the application answers; tests through
`run_api` on a free port use raw sockets against the real listening server, where the
connection-level limits (header, body and idle timeouts, the per-address cap) live.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
import openai
import pytest

from service.adapters.tokens import Role, create_token
from service.config import load_settings
from service.entrypoints.api.routes import ROUTES
from service.entrypoints.api.server import run_api
from service.entrypoints.runtime import Runtime
from service.net import free_port
from service.tools.synthetic import ledger, queue_many
from tests.conftest import Running
from tests.integration.api_fixtures import Api

BASE = "/api/admin/legacy"
STREAM = f"{BASE}/events/stream"


# ---------------------------------------------------------------- a real listening server


@dataclass
class Live:
    """`run_api` listening on 127.0.0.1:port, with a support and an admin token."""

    port: int
    runtime: Runtime
    support: str
    admin: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


LiveFactory = Callable[..., Awaitable[Live]]


@pytest.fixture
async def live_factory(db_dsn: str, emulator: Running) -> AsyncIterator[LiveFactory]:
    started: list[tuple[asyncio.Event, asyncio.Task[None], Runtime]] = []

    async def make(**env: str) -> Live:
        port = free_port()
        settings = load_settings(
            {
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "BATCH_CREATION_INTERVAL_SECONDS": "0",
                "BATCH_POLLING_INTERVAL_SECONDS": "0",
                **env,
            }
        )
        client = openai.AsyncOpenAI(base_url=f"{emulator.url}/v1", api_key="sk-test", max_retries=0)
        runtime = await Runtime.open(settings, db_dsn, client)
        support = await create_token(runtime.store.pool, "edge-support", Role.support)
        admin = await create_token(runtime.store.pool, "edge-admin", Role.admin)
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_api(runtime.store, runtime.app, runtime.metrics, settings, stop)
        )
        started.append((stop, task, runtime))
        async with asyncio.timeout(10):
            while True:
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                w.close()
                await w.wait_closed()
                break
        await asyncio.sleep(0.05)  # let the probe connection go before a test counts them
        return Live(port, runtime, support, admin)

    yield make
    for stop, task, runtime in started:
        stop.set()
        async with asyncio.timeout(30):
            await task
        await runtime.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within `seconds`, and what it sent."""
    received = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


async def http_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One keep-alive GET on an open connection; the response is read by Content-Length."""
    lines = [f"GET {path} HTTP/1.1", "Host: test"] + [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *rest = head.decode("latin-1").split("\r\n")
        found = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)}
        body = await reader.readexactly(int(found.get("content-length", "0")))
    return int(status_line.split()[1]), found, body


def close(writer: asyncio.StreamWriter) -> None:
    writer.close()


# ---------------------------------------------------------------- #9 connection-level limits


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory(API_HEADER_TIMEOUT_SECONDS="1")
    reader, writer = await live.connect()
    started = time.monotonic()
    closed, _ = await closed_within(reader, 4)
    close(writer)
    assert closed, "a silent connection stayed open"
    assert time.monotonic() - started >= 0.8


async def test_a_slowloris_sending_one_header_line_a_second_is_closed(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory(API_HEADER_TIMEOUT_SECONDS="2")
    reader, writer = await live.connect()
    watcher = asyncio.create_task(closed_within(reader, 8))
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
    try:
        for i in range(7):
            await asyncio.sleep(1)
            if watcher.done():
                break
            writer.write(f"X-Slow-{i}: still here\r\n".encode())
            await writer.drain()
    except ConnectionError:
        pass
    closed, received = await watcher
    close(writer)
    assert closed, "one header line a second kept the connection open"
    assert time.monotonic() - started < 4
    assert received == b"", "nothing is answered to an unfinished request"


async def test_a_body_that_does_not_arrive_is_answered_408(live_factory: LiveFactory) -> None:
    live = await live_factory(API_BODY_TIMEOUT_SECONDS="1")
    reader, writer = await live.connect()
    writer.write(
        (
            f"POST {BASE}/requests HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {live.admin}\r\n"
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"compan'
        ).encode()
    )
    await writer.drain()
    closed, received = await closed_within(reader, 5)
    close(writer)
    assert closed
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:200]
    assert json.loads(body)["error"]["code"] == "request_timeout"


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory(API_IDLE_TIMEOUT_SECONDS="1", API_HEADER_TIMEOUT_SECONDS="10")
    reader, writer = await live.connect()
    status, _, _ = await http_get(reader, writer, "/healthz")
    assert status == 200
    status, _, _ = await http_get(reader, writer, "/healthz")  # the connection is reused
    assert status == 200
    closed, _ = await closed_within(reader, 4)
    close(writer)
    assert closed, "an idle keep-alive connection stayed open"


async def test_a_keep_alive_connection_gets_the_header_timeout_for_its_next_request(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory(API_IDLE_TIMEOUT_SECONDS="30", API_HEADER_TIMEOUT_SECONDS="1")
    reader, writer = await live.connect()
    assert (await http_get(reader, writer, "/healthz"))[0] == 200
    await asyncio.sleep(1.5)  # idle, well within the idle timeout: still open
    assert (await http_get(reader, writer, "/healthz"))[0] == 200
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # then a request that never finishes
    await writer.drain()
    closed, _ = await closed_within(reader, 4)
    close(writer)
    assert closed


async def test_connections_beyond_the_per_address_cap_are_closed_at_once(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory(API_MAX_CONNECTIONS_PER_ADDRESS="3")
    held = [await live.connect() for _ in range(3)]
    reader, writer = await live.connect()
    closed, received = await closed_within(reader, 2)
    close(writer)
    assert closed, "the fourth connection from one address was served"
    assert received == b""
    r0, w0 = held[0]
    assert (await http_get(r0, w0, "/healthz"))[0] == 200, "the ones within the cap work"
    for _, w in held:
        close(w)
    await asyncio.sleep(0.2)
    reader, writer = await live.connect()  # freed slots are given out again
    assert (await http_get(reader, writer, "/healthz"))[0] == 200
    close(writer)


async def test_normal_requests_and_event_streams_outlive_short_edge_timeouts(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory(
        API_HEADER_TIMEOUT_SECONDS="1",
        API_BODY_TIMEOUT_SECONDS="1",
        API_IDLE_TIMEOUT_SECONDS="1",
        SSE_HEARTBEAT_SECONDS="0.3",
    )
    auth = {"Authorization": f"Bearer {live.support}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{live.url}{BASE}/summary", headers=auth) as r:
            assert r.status == 200
        message = {"role": "User", "content": "hi"}
        body = {"companyId": "acme", "sessionId": "S-1", "messages": [message]}
        admin = {"Authorization": f"Bearer {live.admin}"}
        async with http.post(f"{live.url}{BASE}/requests", json=body, headers=admin) as r:
            assert r.status == 201
        async with http.get(f"{live.url}{STREAM}", headers=auth) as stream:
            assert stream.status == 200
            started = time.monotonic()
            seen = b""
            async with asyncio.timeout(10):
                while time.monotonic() - started < 3:  # three times every edge timeout
                    seen += await stream.content.readline()
                await queue_many(ledger(live.runtime.store), 1, prefix="late")
                while b"request-late0" not in seen:
                    seen += await stream.content.readline()
            assert seen.count(b": keepalive") >= 5


async def test_malformed_http_is_answered_with_the_json_envelope(live_factory: LiveFactory) -> None:
    live = await live_factory()
    reader, writer = await live.connect()
    writer.write(b"GARBAGE / NOT-HTTP\r\n\r\n")
    await writer.drain()
    closed, received = await closed_within(reader, 5)
    close(writer)
    assert closed
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", received[:200]  # HTTP/1.0: the version is unknown
    headers = head.decode("latin-1").lower()
    assert "content-type: application/json" in headers
    assert "server: batchledger\r\n" in headers + "\r\n"
    assert "x-content-type-options: nosniff" in headers
    assert "x-request-id: " in headers, "every answer carries a request id, as documented"
    assert json.loads(body)["ok"] is False


async def test_a_request_line_over_the_limit_is_a_400_envelope_with_a_request_id(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory()
    reader, writer = await live.connect()
    writer.write(b"GET /api/admin/legacy/events?type=" + b"A" * 10_000 + b" HTTP/1.1\r\n\r\n")
    await writer.drain()
    closed, received = await closed_within(reader, 5)
    close(writer)
    assert closed
    head = received.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.split()[1] == "400"
    assert "x-request-id: " in head


# ---------------------------------------------------------------- #10 client disconnects


async def test_a_client_that_disconnects_mid_body_is_logged_as_such(
    live_factory: LiveFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.logs import configure

    live = await live_factory()
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    configure("INFO", "json")
    _, writer = await live.connect()
    writer.write(
        (
            f"POST {BASE}/requests HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {live.admin}\r\n"
            'Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"companyId":'
        ).encode()
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the handler is reading the body
    writer.close()
    events: list[dict[str, object]] = []
    async with asyncio.timeout(5):
        while not any(e.get("event", "").startswith("api.") for e in events):  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
            events = [json.loads(x) for x in captured.getvalue().splitlines() if x.startswith("{")]
    api_events = [e for e in events if str(e.get("event", "")).startswith("api.")]
    assert [e["event"] for e in api_events] == ["api.client_disconnected"], api_events
    assert api_events[0]["level"] == "info"
    assert api_events[0]["path"] == f"{BASE}/requests"


# ---------------------------------------------------------------- #4 readiness


async def test_a_burst_of_readyz_calls_opens_no_database_session(api: Api, db_dsn: str) -> None:
    monitor = await asyncpg.connect(db_dsn)
    sql = (
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        before = {r["pid"] for r in await monitor.fetch(sql)}
        seen: set[int] = set()
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                seen.update(r["pid"] for r in await monitor.fetch(sql))

        sampler = asyncio.create_task(sample())
        answers = await asyncio.gather(*(api.client.get("/readyz") for _ in range(100)))
        done.set()
        await sampler
        alive = {r["pid"] for r in await monitor.fetch(sql)}
    finally:
        await monitor.close()
    new = (seen | alive) - before
    # Before: 100 short-lived sessions, one per call. Now at most what the pool opens
    # (and keeps: pooled sessions outlive the burst).
    assert new <= alive, f"{len(new - alive)} sessions opened and closed for 100 /readyz calls"
    assert len(new) <= 2
    assert [r.status for r in answers] == [200] * 100


async def test_readyz_asks_the_database_at_most_once_per_interval(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.entrypoints.api import readiness

    probes = 0
    real = readiness.probe

    async def counting(pool: object) -> list[str]:
        nonlocal probes
        probes += 1
        return await real(pool)  # type: ignore[arg-type]

    monkeypatch.setattr(readiness, "probe", counting)
    answers = await asyncio.gather(*(api.client.get("/readyz") for _ in range(100)))
    assert {r.status for r in answers} == {200}
    assert probes == 1
    await asyncio.sleep(readiness.CACHE_SECONDS + 0.1)
    assert (await api.client.get("/readyz")).status == 200
    assert probes == 2


async def test_readyz_still_answers_503_while_a_migration_is_pending(api: Api) -> None:
    from service.entrypoints.api import readiness

    assert (await api.client.get("/readyz")).status == 200
    await api.runtime.store.pool.execute(
        "DELETE FROM schema_migrations WHERE name LIKE 'service/%'"
    )
    await asyncio.sleep(readiness.CACHE_SECONDS + 0.1)
    r = await api.client.get("/readyz")
    assert r.status == 503
    assert "pending" in (await r.json())["checks"]["migrations"]


# ---------------------------------------------------------------- #6 and #15 strict parameters


async def test_last_event_id_takes_only_ascii_digits(api: Api) -> None:
    await queue_many(ledger(api.runtime.store), 2)
    for bad in ("²", "١٢", "+1", "1.0", "1e1", " ", "-1", "1" * 19):
        r = await api.client.get(STREAM, headers={**api.auth("support"), "Last-Event-ID": bad})
        assert r.status == 400, (bad, r.status)
        assert (await r.json())["error"]["code"] == "invalid_last_event_id"
    async with api.client.get(STREAM, headers={**api.auth("support"), "Last-Event-ID": "1"}) as r:
        assert r.status == 200
        async with asyncio.timeout(5):
            while not (line := await r.content.readline()).startswith(b"id:"):
                pass
        assert line == b"id: 2\n"


def test_last_event_id_parser_returns_none_without_the_header() -> None:
    from aiohttp.test_utils import make_mocked_request

    from service.entrypoints.api.handlers import last_event_id

    assert last_event_id(make_mocked_request("GET", STREAM)) is None
    padded = make_mocked_request("GET", STREAM, headers={"Last-Event-ID": "0042"})
    assert last_event_id(padded) == 42


MALFORMED = [
    ("/events", {"after": "1e9"}),
    ("/events", {"after": "1.0"}),
    ("/events", {"limit": "1e1"}),
    ("/events", {"after": "-0"}),
    ("/events", {"after": "+1"}),
    ("/events", {"after": "١٢"}),
    ("/events", {"limit": "²"}),
    ("/events", {"after": ""}),
    ("/events", {"after": "1" * 19}),
    ("/events/stream", {"after": "1e9"}),
    ("/events/stream", {"limit": "1.0"}),
    ("/batches", {"status": "null"}),
    ("/batches", {"status": "NULL"}),
    ("/batches", {"limit": "1e1"}),
    ("/batches", {"limit": "\u0665"}),  # ARABIC-INDIC DIGIT FIVE
    ("/requests", {"status": "processing_failed", "limit": "1e1"}),
    ("/requests", {"status": "null"}),
]


@pytest.mark.parametrize(("path", "params"), MALFORMED, ids=[f"{p}?{q}" for p, q in MALFORMED])
async def test_malformed_numbers_and_null_are_400s(
    api: Api, path: str, params: dict[str, str]
) -> None:
    r = await api.client.get(f"{BASE}{path}", params=params, headers=api.auth("support"))
    assert r.status == 400, (path, params, r.status)  # (a stream would never end: no body read)
    assert (await r.json())["error"]["code"] == "invalid_parameter"


async def test_plain_ascii_numbers_still_work(api: Api) -> None:
    await queue_many(ledger(api.runtime.store), 3)
    r = await api.client.get(
        f"{BASE}/events", params={"after": "01", "limit": "2"}, headers=api.auth("support")
    )
    assert r.status == 200
    assert [e["position"] for e in (await r.json())["events"]] == [2, 3]


async def test_an_after_past_the_head_is_a_400_on_the_feed_and_the_stream(api: Api) -> None:
    await queue_many(ledger(api.runtime.store), 3)
    auth = api.auth("support")
    r = await api.client.get(f"{BASE}/events", params={"after": "3"}, headers=auth)
    assert (r.status, (await r.json())["nextAfter"]) == (200, 3), "the head itself is fine"
    r = await api.client.get(f"{BASE}/events", params={"after": "4"}, headers=auth)
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_parameter"
    r = await api.client.get(STREAM, params={"after": "4"}, headers=auth)
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_parameter"
    r = await api.client.get(STREAM, headers={**auth, "Last-Event-ID": "4"})
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_last_event_id"


# ---------------------------------------------------------------- #13 headers, HEAD, 405


async def test_every_response_says_nosniff_no_store_and_a_server_without_versions(
    api: Api,
) -> None:
    auth = api.auth("support")
    answers = [
        await api.client.get("/healthz"),
        await api.client.get("/readyz"),
        await api.client.get("/metrics", headers=auth),
        await api.client.get(f"{BASE}/summary", headers=auth),
        await api.client.get(f"{BASE}/summary"),  # 401
        await api.client.get(f"{BASE}/requests/nope", headers=auth),  # 404
        await api.client.get("/no/such/path"),  # 404 from the router
        await api.client.put(f"{BASE}/summary", headers=auth),  # 405
    ]
    async with api.client.get(STREAM, headers=auth) as stream:  # a streamed response
        answers.append(stream)
    for r in answers:
        assert r.headers.get("X-Content-Type-Options") == "nosniff", r.url
        assert r.headers.get("Cache-Control") == "no-store", r.url
        assert r.headers.get("Server") == "batchledger", (r.url, r.headers.get("Server"))


async def test_405_carries_allow_and_the_json_envelope(api: Api) -> None:
    for method, path, allowed in (
        ("PUT", f"{BASE}/summary", {"GET", "HEAD"}),
        ("DELETE", "/healthz", {"GET", "HEAD"}),
        ("GET", f"{BASE}/batches/b1/cancel", {"POST"}),
        ("PATCH", f"{BASE}/requests", {"GET", "HEAD", "POST"}),
    ):
        r = await api.client.request(method, path, headers=api.auth("admin"))
        assert r.status == 405, (method, path)
        assert {m.strip() for m in r.headers["Allow"].split(",")} == allowed, r.headers["Allow"]
        body = await r.json()
        assert (body["ok"], body["error"]["code"]) == (False, "method_not_allowed")


GETS = [r for r in ROUTES if r.method == "GET"]


@pytest.mark.parametrize("route", GETS, ids=[r.path for r in GETS])
async def test_head_answers_wherever_get_does_without_a_body(api: Api, route) -> None:  # type: ignore[no-untyped-def]
    path = route.path.replace("{id}", "nope")
    headers = api.auth("superadmin")
    get = await api.client.get(path, headers=headers) if route.path != STREAM else None
    async with asyncio.timeout(5):
        head = await api.client.head(path, headers=headers)
        body = await head.read()
    assert head.status == (get.status if get is not None else 200)
    assert body == b""
    if get is not None:
        assert head.headers["Content-Type"] == get.headers["Content-Type"]


async def test_head_needs_the_same_token_as_get(api: Api) -> None:
    r = await api.client.head(f"{BASE}/requests/nope")
    assert r.status == 401
    r = await api.client.head(f"{BASE}/tokens", headers=api.auth("support"))
    assert r.status == 403


# ---------------------------------------------------------------- JSON envelope everywhere


async def test_404_405_and_413_come_back_as_the_json_envelope(api: Api) -> None:
    r = await api.client.get("/no/such/path")
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "not_found"
    r = await api.client.post("/healthz")
    assert r.status == 405
    assert (await r.json())["error"]["code"] == "method_not_allowed"
    r = await api.client.post(
        f"{BASE}/requests",
        data=io.BytesIO(b"{" + b" " * (1024 * 1024 + 10) + b"}"),
        headers={**api.auth("admin"), "Content-Type": "application/json"},
    )
    assert r.status == 413
    assert (await r.json())["error"]["code"] == "payload_too_large"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


# ---------------------------------------------------------------- settings and the cap's rules


def test_edge_settings_have_defaults_and_are_validated() -> None:
    from service.config import ConfigError

    s = load_settings({})
    assert (
        s.api_header_timeout_seconds,
        s.api_body_timeout_seconds,
        s.api_idle_timeout_seconds,
        s.api_max_connections_per_address,
    ) == (10, 30, 75, 64)
    for name, value in (
        ("API_HEADER_TIMEOUT_SECONDS", "0"),
        ("API_BODY_TIMEOUT_SECONDS", "nan"),
        ("API_IDLE_TIMEOUT_SECONDS", "7200"),
        ("API_MAX_CONNECTIONS_PER_ADDRESS", "-1"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})


def test_trusted_proxies_are_exempt_from_the_per_address_cap() -> None:
    import ipaddress

    from service.entrypoints.api.edge import EdgeLimits, _Addresses

    limits = EdgeLimits(max_connections_per_address=1, exempt=(ipaddress.ip_network("10.0.0.0/8"),))
    addresses = _Addresses(limits)
    assert addresses.admit("192.0.2.1")
    assert not addresses.admit("192.0.2.1")
    addresses.release("192.0.2.1")
    assert addresses.admit("192.0.2.1")
    assert all(addresses.admit("10.1.2.3") for _ in range(5)), "a proxy carries many clients"
    assert _Addresses(EdgeLimits(max_connections_per_address=0)).admit("x"), "0: no cap"


async def test_a_fixed_path_is_not_taken_by_a_template_for_another_method(api: Api) -> None:
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        r = await api.client.request(method, f"{BASE}/requests/requeue", headers=api.auth())
        assert r.status == 405, method
        assert r.headers["Allow"] == "POST", method


async def test_the_event_stream_echoes_the_request_id(api: Api) -> None:
    headers = {**api.auth("support"), "X-Request-Id": "trace-me"}
    async with api.client.get(STREAM, headers=headers) as r:
        assert r.status == 200
        assert r.headers["X-Request-Id"] == "trace-me"
