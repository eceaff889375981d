"""The application layer's use cases and pure rules, on the in-memory event store.

No PostgreSQL and no HTTP: a Ledger on InMemoryEventStore, and FakeOpenAI where a use case
talks to OpenAI. Aggregates reach a state only through the use cases, Ledger.execute or a
Unit; every assertion reads events or states back through the ledger.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import pytest

from eventstore import InMemoryEventStore, StreamAppend
from service.adapters.openai_gateway import OpenAIGateway, PermanentError, TransientError
from service.application.batching import Batching, Candidate, chunk, group, jsonl_line
from service.application.errors import Missing, NotCancellable, StillChanging
from service.application.ingestion import Ingestion
from service.application.ledger import Actor, Ledger, Unit
from service.application.polling import Polling
from service.application.requests import Queued, Requeued, queue_requests, requeue_requests
from service.ids import uuid7
from service.tools.synthetic import ANALYSIS, run_batch
from statemachine.batch import BATCHES, Batch
from statemachine.commands import AssignToBatch, ObserveStatus, QueueRequest
from statemachine.events import (
    BatchCancelRequested,
    BatchOutputLineRejected,
    BatchProcessed,
    BatchRequestsReleased,
    BatchSubmissionFailed,
    BatchSubmitted,
    RequestCompleted,
    RequestCounts,
    RequestFailed,
    RequestQueued,
    RequestRequeued,
    Usage,
)
from statemachine.request import REQUESTS, Request
from statemachine.states import BatchState as BS
from statemachine.states import RequestState as RS
from tests.unit.fake_openai import FakeOpenAI, as_gateway

MODEL = "gpt-4o-mini"
PRICES = {MODEL: (1.0, 2.0), "gpt-4o": (3.0, 4.0)}  # USD per 1M tokens, before the discount
SCHEDULER = Actor("scheduler")
ADMIN = Actor("ops-token")
OTHER = Actor("other-writer")

# -- the world the use cases run in ---------------------------------------------------


def ticking_clock() -> Callable[[], datetime]:
    """A fixed start that moves one millisecond per call."""
    ticks = itertools.count()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return lambda: start + timedelta(milliseconds=next(ticks))


class InterleavingStore(InMemoryEventStore):
    """The in-memory store; `before_next_append` lets another writer in just before a commit."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock=clock)
        self.before_next_append: Callable[[], Awaitable[object]] | None = None

    async def append_many(self, appends: Sequence[StreamAppend]) -> int:
        hook, self.before_next_append = self.before_next_append, None
        if hook is not None:
            await hook()
        return await super().append_many(appends)


class RecordingLog:
    """A structlog-shaped logger that keeps the event names it was given."""

    def __init__(self, records: list[str] | None = None) -> None:
        self.records = records if records is not None else []

    def bind(self, **_: Any) -> RecordingLog:
        return RecordingLog(self.records)

    def info(self, event: str, **_: Any) -> None:
        self.records.append(event)

    warning = error = info


def queue_command(
    rid: str, *, company: str = "acme", model: str = MODEL, transcript: str | None = None
) -> QueueRequest:
    return QueueRequest(
        request_id=rid,
        company_id=company,
        session_id=f"s-{rid}",
        model=model,
        transcript=transcript or f"User: question {rid}?",
    )


