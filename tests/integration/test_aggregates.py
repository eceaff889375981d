"""Application services on the real event store: load, decide, append at the expected version."""

from __future__ import annotations

import asyncio

import pytest

from eventstore import ConcurrencyError, EventStore
from service.application.ledger import Actor, Aggregates
from service.tools.synthetic import aggregates as synthetic_aggregates
from statemachine.commands import (
    AssignToBatch,
    FinishIngestion,
    ObserveStatus,
    PlanBatch,
    QueueRequest,
    RecordSubmission,
    RecordUpload,
    StartUpload,
)
from statemachine.errors import AlreadyExists, InvalidTransition
from statemachine.events import RequestCounts
from statemachine.request import decide_many
from statemachine.states import BatchState, RequestState

ADMIN = Actor("ops-token", correlation_id="corr-9")


@pytest.fixture
def aggregates(store: EventStore) -> Aggregates:
    return synthetic_aggregates(store)


def queue(rid: str) -> QueueRequest:
    return QueueRequest(
        request_id=rid,
        company_id="acme",
        session_id=f"s-{rid}",
        model="gpt-4o-mini",
        transcript="hi",
    )


async def test_queued_request_loads_back_pending_with_actor_in_metadata(
    aggregates: Aggregates,
) -> None:
    await aggregates.handle_request("r1", queue("r1"), ADMIN)
    loaded = await aggregates.load_request("r1")
    assert loaded is not None
    assert (loaded.state, loaded.version, loaded.company_id) == (
        RequestState.PENDING_BATCHING,
        1,
        "acme",
    )
    (recorded,) = await aggregates.store.read_stream("request-r1")
    assert recorded.type == "RequestQueued"
    assert recorded.metadata.actor == "ops-token"
    assert recorded.metadata.correlation_id == "corr-9"
    with pytest.raises(AlreadyExists):
        await aggregates.handle_request("r1", queue("r1"), ADMIN)


async def test_two_concurrent_assignments_of_one_request_store_only_one(
    aggregates: Aggregates,
) -> None:
    await aggregates.handle_request("r1", queue("r1"), ADMIN)
    results = await asyncio.gather(
        aggregates.handle_request("r1", AssignToBatch(batch_id="b1"), ADMIN),
        aggregates.handle_request("r1", AssignToBatch(batch_id="b2"), ADMIN),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1
    assert isinstance(failures[0], ConcurrencyError | InvalidTransition)
    types = [e.type for e in await aggregates.store.read_stream("request-r1")]
    assert types == ["RequestQueued", "RequestBatched"]


async def test_bulk_assignment_is_one_atomic_append_with_expected_versions(
    aggregates: Aggregates,
) -> None:
    for i in range(300):
        await aggregates.handle_request(f"r{i}", queue(f"r{i}"), ADMIN)
    loaded = await aggregates.load_requests([f"r{i}" for i in range(300)])
    requests = [r for r in loaded.values() if r is not None]
    await aggregates.handle_request("r7", AssignToBatch(batch_id="other"), ADMIN)  # r7 moves on
    decided = decide_many(requests, AssignToBatch(batch_id="b1"))
    appends = aggregates.request_appends(list(zip(requests, decided, strict=True)), ADMIN)
    with pytest.raises(ConcurrencyError) as info:
        await aggregates.store.append_many(appends)
    assert [c.stream_id for c in info.value.conflicts] == ["request-r7"]
    after = await aggregates.load_requests([f"r{i}" for i in range(300)])
    batched = [
        r for r in after.values() if r is not None and r.state is RequestState.BATCHING_IN_PROGRESS
    ]
    assert [r.request_id for r in batched] == ["r7"]


async def test_batch_lifecycle_from_plan_to_processed(aggregates: Aggregates) -> None:
    steps = [
        PlanBatch(batch_id="b1", company_id="acme", model="gpt-4o-mini", request_ids=["r1"]),
        StartUpload(filename="batchledger-b1.jsonl"),
        RecordUpload(input_file_id="file-1", bytes=123),
        RecordSubmission(openai_batch_id="batch_1", input_file_id="file-1"),
        ObserveStatus(openai_status="in_progress", request_counts=RequestCounts(total=1)),
        ObserveStatus(openai_status="in_progress", request_counts=RequestCounts(total=1)),
        ObserveStatus(
            openai_status="completed",
            request_counts=RequestCounts(total=1, completed=1),
            output_file_id="file-2",
        ),
        FinishIngestion(completed=1, failed=0, missing=0),
    ]
    for command in steps:
        await aggregates.handle_batch("b1", command, Actor("batch-poller"))
    batch = await aggregates.load_batch("b1")
    assert batch is not None
    assert batch.state is BatchState.PROCESSED
    assert (batch.openai_batch_id, batch.output_file_id) == ("batch_1", "file-2")
    types = [e.type for e in await aggregates.store.read_stream("batch-b1")]
    assert types.count("BatchStatusObserved") == 2  # the repeated observation recorded nothing
    assert types[-1] == "BatchProcessed"
