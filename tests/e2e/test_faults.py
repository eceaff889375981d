"""The fault suite of issue 14: real `batchledger serve` processes through faults.

PostgreSQL stopped (immediate) and started again under a running `serve`; OpenAI answering
429 and then 500 for a while; OpenAI slower than the client's timeout for a while; one batch
whose OpenAI status our table does not know; `serve` killed between recording a cancel and
sending it. Each scenario ends with every request in exactly one final state, nothing lost,
and no OpenAI batch created twice for one of our batches.

The emulator runs in the test's process (the `emulator` fixture), `serve` in its own; each
wait is bounded, and each scenario waits for states, never for a time.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventstore import EventStore
from service.adapters.database import migrate
from service.adapters.tokens import Role, create_token
from service.faults import FAULT_EXIT_CODE
from service.net import free_port
from service.tools.emulator.state import EmuBatch
from service.tools.synthetic import ledger
from statemachine.request import REQUESTS
from statemachine.states import RequestState
from tests.conftest import Running
from tests.e2e.test_serve_processes import (
    assert_batched_once_and_no_duplicate_openai_batch,
    queue,
    serve_env,
    start_serve,
    stop,
    wait_all_complete,
)
from tests.pgharness import PrivateServer

pytestmark = pytest.mark.slow

API = "/api/admin/legacy"
WAIT = 60.0  # the bound of every wait for the pipeline; each scenario needs a few seconds


# -- serve as a process, with its log in a file --------------------------------------------


@dataclass
class Serve:
    """A running `serve`: the process, its log file and, when the API is on, its base URL."""

    proc: asyncio.subprocess.Process
    log: Path
    base: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


async def launch(
    env: dict[str, str], log: Path, *, api: bool = False, http: aiohttp.ClientSession | None = None
) -> Serve:
    """Start `serve` logging to `log` (a pipe could fill up and block it); with the API on, wait
    until it answers /healthz."""
    env = {
        **env,
        # Items that fail are retried soon, not after the default 5 s backoff.
        "SCHEDULER_BACKOFF_SECONDS": "0.2",
        "SCHEDULER_BACKOFF_MAX_SECONDS": "1",
        "API_RATE_LIMIT_PER_MINUTE": "100000",
    }
    base = ""
    if api:
        port = free_port()
        env["PORT"] = str(port)
        base = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = await start_serve(env, api=api, stderr=out)
    serve = Serve(proc, log, base)
    if api:
        assert http is not None

        async def answers() -> bool:
            try:
                status, _ = await call(http, serve, "GET", "/healthz")
            except aiohttp.ClientConnectionError:
                return False
            return status == 200

        await until("serve answers /healthz", answers, serve=serve)
    return serve


async def until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    *,
    seconds: float = WAIT,
    serve: Serve | None = None,
    pause: float = 0.05,
) -> None:
    """Wait until `check` holds; fail saying what did not happen (and why serve exited)."""
    try:
        async with asyncio.timeout(seconds):
            while not await check():
                if serve is not None and serve.proc.returncode is not None:
                    raise AssertionError(
                        f"serve exited {serve.proc.returncode} while waiting until {what}:\n"
                        + serve.log_tail()
                    )
                await asyncio.sleep(pause)
    except TimeoutError:
        tail = f"\nserve's log:\n{serve.log_tail()}" if serve is not None else ""
        raise AssertionError(f"not within {seconds} s: {what}{tail}") from None


async def call(
    http: aiohttp.ClientSession, serve: Serve, method: str, path: str, token: str | None = None
) -> tuple[int, Any]:
    """One API call: the status and the JSON body (the text when it is not JSON)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, serve.base + path, headers=headers) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def metric(http: aiohttp.ClientSession, serve: Serve, token: str, name: str) -> float:
    """The sum of one /metrics family's samples whose line starts with `name`."""
    status, text = await call(http, serve, "GET", "/metrics", token)
    assert status == 200, text
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


# -- what the log holds --------------------------------------------------------------------


async def count(store: EventStore, event_type: str, stream_id: str | None = None) -> int:
    n: int = await store.pool.fetchval(
        "SELECT count(*) FROM events"
        " WHERE event_type = $1 AND ($2::text IS NULL OR stream_id = $2)",
        event_type,
        stream_id,
    )
    return n


