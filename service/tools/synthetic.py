"""Synthetic event histories built fast through the domain and the store (bench and tests)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from eventstore import EventStore, StreamAppend
from service.application.ledger import Actor, Aggregates
from service.ids import uuid7
from statemachine import batch as batch_agg
from statemachine import request as request_agg
from statemachine.commands import (
    AssignToBatch,
    CompleteRequest,
    FailRequest,
    FinishIngestion,
    ObserveStatus,
    PlanBatch,
    QueueRequest,
    RecordSubmission,
    RecordUpload,
    RequeueRequest,
    StartUpload,
)
from statemachine.events import RequestCounts, Usage
from statemachine.request import Request

ANALYSIS = {
    "language": "en",
    "sentiment": "NEUTRAL",
    "escalated": False,
    "forwarded_hr": False,
    "category": "SCHEDULE_HOURS",
    "questions": ["When?"],
    "summary": "Asked about a shift.",
}
SYSTEM = Actor("scheduler")
TRANSCRIPT = (
    "[01.10.2026 09:00:00] User: Hi, my shift on Friday was changed but nobody told me. Why?\n"
    "[01.10.2026 09:00:40] Assistant: Sorry about that. The schedule was updated on Tuesday.\n"
    "[01.10.2026 09:01:30] User: Ok. Can I swap it with a colleague? Thanks for the help."
)


def aggregates(store: EventStore) -> Aggregates:
    """Aggregates with a ticking clock."""
    ticks = itertools.count()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return Aggregates(
        store, clock=lambda: start + timedelta(milliseconds=next(ticks)), new_id=uuid7
    )


async def queue_many(
    agg: Aggregates,
    n: int,
    *,
    company: str = "acme",
    model: str = "gpt-4o-mini",
    prefix: str = "r",
    transcript: str = "t",
) -> list[str]:
    """Queue n requests in one append."""
    ids = [f"{prefix}{i}" for i in range(n)]
    appends = []
    for rid in ids:
        cmd = QueueRequest(
            request_id=rid,
            company_id=company,
            session_id=f"s-{rid}",
            model=model,
            transcript=transcript,
        )
        appends.append(
            StreamAppend(
                request_agg.stream_id(rid),
                0,
                agg.to_new_events(request_agg.decide(None, cmd), SYSTEM),
            )
        )
    await agg.store.append_many(appends)
    return ids


async def run_batch(
    agg: Aggregates, batch_id: str, ids: list[str], *, fail_every: int = 0, retryable: bool = True
) -> None:
    """Plan, submit, complete a batch; every `fail_every`-th request fails."""
    loaded = await agg.load_requests(ids)
    requests: list[Request] = [r for r in loaded.values() if r is not None]
    planned = batch_agg.decide(
        None,
        PlanBatch(
            batch_id=batch_id,
            company_id=requests[0].company_id,
            model=requests[0].model,
            request_ids=ids,
        ),
    )
    appends = [StreamAppend(batch_agg.stream_id(batch_id), 0, agg.to_new_events(planned, SYSTEM))]
    decided = request_agg.decide_many(requests, AssignToBatch(batch_id=batch_id))
    appends += agg.request_appends(list(zip(requests, decided, strict=True)), SYSTEM)
    await agg.store.append_many(appends)
    for step in (
        StartUpload(filename=f"{batch_id}.jsonl"),
        RecordUpload(input_file_id=f"file-{batch_id}", bytes=1),
        RecordSubmission(openai_batch_id=f"batch_{batch_id}", input_file_id=f"file-{batch_id}"),
        ObserveStatus(
            openai_status="completed",
            request_counts=RequestCounts(total=len(ids)),
            output_file_id=f"out-{batch_id}",
        ),
    ):
        await agg.handle_batch(batch_id, step, SYSTEM)
    loaded = await agg.load_requests(ids)
    outcomes = []
    failed = 0
    for n, rid in enumerate(ids):
        r = loaded[rid]
        assert r is not None
        if fail_every and n % fail_every == 0:
            outcome: CompleteRequest | FailRequest = FailRequest(
                batch_id=batch_id,
                code="server_error",
                message="500",
                retryable=retryable,
                max_attempts=2,
            )
            failed += 1
        else:
            outcome = CompleteRequest(
                batch_id=batch_id,
                analysis=ANALYSIS,
                usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
                cost_micro_usd=7,
            )
        outcomes.append((r, request_agg.decide(r, outcome)))
    await agg.store.append_many(agg.request_appends(outcomes, SYSTEM))
    await agg.handle_batch(
        batch_id, FinishIngestion(completed=len(ids) - failed, failed=failed, missing=0), SYSTEM
    )


async def requeue_failed(agg: Aggregates, ids: list[str]) -> int:
    """Requeue the failed ones among ids, as an admin."""
    loaded = await agg.load_requests(ids)
    failed = [r for r in loaded.values() if r is not None and r.state.value == "PROCESSING_FAILED"]
    decided = [(r, request_agg.decide(r, RequeueRequest())) for r in failed]
    if decided:
        await agg.store.append_many(agg.request_appends(decided, Actor("admin-token")))
    return len(failed)
