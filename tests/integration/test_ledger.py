"""The unit of work on the real event store: load, decide, append at the expected version."""

from __future__ import annotations

import asyncio

import pytest

from eventstore import ConcurrencyError, EventStore
from service.application.ledger import Actor, Ledger, Unit
from service.tools.synthetic import ledger as synthetic_ledger
from statemachine.batch import BATCHES
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
from statemachine.request import REQUESTS, Request
from statemachine.states import BatchState, RequestState

ADMIN = Actor("ops-token", correlation_id="corr-9")


@pytest.fixture
def ledger(store: EventStore) -> Ledger:
    return synthetic_ledger(store)


def queue(rid: str) -> QueueRequest:
    return QueueRequest(
        request_id=rid,
        company_id="acme",
        session_id=f"s-{rid}",
        model="gpt-4o-mini",
        transcript="hi",
    )


async def test_queued_request_loads_back_pending_with_actor_in_metadata(
    ledger: Ledger,
) -> None:
    await ledger.execute(REQUESTS, "r1", queue("r1"), ADMIN)
    loaded = await ledger.load(REQUESTS, "r1")
    assert loaded is not None
    assert (loaded.state, loaded.version, loaded.company_id) == (
        RequestState.PENDING_BATCHING,
        1,
        "acme",
    )
    (recorded,) = await ledger.store.read_stream("request-r1")
    assert recorded.type == "RequestQueued"
    assert recorded.metadata.actor == "ops-token"
    assert recorded.metadata.correlation_id == "corr-9"
    with pytest.raises(AlreadyExists):
        await ledger.execute(REQUESTS, "r1", queue("r1"), ADMIN)


async def test_two_concurrent_assignments_of_one_request_store_only_one(
    ledger: Ledger,
) -> None:
    await ledger.execute(REQUESTS, "r1", queue("r1"), ADMIN)
    results = await asyncio.gather(
        ledger.execute(REQUESTS, "r1", AssignToBatch(batch_id="b1"), ADMIN),
        ledger.execute(REQUESTS, "r1", AssignToBatch(batch_id="b2"), ADMIN),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1
    assert isinstance(failures[0], ConcurrencyError | InvalidTransition)
    types = [e.type for e in await ledger.store.read_stream("request-r1")]
    assert types == ["RequestQueued", "RequestBatched"]


async def test_bulk_assignment_is_one_atomic_append_with_expected_versions(
    ledger: Ledger,
) -> None:
    for i in range(300):
        await ledger.execute(REQUESTS, f"r{i}", queue(f"r{i}"), ADMIN)
    loaded = await ledger.load_many(REQUESTS, [f"r{i}" for i in range(300)])
    requests: dict[str, Request] = {rid: r for rid, r in loaded.items() if r is not None}
    await ledger.execute(REQUESTS, "r7", AssignToBatch(batch_id="other"), ADMIN)  # r7 moves on
    unit = Unit(ledger, ADMIN)
    unit.decide_many(REQUESTS, requests, AssignToBatch(batch_id="b1"))
    with pytest.raises(ConcurrencyError) as info:
        await unit.commit()
    assert [c.stream_id for c in info.value.conflicts] == ["request-r7"]
    after = await ledger.load_many(REQUESTS, [f"r{i}" for i in range(300)])
    batched = [
        r for r in after.values() if r is not None and r.state is RequestState.BATCHING_IN_PROGRESS
    ]
    assert [r.request_id for r in batched] == ["r7"]


async def test_batch_lifecycle_from_plan_to_processed(ledger: Ledger) -> None:
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
        await ledger.execute(BATCHES, "b1", command, Actor("batch-poller"))
    batch = await ledger.load(BATCHES, "b1")
    assert batch is not None
    assert batch.state is BatchState.PROCESSED
    assert (batch.openai_batch_id, batch.output_file_id) == ("batch_1", "file-2")
    types = [e.type for e in await ledger.store.read_stream("batch-b1")]
    assert types.count("BatchStatusObserved") == 2  # the repeated observation recorded nothing
    assert types[-1] == "BatchProcessed"


async def test_every_event_is_stored_under_the_company_of_its_stream(ledger: Ledger) -> None:
    await ledger.execute(REQUESTS, "r1", queue("r1"), ADMIN)
    await ledger.execute(REQUESTS, "r1", AssignToBatch(batch_id="b1"), ADMIN)
    await ledger.execute(
        BATCHES,
        "b1",
        PlanBatch(batch_id="b1", company_id="globex", model="m", request_ids=["r1"]),
        ADMIN,
    )
    await ledger.execute(BATCHES, "b1", StartUpload(filename="f"), ADMIN)
    assert [e.scope for e in await ledger.store.read_stream("request-r1")] == ["acme", "acme"]
    assert [e.scope for e in await ledger.store.read_stream("batch-b1")] == ["globex", "globex"]


async def test_the_scope_migration_gives_older_events_their_streams_company(
    ledger: Ledger,
) -> None:
    from eventstore import load_migrations

    await ledger.execute(REQUESTS, "r1", queue("r1"), ADMIN)
    await ledger.execute(REQUESTS, "r1", AssignToBatch(batch_id="b1"), ADMIN)
    await ledger.execute(
        BATCHES,
        "b1",
        PlanBatch(batch_id="b1", company_id="globex", model="m", request_ids=["r1"]),
        ADMIN,
    )
    store = ledger.store
    assert isinstance(store, EventStore)
    await store.pool.execute("UPDATE events SET scope = NULL")  # as written before scopes
    (backfill,) = [m for m in load_migrations("service") if m.name.endswith("event_scopes.sql")]
    await store.pool.execute(backfill.sql)
    scopes = await store.pool.fetch("SELECT stream_id, scope FROM events ORDER BY position")
    assert [(r[0], r[1]) for r in scopes] == [
        ("request-r1", "acme"),
        ("request-r1", "acme"),
        ("batch-b1", "globex"),
    ]