async def batch_events(store: EventStore, batch_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await store.pool.fetch(
        "SELECT event_type, data FROM events WHERE stream_id = $1 ORDER BY stream_version",
        f"batch-{batch_id}",
    )
    return [(r["event_type"], json.loads(r["data"])) for r in rows]


async def submitted(store: EventStore) -> dict[str, list[str]]:
    """Our batch id -> the OpenAI batch ids its BatchSubmitted events recorded."""
    rows = await store.pool.fetch(
        "SELECT data->>'batch_id' AS ours, data->>'openai_batch_id' AS theirs"
        " FROM events WHERE event_type = 'BatchSubmitted' ORDER BY position"
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["ours"], []).append(r["theirs"])
    return out


def openai_batches_of(emulator: Running, batch_id: str) -> list[EmuBatch]:
    return [
        b
        for b in emulator.state.batches.values()
        if (b.metadata or {}).get("batchledger_batch_id") == batch_id
    ]


# -- the end state every scenario must reach ------------------------------------------------


async def assert_every_request_completed_once(store: EventStore, n: int) -> None:
    """Nothing lost, nothing doubled: exactly the n queued requests, each in one final state
    (PROCESSING_COMPLETE, as its own stream folds it) with exactly one RequestCompleted."""
    rows = await store.pool.fetch(
        "SELECT stream_id,"
        " count(*) FILTER (WHERE event_type = 'RequestQueued') AS queued,"
        " count(*) FILTER (WHERE event_type = 'RequestCompleted') AS completed"
        " FROM events WHERE stream_id LIKE 'request-%' GROUP BY stream_id"
    )
    assert len(rows) == n, f"{len(rows)} request streams, {n} queued"
    assert [r["stream_id"] for r in rows if (r["queued"], r["completed"]) != (1, 1)] == []
    ids = [r["stream_id"].removeprefix("request-") for r in rows]
    states = await ledger(store).load_many(REQUESTS, ids)
    final = Counter(s.state if s is not None else None for s in states.values())
    assert final == {RequestState.PROCESSING_COMPLETE: n}, final


async def assert_one_openai_batch_per_batch(store: EventStore, emulator: Running) -> None:
    """Every batch we planned reached OpenAI exactly once, and our log knows each OpenAI batch
    by the id OpenAI gave it: none created twice, none orphaned at OpenAI."""
    ours = Counter(
        (b.metadata or {}).get("batchledger_batch_id") for b in emulator.state.batches.values()
    )
    twice = {k: v for k, v in ours.items() if v != 1}
    assert twice == {}, f"OpenAI batches created more than once for one of ours: {twice}"
    planned = {
        r["bid"]
        for r in await store.pool.fetch(
            "SELECT data->>'batch_id' AS bid FROM events WHERE event_type = 'BatchPlanned'"
        )
    }
    assert set(ours) == planned
    recorded = await submitted(store)
    at_openai = {
        (b.metadata or {})["batchledger_batch_id"]: [b.id] for b in emulator.state.batches.values()
    }
    assert recorded == at_openai, "our BatchSubmitted events differ from OpenAI's batches"


# -- a private PostgreSQL ------------------------------------------------------------------


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivateServer]:
    """A PostgreSQL server of this test's own (it gets stopped): initdb, start, cleanup."""
    if not PrivateServer.available():
        pytest.skip("no local PostgreSQL binaries (initdb, pg_ctl) to start a private server")
    server = PrivateServer()
    try:
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


@asynccontextmanager
async def opened(dsn: str) -> AsyncIterator[EventStore]:
    store = await EventStore.open(dsn, max_size=4)
    try:
        yield store
    finally:
        await store.close()


# -- the scenarios -------------------------------------------------------------------------