class World:
    """One ledger on the in-memory store, a fake OpenAI, and the use cases wired on them."""

    def __init__(
        self,
        *,
        max_requests: int = 100,
        max_bytes: int = 1_000_000,
        max_attempts: int = 3,
        attempts: int = 5,
    ) -> None:
        clock = ticking_clock()
        self.store = InterleavingStore(clock)
        self.ledger = Ledger(self.store, clock=clock, new_id=uuid7, attempts=attempts)
        self.openai = FakeOpenAI()
        self.log = RecordingLog()
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.batching = self.new_batching("b")
        poller = Actor("batch-poller")
        self.ingestion = Ingestion(
            self.ledger,
            as_gateway(self.openai),
            max_attempts=max_attempts,
            prices=PRICES,
            actor=poller,
        )
        self.polling = Polling(
            self.ledger, as_gateway(self.openai), self.ingestion, actor=poller, log=self.log
        )

    def new_batching(self, prefix: str) -> Batching:
        """A Batching instance (another scheduler) naming its batches `<prefix>1`, `<prefix>2`."""
        numbers = itertools.count(1)
        return Batching(
            self.ledger,
            as_gateway(self.openai),
            max_requests=self.max_requests,
            max_bytes=self.max_bytes,
            actor=Actor("batch-creator"),
            log=self.log,
            new_batch_id=lambda: f"{prefix}{next(numbers)}",
        )

    async def queue(
        self, n: int, *, company: str = "acme", model: str = MODEL, prefix: str = "r"
    ) -> list[str]:
        """Queue n new requests; their ids."""
        ids = [f"{prefix}{i}" for i in range(n)]
        commands = [queue_command(rid, company=company, model=model) for rid in ids]
        assert await queue_requests(self.ledger, commands, SCHEDULER) == Queued(ids, [])
        return ids

    async def submitted(self, ids: list[str]) -> tuple[str, str]:
        """Plan ids as one batch and submit it; (our batch id, OpenAI's)."""
        (bid,) = await self.batching.plan(ids)
        await self.batching.submit(bid)
        batch = await self.batch(bid)
        assert batch.state is BS.VALIDATING
        assert batch.openai_batch_id is not None
        return bid, batch.openai_batch_id

    async def ended(
        self,
        ids: list[str],
        status: Any = "completed",
        *,
        output: Sequence[bytes] = (),
        errors: Sequence[bytes] = (),
        batch_errors: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Submit ids as one batch, let OpenAI end it so, and poll it once; our batch id."""
        bid, openai_id = await self.submitted(ids)
        self.openai.finish(
            openai_id, status, output=output, errors=errors, batch_errors=batch_errors
        )
        await self.polling.poll(bid)
        return bid

    async def batch(self, bid: str) -> Batch:
        loaded = await self.ledger.load(BATCHES, bid)
        assert loaded is not None
        return loaded

    async def request(self, rid: str) -> Request:
        loaded = await self.ledger.load(REQUESTS, rid)
        assert loaded is not None
        return loaded

    async def states(self, ids: Sequence[str]) -> dict[str, RS]:
        loaded = await self.ledger.load_many(REQUESTS, ids)
        return {rid: r.state for rid, r in loaded.items() if r is not None}

    async def types(self, stream_id: str) -> list[str]:
        return [e.type for e in await self.store.read_stream(stream_id)]

    async def request_events(self, rid: str) -> list[Any]:
        return (await self.ledger.read_many(REQUESTS, [rid]))[rid]

    async def batch_events(self, bid: str) -> list[Any]:
        return (await self.ledger.read_many(BATCHES, [bid]))[bid]


def output_line(rid: str, *, prompt_tokens: int = 10, completion_tokens: int = 5) -> bytes:
    """A line of an output file: a 200 with a valid analysis."""
    body = {
        "id": f"chatcmpl-{rid}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": msgspec.json.encode(ANALYSIS).decode()},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    response = {"status_code": 200, "request_id": f"req-{rid}", "body": body}
    return msgspec.json.encode({"id": f"line-{rid}", "custom_id": rid, "response": response})


def error_line(rid: str, status: int = 500, code: str = "server_error") -> bytes:
    """A line of an error file: a non-200 response with an OpenAI error body."""
    body = {"error": {"message": f"{code} happened", "type": "api_error", "code": code}}
    response = {"status_code": status, "request_id": f"req-{rid}", "body": body}
    return msgspec.json.encode({"id": f"line-{rid}", "custom_id": rid, "response": response})


def candidate(rid: str, size: int) -> Candidate:
    """A waiting request whose input line is `size` bytes (size + 1 with its newline)."""
    request = Request(request_id=rid, company_id="acme", session_id=f"s-{rid}", model=MODEL)
    return Candidate(request, b"x" * size)


def ids_of(chunks: list[list[Candidate]]) -> list[list[str]]:
    return [[c.request.request_id for c in part] for part in chunks]


# -- the fake stays a fake of our adapter ---------------------------------------------


def test_the_fake_gateway_has_every_method_of_the_real_one_with_the_same_signature() -> None:
    methods = {n: f for n, f in vars(OpenAIGateway).items() if inspect.isfunction(f)}
    del methods["__init__"], methods["_fail"]
    expected = {"upload", "create_batch", "find_batch", "check", "retrieve", "cancel", "lines"}
    assert set(methods) == expected
    for name, real in methods.items():
        fake = getattr(FakeOpenAI, name)
        assert inspect.signature(fake) == inspect.signature(real), name
        assert inspect.iscoroutinefunction(fake) == inspect.iscoroutinefunction(real), name
        assert inspect.isasyncgenfunction(fake) == inspect.isasyncgenfunction(real), name


# -- chunk and group: pure rules ------------------------------------------------------


def test_chunk_splits_at_max_requests_keeping_order() -> None:
    candidates = [candidate(f"r{i}", 10) for i in range(5)]
    parts = chunk(candidates, max_requests=2, max_bytes=10_000)
    assert ids_of(parts) == [["r0", "r1"], ["r2", "r3"], ["r4"]]


def test_chunk_splits_at_max_bytes_keeping_order() -> None:
    candidates = [candidate(f"r{i}", 9) for i in range(5)]  # 10 bytes each with the newline
    parts = chunk(candidates, max_requests=100, max_bytes=25)
    assert ids_of(parts) == [["r0", "r1"], ["r2", "r3"], ["r4"]]


def test_chunk_fills_a_chunk_up_to_exactly_max_bytes() -> None:
    candidates = [candidate(f"r{i}", 9) for i in range(4)]
    assert ids_of(chunk(candidates, max_requests=100, max_bytes=20)) == [
        ["r0", "r1"],
        ["r2", "r3"],
    ]


def test_chunk_gives_an_oversized_line_a_chunk_of_its_own() -> None:
    candidates = [candidate("small0", 9), candidate("huge", 100), candidate("small1", 9)]
    parts = chunk(candidates, max_requests=100, max_bytes=25)
    assert ids_of(parts) == [["small0"], ["huge"], ["small1"]]


async def test_group_sorts_waiting_requests_by_company_and_model_with_their_input_line() -> None:
    w = World()
    acme = await w.queue(2, prefix="a")
    globex = await w.queue(1, company="globex", model="gpt-4o", prefix="g")
    await w.ledger.execute(REQUESTS, "a1", AssignToBatch(batch_id="elsewhere"), OTHER)
    groups = group(await w.ledger.read_many(REQUESTS, [*acme, *globex, "ghost"]))
    assert {key: [c.request.request_id for c in cs] for key, cs in groups.items()} == {
        ("acme", MODEL): ["a0"],
        ("globex", "gpt-4o"): ["g0"],
    }
    (g0,) = groups[("globex", "gpt-4o")]
    assert g0.line == jsonl_line("g0", "gpt-4o", "User: question g0?")


# -- plan -----------------------------------------------------------------------------


async def test_two_companies_and_two_models_are_planned_as_four_batches() -> None:
    w = World()
    ids = []
    for company in ("acme", "globex"):
        for model in (MODEL, "gpt-4o"):
            ids += await w.queue(2, company=company, model=model, prefix=f"{company}-{model}-")
    planned = await w.batching.plan(ids)
    assert len(planned) == 4
    batches = [await w.batch(bid) for bid in planned]
    assert sorted((b.company_id, b.model, b.request_ids) for b in batches) == [
        (company, model, [f"{company}-{model}-0", f"{company}-{model}-1"])
        for company in ("acme", "globex")
        for model in ("gpt-4o", MODEL)
    ]


async def test_plan_skips_listed_requests_that_no_longer_wait_in_their_stream() -> None:
    w = World()
    ids = await w.queue(4)
    (earlier,) = await w.batching.plan(["r1"])  # r1 is in a batch already
    await run_batch(w.ledger, "old", ["r2"])  # r2 is complete
    planned = await w.batching.plan([*ids, "ghost"])  # the caller's list lags behind
    assert len(planned) == 1
    assert (await w.batch(planned[0])).request_ids == ["r0", "r3"]
    assert (await w.request("r1")).batch_id == earlier
    assert await w.types("request-r2") == ["RequestQueued", "RequestBatched", "RequestCompleted"]
    assert await w.store.read_stream("request-ghost") == []


async def test_plan_commits_the_batch_and_every_request_batched_in_one_append() -> None:
    w = World()
    ids = await w.queue(3)
    before = await w.store.head()
    (bid,) = await w.batching.plan(ids)
    written = await w.store.read_all(after=before)
    assert sorted(e.type for e in written) == ["BatchPlanned"] + ["RequestBatched"] * 3
    assert len({e.recorded_at for e in written}) == 1  # one append
    assert (await w.batch(bid)).request_ids == ids
    for rid in ids:
        request = await w.request(rid)
        assert (request.state, request.batch_id, request.attempts) == (
            RS.BATCHING_IN_PROGRESS,
            bid,
            1,
        )


async def test_planning_the_same_ids_twice_plans_nothing_the_second_time() -> None:
    w = World()
    ids = await w.queue(3)
    assert await w.batching.plan(ids) == ["b1"]
    head = await w.store.head()
    assert await w.batching.plan(ids) == []
    assert await w.store.head() == head


async def test_a_plan_whose_request_moved_before_the_commit_writes_nothing() -> None:
    w = World()
    ids = await w.queue(3)

    async def another_writer_batches_r1() -> None:
        await w.ledger.execute(REQUESTS, "r1", AssignToBatch(batch_id="elsewhere"), OTHER)

    w.store.before_next_append = another_writer_batches_r1
    assert await w.batching.plan(ids) == []
    assert await w.store.read_stream("batch-b1") == []
    assert await w.types("request-r0") == ["RequestQueued"]
    assert await w.types("request-r2") == ["RequestQueued"]
    assert (await w.request("r1")).batch_id == "elsewhere"
    assert "batch.plan_conflict" in w.log.records
    # The next pass plans the ones that still wait.
    assert await w.batching.plan(ids) == ["b2"]
    assert (await w.batch("b2")).request_ids == ["r0", "r2"]


async def test_two_planners_of_the_same_requests_leave_one_batch_with_each_request_once() -> None:
    w = World()
    ids = await w.queue(3)
    first, second = w.new_batching("first-"), w.new_batching("second-")
    w.store.before_next_append = lambda: second.plan(ids)  # second commits between read and commit
    assert await first.plan(ids) == []
    assert await w.store.read_stream("batch-first-1") == []
    assert (await w.batch("second-1")).request_ids == ids
    for rid in ids:
        assert await w.types(f"request-{rid}") == ["RequestQueued", "RequestBatched"]
        assert (await w.request(rid)).batch_id == "second-1"


# -- queue and requeue ----------------------------------------------------------------


async def test_queue_requests_creates_new_ones_and_reports_existing_ones_untouched() -> None:
    w = World()
    first = await queue_requests(w.ledger, [queue_command("r1"), queue_command("r2")], SCHEDULER)
    assert first == Queued(created=["r1", "r2"], existing=[])
    again = [queue_command("r2", transcript="a different transcript"), queue_command("r3")]
    assert await queue_requests(w.ledger, again, SCHEDULER) == Queued(
        created=["r3"], existing=["r2"]
    )
    assert await queue_requests(w.ledger, again, SCHEDULER) == Queued(
        created=[], existing=["r2", "r3"]
    )
    assert await w.types("request-r2") == ["RequestQueued"]
    (queued,) = await w.request_events("r2")
    assert isinstance(queued, RequestQueued)
    assert queued.transcript == "User: question r2?"


async def failed_completed_and_waiting(w: World) -> list[str]:
    """r0 and r2 failed for good, r1 complete, r3 waiting."""
    ids = await w.queue(4)
    await run_batch(w.ledger, "old", ids[:3], fail_every=2, retryable=False)
    assert await w.states(ids) == {
        "r0": RS.PROCESSING_FAILED,
        "r1": RS.PROCESSING_COMPLETE,
        "r2": RS.PROCESSING_FAILED,
        "r3": RS.PENDING_BATCHING,
    }
    return ids


async def test_requeue_requests_requeues_only_failed_ones_and_counts_the_rest() -> None:
    w = World()
    ids = await failed_completed_and_waiting(w)
    done = await requeue_requests(w.ledger, ["r0", "r1", "r3", "ghost", "r0"], ADMIN)
    assert done == Requeued(requeued=1, not_found=1, skipped=2)
    assert await w.states(ids) == {
        "r0": RS.PENDING_BATCHING,
        "r1": RS.PROCESSING_COMPLETE,
        "r2": RS.PROCESSING_FAILED,  # not listed
        "r3": RS.PENDING_BATCHING,
    }
    last = (await w.request_events("r0"))[-1]
    assert last == RequestRequeued(request_id="r0", reason="admin")
    assert (await w.store.read_stream("request-r0"))[-1].metadata.actor == "ops-token"


async def test_requeue_requests_repeated_requeues_nothing_the_second_time() -> None:
    w = World()
    await failed_completed_and_waiting(w)
    assert (await requeue_requests(w.ledger, ["r0", "r2"], ADMIN)).requeued == 2
    head = await w.store.head()
    again = await requeue_requests(w.ledger, ["r0", "r2"], ADMIN)
    assert again == Requeued(requeued=0, not_found=0, skipped=2)
    assert await w.store.head() == head
    assert (await w.types("request-r0")).count("RequestRequeued") == 1


# -- Ledger.run -----------------------------------------------------------------------


def observe_under_a_moving_stream(
    w: World, bid: str, moves: int
) -> Callable[[Unit], Awaitable[int]]:
    """Work that decides an observation of `bid`; the first `moves` times another writer
    records one first, so the unit's commit conflicts."""
    counts = itertools.count(1)
    calls: list[int] = []

    def observation() -> ObserveStatus:
        return ObserveStatus(
            openai_status="in_progress", request_counts=RequestCounts(total=next(counts))
        )

    async def work(unit: Unit) -> int:
        calls.append(1)
        batch = await w.ledger.load(BATCHES, bid)
        unit.decide(BATCHES, bid, batch, observation())
        if len(calls) <= moves:
            await w.ledger.execute(BATCHES, bid, observation(), OTHER)
        return len(calls)

    return work


async def test_ledger_run_reads_and_decides_again_after_a_conflict() -> None:
    w = World()
    bid, _ = await w.submitted(await w.queue(1))
    before = len(await w.store.read_stream("batch-" + bid))
    work = observe_under_a_moving_stream(w, bid, moves=1)
    assert await w.ledger.run(SCHEDULER, work) == 2  # the second attempt committed
    after = (await w.store.read_stream("batch-" + bid))[before:]
    assert [(e.type, e.metadata.actor) for e in after] == [
        ("BatchStatusObserved", "other-writer"),
        ("BatchStatusObserved", "scheduler"),
    ]


async def test_ledger_run_raises_still_changing_after_its_attempts() -> None:
    w = World(attempts=3)
    bid, _ = await w.submitted(await w.queue(1))
    before = len(await w.store.read_stream("batch-" + bid))
    work = observe_under_a_moving_stream(w, bid, moves=1_000)
    with pytest.raises(StillChanging, match="3 attempts"):
        await w.ledger.run(SCHEDULER, work)
    after = (await w.store.read_stream("batch-" + bid))[before:]
    assert [e.metadata.actor for e in after] == ["other-writer"] * 3  # nothing of the unit's


# -- submit ---------------------------------------------------------------------------


@pytest.mark.parametrize("fresh_instance", [False, True], ids=["planner", "after-restart"])
async def test_submit_takes_a_planned_batch_through_the_upload_to_validating(
    fresh_instance: bool,
) -> None:
    w = World()
    ids = await w.queue(2)
    (bid,) = await w.batching.plan(ids)
    submitter = w.new_batching("unused") if fresh_instance else w.batching
    await submitter.submit(bid)
    assert await w.types(f"batch-{bid}") == [
        "BatchPlanned",
        "BatchUploadStarted",
        "BatchFileUploaded",
        "BatchSubmitted",
    ]
    batch = await w.batch(bid)
    assert batch.state is BS.VALIDATING
    assert batch.upload_filename == f"batchledger-{bid}.jsonl"
    assert batch.input_file_id is not None
    expected = b"".join(jsonl_line(rid, MODEL, f"User: question {rid}?") + b"\n" for rid in ids)
    assert w.openai.files[batch.input_file_id] == expected
    (created,) = w.openai.created_for(bid)
    assert (created.id, created.input_file_id) == (batch.openai_batch_id, batch.input_file_id)
    assert (await w.batch_events(bid))[-1] == BatchSubmitted(
        batch_id=bid, openai_batch_id=created.id, input_file_id=batch.input_file_id
    )


async def test_submit_records_a_permanent_refusal_as_batch_submission_failed() -> None:
    w = World()
    (bid,) = await w.batching.plan(await w.queue(2))
    w.openai.fail("upload", PermanentError("invalid_file", "the file is not JSONL"))
    await w.batching.submit(bid)
    assert (await w.batch_events(bid))[-1] == BatchSubmissionFailed(
        batch_id=bid, code="invalid_file", message="the file is not JSONL"
    )
    batch = await w.batch(bid)
    assert (batch.state, batch.failure_code) == (BS.FAILED, "invalid_file")
    assert w.openai.batches == {}


@pytest.mark.parametrize("step", ["upload", "find_batch", "create_batch"])
async def test_submit_after_a_transient_error_leaves_the_batch_to_retry(step: str) -> None:
    w = World()
    (bid,) = await w.batching.plan(await w.queue(2))
    w.openai.fail(step, TransientError("503 Service Unavailable"))
    await w.batching.submit(bid)
    batch = await w.batch(bid)
    assert batch.state is BS.UPLOADING
    assert batch.failure_code is None
    assert "BatchSubmitted" not in await w.types(f"batch-{bid}")
    await w.batching.submit(bid)  # the next tick
    assert (await w.batch(bid)).state is BS.VALIDATING
    assert len(w.openai.files) == 1  # uploaded once
    assert len(w.openai.created_for(bid)) == 1


async def test_submit_finds_a_batch_created_before_a_crash_instead_of_creating_another() -> None:
    w = World()
    (bid,) = await w.batching.plan(await w.queue(1))
    w.openai.fail("create_batch", TransientError("timeout"))
    await w.batching.submit(bid)
    input_file_id = (await w.batch(bid)).input_file_id
    assert input_file_id is not None
    lost = await w.openai.create_batch(input_file_id, bid)  # created, but the reply was lost
    await w.batching.submit(bid)
    assert (await w.batch_events(bid))[-1] == BatchSubmitted(
        batch_id=bid, openai_batch_id=lost.id, input_file_id=input_file_id, reconciled=True
    )
    assert w.openai.created_for(bid) == [lost]


# -- ingestion ------------------------------------------------------------------------


async def test_a_completed_line_completes_its_request_with_usage_and_cost() -> None:
    w = World()
    ids = await w.queue(1)
    bid = await w.ended(ids, output=[output_line("r0", prompt_tokens=10, completion_tokens=5)])
    assert (await w.request_events("r0"))[-1] == RequestCompleted(
        request_id="r0",
        batch_id=bid,
        analysis=ANALYSIS,
        usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
        cost_micro_usd=10,  # (10 x 1 + 5 x 2) micro-USD, halved by the batch discount
        openai_request_id="req-r0",
    )
    assert (await w.request("r0")).state is RS.PROCESSING_COMPLETE
    assert (await w.batch(bid)).state is BS.PROCESSED
    assert (await w.batch_events(bid))[-1] == BatchProcessed(
        batch_id=bid, completed=1, failed=0, missing=0
    )


@pytest.mark.parametrize(
    ("status", "retried"), [(500, True), (429, True), (400, False)], ids=["500", "429", "400"]
)
async def test_an_error_line_is_retried_only_for_server_errors_and_rate_limits(
    status: int, retried: bool
) -> None:
    w = World()
    ids = await w.queue(1)
    bid = await w.ended(ids, errors=[error_line("r0", status, code=f"code_{status}")])
    failed = RequestFailed(
        request_id="r0",
        batch_id=bid,
        code=f"code_{status}",
        message=f"code_{status} happened",
        retryable=retried,
        attempt=1,
    )
    events = (await w.request_events("r0"))[2:]
    if retried:
        assert events == [failed, RequestRequeued(request_id="r0", reason="retry")]
        assert (await w.request("r0")).state is RS.PENDING_BATCHING
    else:
        assert events == [failed]
        assert (await w.request("r0")).state is RS.PROCESSING_FAILED
    assert (await w.batch_events(bid))[-1] == BatchProcessed(
        batch_id=bid, completed=0, failed=1, missing=0
    )


async def test_a_request_no_line_mentions_fails_as_missing_and_is_retried() -> None:
    w = World()
    ids = await w.queue(2)
    bid = await w.ended(ids, output=[output_line("r0")])
    assert await w.states(ids) == {"r0": RS.PROCESSING_COMPLETE, "r1": RS.PENDING_BATCHING}
    failed, requeued = (await w.request_events("r1"))[2:]
    assert isinstance(failed, RequestFailed)
    assert (failed.code, failed.retryable, failed.batch_id) == ("missing", True, bid)
    assert requeued == RequestRequeued(request_id="r1", reason="retry")
    assert (await w.batch_events(bid))[-1] == BatchProcessed(
        batch_id=bid, completed=1, failed=0, missing=1
    )


async def test_unknown_custom_id_and_malformed_lines_are_recorded_as_rejected_not_applied() -> None:
    w = World()
    ids = await w.queue(1)
    output = [b"{not json", output_line("r0"), output_line("stranger")]
    bid = await w.ended(ids, output=output)
    batch = await w.batch(bid)
    rejected = [e for e in await w.batch_events(bid) if isinstance(e, BatchOutputLineRejected)]
    assert [(e.file_id, e.line, e.kind, e.custom_id) for e in rejected] == [
        (batch.output_file_id, 1, "malformed", None),
        (batch.output_file_id, 3, "unknown_custom_id", "stranger"),
    ]
    assert (await w.batch_events(bid))[-1] == BatchProcessed(
        batch_id=bid, completed=1, failed=0, missing=0, rejected_lines=2
    )
    assert (await w.request("r0")).state is RS.PROCESSING_COMPLETE
    assert await w.store.read_stream("request-stranger") == []


async def test_a_second_line_for_one_request_is_rejected_and_the_first_applies() -> None:
    w = World()
    ids = await w.queue(1)
    bid = await w.ended(ids, output=[output_line("r0")], errors=[error_line("r0")])
    batch = await w.batch(bid)
    assert (await w.batch_events(bid))[-2:] == [
        BatchOutputLineRejected(
            batch_id=bid,
            file_id=batch.error_file_id or "",
            line=1,
            kind="duplicate_custom_id",
            custom_id="r0",
        ),
        BatchProcessed(batch_id=bid, completed=1, failed=0, missing=0, rejected_lines=1),
    ]
    assert (await w.request("r0")).state is RS.PROCESSING_COMPLETE


async def test_ingesting_a_batch_twice_changes_nothing() -> None:
    w = World()
    ids = await w.queue(2)
    bid = await w.ended(ids, output=[output_line("r0")], errors=[error_line("r1")])
    head = await w.store.head()
    assert await w.ingestion.ingest(bid) is None
    assert await w.polling.finish(bid) == 0
    assert await w.polling.poll(bid) == 0
    assert await w.store.head() == head


async def test_retries_stop_at_max_attempts_and_the_request_fails_for_good() -> None:
    w = World(max_attempts=2)
    ids = await w.queue(1)
    await w.ended(ids, errors=[error_line("r0", 500)])
    assert (await w.request("r0")).state is RS.PENDING_BATCHING
    await w.ended(ids, errors=[error_line("r0", 500)])
    request = await w.request("r0")
    assert (request.state, request.attempts) == (RS.PROCESSING_FAILED, 2)
    events = await w.request_events("r0")
    assert [e.attempt for e in events if isinstance(e, RequestFailed)] == [1, 2]
    assert [type(e).__name__ for e in events].count("RequestRequeued") == 1
    assert await w.batching.plan(ids) == []


# -- release of a failed batch --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "retryable", "after"),
    [
        ("token_limit_exceeded", True, RS.PENDING_BATCHING),
        ("model_not_found", False, RS.PROCESSING_FAILED),
    ],
    ids=["retryable", "not-retryable"],
)
async def test_release_of_a_failed_batch_requeues_on_a_retryable_code_and_fails_otherwise(
    code: str, retryable: bool, after: RS
) -> None:
    w = World()
    ids = await w.queue(2)
    bid = await w.ended(ids, "failed", batch_errors=[(code, "the batch failed")])
    batch = await w.batch(bid)
    assert (batch.state, batch.released) == (BS.FAILED, True)
    assert (await w.batch_events(bid))[-1] == BatchRequestsReleased(
        batch_id=bid, requeued=2 if retryable else 0, failed=0 if retryable else 2
    )
    assert await w.states(ids) == dict.fromkeys(ids, after)
    for rid in ids:
        failed = (await w.request_events(rid))[2]
        assert isinstance(failed, RequestFailed)
        assert (failed.code, failed.retryable, failed.batch_id) == (code, retryable, bid)
    assert await w.ingestion.release(bid) is None  # once only


