"""Synthetic event histories built fast through the application layer (bench and tests)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from eventstore import EventLog
from service import actors
from service.application.batching import plan_batch, record_submission
from service.application.ingestion import Outcome, record_outcomes
from service.application.ledger import Actor, Ledger
from service.application.polling import observe_status
from service.application.requests import queue_requests, requeue_requests
from service.ids import uuid7
from statemachine.batch import BATCHES
from statemachine.commands import (
    CompleteRequest,
    FailRequest,
    ObserveStatus,
    QueueRequest,
    RecordSubmission,
    RecordUpload,
    StartUpload,
)
from statemachine.events import RequestCounts, Usage
from statemachine.request import REQUESTS, Request

ANALYSIS = {
    "language": "en",
    "sentiment": "NEUTRAL",
    "escalated": False,
    "forwarded_hr": False,
    "category": "SCHEDULE_HOURS",
    "questions": ["When?"],
    "summary": "Asked about a shift.",
}
SYSTEM = Actor(actors.SYNTHETIC)
TRANSCRIPT = (
    "[01.10.2026 09:00:00] User: Hi, my shift on Friday was changed but nobody told me. Why?\n"
    "[01.10.2026 09:00:40] Assistant: Sorry about that. The schedule was updated on Tuesday.\n"
    "[01.10.2026 09:01:30] User: Ok. Can I swap it with a colleague? Thanks for the help."
)


def ledger(store: EventLog) -> Ledger:
    """A ledger with a ticking clock."""
    ticks = itertools.count()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return Ledger(store, clock=lambda: start + timedelta(milliseconds=next(ticks)), new_id=uuid7)


async def queue_many(
    led: Ledger,
    n: int,
    *,
    company: str = "acme",
    model: str = "gpt-4o-mini",
    prefix: str = "r",
    transcript: str = "t",
) -> list[str]:
    """Queue n requests in one append."""
    ids = [f"{prefix}{i}" for i in range(n)]
    commands = [
        QueueRequest(
            request_id=rid,
            company_id=company,
            session_id=f"s-{rid}",
            model=model,
            transcript=transcript,
        )
        for rid in ids
    ]
    await queue_requests(led, commands, SYSTEM)
    return ids


async def run_batch(
    led: Ledger, batch_id: str, ids: list[str], *, fail_every: int = 0, retryable: bool = True
) -> None:
    """Plan, submit, complete a batch through the use cases; every `fail_every`-th fails."""
    loaded = await led.load_many(REQUESTS, ids)
    requests: dict[str, Request] = {rid: r for rid, r in loaded.items() if r is not None}
    first = next(iter(requests.values()))
    await plan_batch(led, batch_id, first.company_id, first.model, requests, SYSTEM)
    for step in (
        StartUpload(filename=f"{batch_id}.jsonl"),
        RecordUpload(input_file_id=f"file-{batch_id}", bytes=1),
        RecordSubmission(openai_batch_id=f"batch_{batch_id}", input_file_id=f"file-{batch_id}"),
    ):
        await record_submission(led, batch_id, step, SYSTEM)
    completed = ObserveStatus(
        openai_status="completed",
        request_counts=RequestCounts(total=len(ids)),
        output_file_id=f"out-{batch_id}",
    )
    await observe_status(led, batch_id, completed, SYSTEM)
    batch = await led.load(BATCHES, batch_id)
    assert batch is not None
    members = await led.load_many(REQUESTS, ids)
    await record_outcomes(
        led,
        batch,
        {rid: r for rid, r in members.items() if r is not None},
        {rid: _outcome(batch_id, n, fail_every, retryable) for n, rid in enumerate(ids)},
        missing=_fail(batch_id, retryable),
        actor=SYSTEM,
    )


def _outcome(batch_id: str, n: int, fail_every: int, retryable: bool) -> Outcome:
    if fail_every and n % fail_every == 0:
        return _fail(batch_id, retryable)
    return CompleteRequest(
        batch_id=batch_id,
        analysis=ANALYSIS,
        usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
        cost_micro_usd=7,
    )


def _fail(batch_id: str, retryable: bool) -> FailRequest:
    return FailRequest(
        batch_id=batch_id, code="server_error", message="500", retryable=retryable, max_attempts=2
    )


async def requeue_failed(led: Ledger, ids: list[str]) -> int:
    """Requeue the failed ones among ids, as an admin."""
    done = await requeue_requests(led, ids, Actor("admin-token"))
    return done.requeued