async def test_postgres_stopped_mid_pipeline_serve_answers_503_and_recovers_without_restart(
    private_pg: PrivateServer, emulator: Running, tmp_path: Path
) -> None:
    n = 40
    await migrate(private_pg.dsn)
    async with opened(private_pg.dsn) as store:
        await queue(store, n)
        token = await create_token(store.pool, "fault-admin", Role.admin)
    # Batches stay at OpenAI a while, so the outage falls among batches in flight.
    await emulator.knobs(in_progress_seconds=1.5)
    env = serve_env(private_pg.dsn, emulator, BATCH_MAX_REQUESTS="5")
    async with aiohttp.ClientSession() as http:
        serve = await launch(env, tmp_path / "serve.log", api=True, http=http)
        try:
            async with opened(private_pg.dsn) as store:

                async def one_submitted() -> bool:
                    return await count(store, "BatchSubmitted") >= 1

                await until("a first batch is submitted", one_submitted, serve=serve)
                done_before = await count(store, "RequestCompleted")
            assert done_before < n, "the pipeline ended before the outage: nothing was tested"

            await asyncio.to_thread(private_pg.stop, "immediate")
            seen: list[int] = []

            async def api_says_503() -> bool:
                status, body = await call(http, serve, "GET", f"{API}/summary", token)
                seen.append(status)
                return status == 503 and body["error"]["code"] == "database_unavailable"

            await until("the API answers 503 with PostgreSQL down", api_says_503, serve=serve)
            assert set(seen) <= {200, 503}, f"statuses while the database went down: {seen}"

            async def not_ready() -> bool:
                return (await call(http, serve, "GET", "/readyz"))[0] == 503

            await until("/readyz answers 503 with PostgreSQL down", not_ready, serve=serve)
            assert (await call(http, serve, "GET", "/healthz"))[0] == 200

            async def schedulers_saw_it() -> bool:
                return "scheduler.database_error" in serve.log_text()

            await until("the schedulers meet the outage", schedulers_saw_it, serve=serve)
            status, _ = await call(http, serve, "GET", f"{API}/summary", token)
            assert status == 503
            assert serve.proc.returncode is None, serve.log_tail()

            await asyncio.to_thread(private_pg.restart)
            async with opened(private_pg.dsn) as store:
                await wait_all_complete(store, n, WAIT)

                async def api_recovered() -> bool:
                    status, body = await call(http, serve, "GET", f"{API}/summary", token)
                    return status == 200 and body["summary"]["processing_complete"] == n

                await until("the API answers 200 with every request complete", api_recovered)
                assert (await call(http, serve, "GET", "/readyz"))[0] == 200
                assert serve.proc.returncode is None, "serve was not meant to restart"
                await assert_every_request_completed_once(store, n)
                await assert_batched_once_and_no_duplicate_openai_batch(store, emulator, n)
                await assert_one_openai_batch_per_batch(store, emulator)
        finally:
            await stop(serve.proc)
    assert serve.proc.returncode == 0, serve.log_tail()


async def test_openai_answering_429_then_500_for_a_while_delays_but_loses_nothing(
    db_dsn: str, emulator: Running, store: EventStore, tmp_path: Path
) -> None:
    n = 30
    await queue(store, n)
    # 429s from the first call on: the start-up check, the uploads, the creates.
    await emulator.knobs(
        in_progress_seconds=0.5, fail_status=429, retry_after_seconds=0, fail_next_calls=15
    )
    serve = await launch(
        serve_env(db_dsn, emulator, BATCH_MAX_REQUESTS="10"), tmp_path / "serve.log"
    )
    try:

        async def refusals_served() -> bool:
            return emulator.state.knobs.fail_next_calls == 0

        await until("OpenAI's 429s are all answered", refusals_served, serve=serve)

        # Then 500s, once a batch ended at OpenAI: they fall on the retrieves and downloads.
        async def one_ended() -> bool:
            return any(b.status == "completed" for b in emulator.state.batches.values())

        await until("a batch ends at OpenAI", one_ended, serve=serve)
        await emulator.knobs(fail_status=500, fail_next_calls=15)
        await until("OpenAI's 500s are all answered", refusals_served, serve=serve)
        await wait_all_complete(store, n, WAIT)
        assert serve.proc.returncode is None, serve.log_tail()
    finally:
        await stop(serve.proc)
    log = serve.log_text()
    assert "batch.submit_deferred" in log or "batch.poll_failed" in log, log[-3000:]
    await assert_every_request_completed_once(store, n)
    await assert_batched_once_and_no_duplicate_openai_batch(store, emulator, n)
    await assert_one_openai_batch_per_batch(store, emulator)


@contextmanager
def slow_from_create(emulator: Running, nth: int, delay: float) -> Iterator[None]:
    """OpenAI turns slow at its `nth` batch creation: that create is carried out, and its
    answer (like every answer after it) comes `delay` seconds late, past the client's timeout.
    The knob is set from inside the emulator, the only way to hit the create exactly."""
    state = emulator.state
    original = state.create_batch
    creates = 0

    def create_then_slow_down(*args: Any, **kwargs: Any) -> EmuBatch:
        nonlocal creates
        batch = original(*args, **kwargs)
        creates += 1
        if creates == nth:
            state.knobs.response_delay_seconds = delay
        return batch

    state.create_batch = create_then_slow_down  # type: ignore[method-assign]
    try:
        yield
    finally:
        state.create_batch = original  # type: ignore[method-assign]