# -- cancel ---------------------------------------------------------------------------


async def test_cancel_of_an_unknown_batch_is_missing() -> None:
    w = World()
    with pytest.raises(Missing):
        await w.batching.cancel("nope", ADMIN)


async def test_cancel_of_a_batch_not_running_at_openai_is_not_cancellable() -> None:
    w = World()
    finished = await w.ended(await w.queue(1, prefix="f"), output=[output_line("f0")])
    (unsubmitted,) = await w.batching.plan(await w.queue(1, prefix="u"))
    for bid in (finished, unsubmitted):
        head = await w.store.head()
        with pytest.raises(NotCancellable):
            await w.batching.cancel(bid, ADMIN)
        assert await w.store.head() == head
    assert "cancel" not in w.openai.calls


async def test_cancel_is_recorded_before_openai_and_the_poller_sends_it_after_an_outage() -> None:
    w = World()
    bid, openai_id = await w.submitted(await w.queue(1))
    w.openai.fail("cancel", TransientError("502 Bad Gateway"))
    assert await w.batching.cancel(bid, ADMIN) == "deferred"
    assert (await w.batch(bid)).state is BS.CANCELLING
    assert "BatchCancelRequested" in await w.types(f"batch-{bid}")
    assert w.openai.batches[openai_id].status == "validating"  # OpenAI never took it
    await w.polling.poll(bid)
    assert w.openai.calls.count("cancel") == 2
    assert w.openai.batches[openai_id].status == "cancelling"
    await w.polling.poll(bid)  # OpenAI has it now: it is not sent a third time
    assert w.openai.calls.count("cancel") == 2