# Without SDK retries a create that timed out is found again by its metadata. With the
# service's default OPENAI_MAX_RETRIES (2) the SDK itself sends the timed-out
# `POST /v1/batches` again, and each attempt creates one more OpenAI batch.
@pytest.mark.parametrize(
    "sdk_retries",
    [
        pytest.param("0", id="no-sdk-retries"),
        pytest.param(None, id="sdk-default-retries"),
    ],
)
async def test_openai_slower_than_the_client_timeout_for_a_while_creates_no_batch_twice(
    sdk_retries: str | None, db_dsn: str, emulator: Running, store: EventStore, tmp_path: Path
) -> None:
    n = 30
    await queue(store, n)
    token = await create_token(store.pool, "fault-watcher", Role.support)
    env = serve_env(db_dsn, emulator, BATCH_MAX_REQUESTS="10", OPENAI_TIMEOUT_SECONDS="1")
    if sdk_retries is None:
        env.pop("OPENAI_MAX_RETRIES")  # the service's default, as deployed
    else:
        env["OPENAI_MAX_RETRIES"] = sdk_retries
    # The first batch stays in flight while OpenAI is slow: its retrieves time out too.
    await emulator.knobs(in_progress_seconds=1)
    async with aiohttp.ClientSession() as http:
        with slow_from_create(emulator, nth=2, delay=2.0):
            serve = await launch(env, tmp_path / "serve.log", api=True, http=http)
            try:

                async def timed_out() -> bool:
                    name = "batchledger_openai_errors_total"
                    return await metric(http, serve, token, name) >= 2

                await until("serve's OpenAI calls time out", timed_out, serve=serve)
                await emulator.knobs(response_delay_seconds=0)
                await wait_all_complete(store, n, WAIT)
                assert serve.proc.returncode is None, serve.log_tail()
            finally:
                await stop(serve.proc)
    reconciled = await store.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'BatchSubmitted'"
        " AND (data->>'reconciled')::boolean"
    )
    assert reconciled >= 1, "the create that timed out was not found by its metadata"
    await assert_one_openai_batch_per_batch(store, emulator)
    await assert_every_request_completed_once(store, n)
    await assert_batched_once_and_no_duplicate_openai_batch(store, emulator, n)


async def test_an_unknown_openai_status_on_one_batch_is_recorded_and_the_others_finish(
    db_dsn: str, emulator: Running, store: EventStore, tmp_path: Path
) -> None:
    n = 30
    await queue(store, n)
    token = await create_token(store.pool, "fault-watcher", Role.support)
    # The first batch created reports "paused" until the test lets it go.
    await emulator.knobs(odd_status="paused", odd_status_retrieves=1_000_000)
    env = serve_env(db_dsn, emulator, BATCH_MAX_REQUESTS="10")
    async with aiohttp.ClientSession() as http:
        serve = await launch(env, tmp_path / "serve.log", api=True, http=http)
        try:
            odd: list[EmuBatch] = []

            async def odd_created() -> bool:
                odd[:] = [b for b in emulator.state.batches.values() if b.odd_status]
                return bool(odd)

            await until("the odd batch is created", odd_created, serve=serve)
            odd_batch = odd[0]
            odd_id = (odd_batch.metadata or {})["batchledger_batch_id"]
            others_done = n - 10

            async def others_processed() -> bool:
                unrecognized = await count(store, "BatchStatusUnrecognized", f"batch-{odd_id}")
                return unrecognized > 0 and await count(store, "BatchProcessed") == 2

            await until("the other batches are processed", others_processed, serve=serve)
            # They finished while this one still said "paused": it held nothing up.
            assert odd_batch.odd_retrievals > 0
            events = await batch_events(store, odd_id)
            types = [t for t, _ in events]
            assert "BatchStatusUnrecognized" in types, types
            assert "BatchProcessed" not in types
            assert {d["openai_status"] for t, d in events if t == "BatchStatusUnrecognized"} == {
                "paused"
            }
            processed = await store.pool.fetch(
                "SELECT data->>'batch_id' AS bid FROM events WHERE event_type = 'BatchProcessed'"
            )
            assert len(processed) == 2
            assert odd_id not in {r["bid"] for r in processed}
            assert await count(store, "RequestCompleted") == others_done

            async def operators_see_it() -> bool:
                name = "batchledger_openai_unrecognized_statuses_total"
                seen = await metric(http, serve, token, name) >= 1
                return seen and "batch.status_unrecognized" in serve.log_text()

            await until("/metrics and the log show the unknown status", operators_see_it)

            odd_batch.odd_retrievals = 0  # OpenAI reports its real status again
            await wait_all_complete(store, n, WAIT)
            assert serve.proc.returncode is None, serve.log_tail()
        finally:
            await stop(serve.proc)
    assert (await batch_events(store, odd_id))[-1][0] == "BatchProcessed"
    await assert_every_request_completed_once(store, n)
    await assert_batched_once_and_no_duplicate_openai_batch(store, emulator, n)
    await assert_one_openai_batch_per_batch(store, emulator)


async def test_serve_killed_during_a_cancel_restarts_and_the_batch_ends_cancelled_and_requeued(
    db_dsn: str, emulator: Running, store: EventStore, tmp_path: Path
) -> None:
    n = 20
    await queue(store, n)
    token = await create_token(store.pool, "fault-admin", Role.admin)
    # The first batches run at OpenAI until cancelled; the later ones finish at once.
    await emulator.knobs(in_progress_seconds=3600)
    env = serve_env(db_dsn, emulator, BATCH_MAX_REQUESTS="10")
    async with aiohttp.ClientSession() as http:
        crashing = await launch(
            {**env, "BATCHLEDGER_FAULTS": "cancel.after_intent"},
            tmp_path / "crashing.log",
            api=True,
            http=http,
        )
        try:

            async def both_running() -> bool:
                running = [b for b in emulator.state.batches.values() if b.status == "in_progress"]
                return len(running) == 2 and len(await submitted(store)) == 2

            await until("both batches run at OpenAI", both_running, serve=crashing)
            first, second = sorted(await submitted(store))
            try:
                answer = await call(http, crashing, "POST", f"{API}/batches/{first}/cancel", token)
            except aiohttp.ClientConnectionError:
                pass  # serve exited at the fault point, mid-request
            else:
                raise AssertionError(
                    f"the cancel was answered {answer} instead of serve exiting at the fault"
                    f" point:\n{crashing.log_tail()}"
                )
            async with asyncio.timeout(30):
                code = await crashing.proc.wait()
        finally:
            await stop(crashing.proc)
        assert code == FAULT_EXIT_CODE, crashing.log_tail()
        # The intent is recorded; OpenAI was not asked.
        assert [t for t, _ in await batch_events(store, first)][-1] == "BatchCancelRequested"
        (at_openai,) = openai_batches_of(emulator, first)
        assert at_openai.status == "in_progress"

        await emulator.knobs(in_progress_seconds=0)
        serve = await launch(env, tmp_path / "serve.log", api=True, http=http)
        try:

            async def cancelled_at_openai() -> bool:
                return at_openai.status == "cancelled"

            await until("the restarted poller sends the cancel", cancelled_at_openai, serve=serve)
            # The other batch is cancelled the ordinary way, by the restarted serve.
            status, body = await call(http, serve, "POST", f"{API}/batches/{second}/cancel", token)
            assert status == 202, body
            assert body["openaiCancel"] == "sent"
            await wait_all_complete(store, n, WAIT)
            assert serve.proc.returncode is None, serve.log_tail()
        finally:
            await stop(serve.proc)

    for bid in (first, second):
        types = [t for t, _ in await batch_events(store, bid)]
        assert types.count("BatchCancelRequested") == 1, types
        assert types[-1] == "BatchProcessed", types
        observed = [
            d["openai_status"]
            for t, d in await batch_events(store, bid)
            if t == "BatchStatusObserved"
        ]
        assert observed[-1] == "cancelled", observed
        assert [b.status for b in openai_batches_of(emulator, bid)] == ["cancelled"]
    await assert_every_request_completed_once(store, n)
    await assert_one_openai_batch_per_batch(store, emulator)
    # Each request went back once (its batch was cancelled) and completed in a new batch.
    rows = await store.pool.fetch(
        "SELECT stream_id, array_agg(data->>'batch_id' ORDER BY stream_version) AS batches,"
        " count(*) FILTER (WHERE event_type = 'RequestRequeued') AS requeued"
        " FROM events WHERE event_type IN ('RequestBatched', 'RequestRequeued')"
        " AND stream_id LIKE 'request-%' GROUP BY stream_id"
    )
    assert len(rows) == n
    for r in rows:
        batches = [b for b in r["batches"] if b is not None]
        assert len(batches) == 2, r
        assert batches[0] in (first, second), r
        assert batches[1] not in (first, second), r
        assert r["requeued"] == 1, r