async def test_a_cancel_racing_the_batch_to_its_end_sends_nothing_to_openai() -> None:
    w = World()
    bid, openai_id = await w.submitted(await w.queue(1, prefix="c"))
    w.openai.finish(openai_id, "completed", output=[output_line("c0")])

    async def poller_observes_first() -> None:
        await w.polling.poll(bid)  # the batch ends and is ingested before the cancel lands

    w.store.before_next_append = poller_observes_first
    with pytest.raises(NotCancellable):
        await w.batching.cancel(bid, ADMIN)
    assert "cancel" not in w.openai.calls
    assert "BatchCancelRequested" not in await w.types(f"batch-{bid}")
    assert (await w.batch(bid)).state is BS.PROCESSED


async def test_a_cancel_openai_refuses_leaves_the_batch_to_end_as_openai_reports() -> None:
    w = World()
    bid, openai_id = await w.submitted(await w.queue(1, prefix="x"))
    w.openai.fail("cancel", PermanentError("batch_not_cancellable", "it already completed"))
    assert await w.batching.cancel(bid, ADMIN) == "refused"
    w.openai.finish(openai_id, "completed", output=[output_line("x0")])
    await w.polling.poll(bid)
    assert (await w.batch(bid)).state is BS.PROCESSED
    assert (await w.request("x0")).state is RS.PROCESSING_COMPLETE


async def test_cancel_of_a_running_batch_records_batch_cancel_requested() -> None:
    w = World()
    bid, openai_id = await w.submitted(await w.queue(1))
    await w.batching.cancel(bid, ADMIN)
    assert (await w.batch_events(bid))[-1] == BatchCancelRequested(batch_id=bid)
    assert (await w.store.read_stream(f"batch-{bid}"))[-1].metadata.actor == "ops-token"
    assert (await w.batch(bid)).state is BS.CANCELLING
    assert w.openai.batches[openai_id].status == "cancelling"


# -- an OpenAI status our table does not know -------------------------------------------


async def test_an_unknown_openai_status_is_recorded_once_raw_and_moves_nothing() -> None:
    w = World()
    bid, openai_id = await w.submitted(await w.queue(1, prefix="u"))
    w.openai.finish(openai_id, cast(Any, "paused"))
    await w.polling.poll(bid)
    await w.polling.poll(bid)  # the same odd status again is nothing new
    assert (await w.types(f"batch-{bid}")).count("BatchStatusUnrecognized") == 1
    batch = await w.batch(bid)
    assert (batch.state, batch.openai_status) == (BS.VALIDATING, "paused")
    assert "batch.status_unrecognized" in w.log.records
    w.openai.finish(openai_id, "completed", output=[output_line("u0")])
    await w.polling.poll(bid)
    assert (await w.batch(bid)).state is BS.PROCESSED
    assert (await w.request("u0")).state is RS.PROCESSING_COMPLETE


# -- the batch creator reads a page of request streams at a time ------------------------


def paged(w: World, page_size: int, prefix: str = "p") -> Batching:
    """A Batching on w's ledger that reads `page_size` request streams at a time."""
    numbers = itertools.count(1)
    return Batching(
        w.ledger,
        as_gateway(w.openai),
        max_requests=w.max_requests,
        max_bytes=w.max_bytes,
        actor=Actor("batch-creator"),
        log=w.log,
        new_batch_id=lambda: f"{prefix}{next(numbers)}",
        page_size=page_size,
    )


def count_reads(w: World, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many streams each multi-stream read of w's store asks for, from now on."""
    reads: list[int] = []
    read = w.store.read_streams

    async def counted(stream_ids: Sequence[str]) -> Any:
        reads.append(len(stream_ids))
        return await read(stream_ids)

    monkeypatch.setattr(w.store, "read_streams", counted)
    return reads


def input_file(ids: Sequence[str]) -> bytes:
    return b"".join(jsonl_line(rid, MODEL, f"User: question {rid}?") + b"\n" for rid in ids)


async def test_plan_reads_a_page_of_streams_at_a_time_and_fills_batches_across_pages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World(max_requests=4)
    ids = await w.queue(10)
    reads = count_reads(w, monkeypatch)
    planned = await paged(w, 3).plan(ids)
    assert reads == [3, 3, 3, 1]
    assert [(await w.batch(bid)).request_ids for bid in planned] == [ids[:4], ids[4:8], ids[8:]]


async def test_a_page_planner_drops_only_the_batch_that_conflicted_and_plans_the_rest() -> None:
    w = World(max_requests=4)
    ids = await w.queue(10)

    async def another_writer_batches_r1() -> None:
        await w.ledger.execute(REQUESTS, "r1", AssignToBatch(batch_id="elsewhere"), OTHER)

    w.store.before_next_append = another_writer_batches_r1  # before the first batch's commit
    pages, planned = paged(w, 3).pages(), []
    for start in range(0, len(ids), 3):
        planned += await pages.add(ids[start : start + 3])
    planned += await pages.flush()
    assert [(await w.batch(bid)).request_ids for bid in planned] == [ids[4:8], ids[8:]]
    assert "batch.plan_conflict" in w.log.records
    assert await w.states(ids[:4]) == {  # the next pass plans the three that still wait
        "r0": RS.PENDING_BATCHING,
        "r1": RS.BATCHING_IN_PROGRESS,
        "r2": RS.PENDING_BATCHING,
        "r3": RS.PENDING_BATCHING,
    }


async def test_a_planned_file_is_dropped_when_another_instance_submitted_it_first() -> None:
    w = World()
    (bid,) = await w.batching.plan(await w.queue(3))
    await w.new_batching("other-").submit(bid)  # e.g. after the scheduler's lock moved
    await w.batching.submit(bid)  # nothing left to do here
    assert w.batching._files == {}
    assert len(w.openai.created_for(bid)) == 1


async def test_a_file_rebuilt_after_a_restart_reads_a_page_of_streams_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    ids = await w.queue(7)
    (bid,) = await w.batching.plan(ids)
    reads = count_reads(w, monkeypatch)
    await paged(w, 3, prefix="unused").submit(bid)  # a fresh instance: nothing cached
    assert reads == [3, 3, 1]
    batch = await w.batch(bid)
    assert batch.input_file_id is not None
    assert w.openai.files[batch.input_file_id] == input_file(ids)
