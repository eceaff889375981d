"""Use cases that batch requests: plan (intent first), upload and submit, cancel."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from eventstore import ConcurrencyError
from service import faults, ids
from service.adapters.openai_gateway import ENDPOINT, OpenAIGateway, PermanentError, TransientError
from service.application.analysis import chat_body
from service.application.errors import Missing, NotCancellable, OpenAIUnavailable
from service.application.ledger import Actor, Ledger, Unit
from statemachine.batch import BATCH_MACHINE, BATCHES, Batch
from statemachine.commands import (
    AssignToBatch,
    CancelBatch,
    FailSubmission,
    PlanBatch,
    RecordSubmission,
    RecordUpload,
    StartUpload,
)
from statemachine.events import RequestEvent, RequestQueued
from statemachine.request import REQUESTS, Request
from statemachine.states import BatchState, RequestState

_encode = msgspec.json.Encoder().encode


@dataclass
class Candidate:
    """A pending request with its JSONL line."""

    request: Request
    line: bytes


def jsonl_line(request_id: str, model: str, transcript: str) -> bytes:
    """One line of a batch input file; `custom_id` is our request id."""
    return _encode(
        {
            "custom_id": request_id,
            "method": "POST",
            "url": ENDPOINT,
            "body": chat_body(model, transcript),
        }
    )


def chunk(candidates: list[Candidate], max_requests: int, max_bytes: int) -> list[list[Candidate]]:
    """Split a group at the request and byte limits, keeping order."""
    chunks: list[list[Candidate]] = []
    current: list[Candidate] = []
    size = 0
    for c in candidates:
        line_bytes = len(c.line) + 1
        if current and (len(current) >= max_requests or size + line_bytes > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(c)
        size += line_bytes
    if current:
        chunks.append(current)
    return chunks


def group(
    streams: dict[str, list[RequestEvent]],
) -> dict[tuple[str, str], list[Candidate]]:
    """Requests that still wait, by company and model, each with its input line."""
    groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for events in streams.values():
        state = REQUESTS.fold(events)
        # The caller's list may lag (it comes from a projection): the stream decides.
        if state is None or state.state is not RequestState.PENDING_BATCHING:
            continue
        queued = events[0]
        assert isinstance(queued, RequestQueued)
        line = jsonl_line(state.request_id, state.model, queued.transcript)
        groups[(state.company_id, state.model)].append(Candidate(state, line))
    return groups


SubmissionStep = StartUpload | RecordUpload | RecordSubmission | FailSubmission


async def plan_batch(
    ledger: Ledger,
    batch_id: str,
    company_id: str,
    model: str,
    members: dict[str, Request],
    actor: Actor,
) -> None:
    """Record a batch and its requests' assignment in one commit, before any call to OpenAI.

    Raises ConcurrencyError, and writes nothing, when one of the requests moved meanwhile.
    """
    unit = Unit(ledger, actor)
    plan = PlanBatch(
        batch_id=batch_id, company_id=company_id, model=model, request_ids=list(members)
    )
    unit.decide(BATCHES, batch_id, None, plan)
    unit.decide_many(REQUESTS, members, AssignToBatch(batch_id=batch_id))
    await unit.commit()


async def record_submission(
    ledger: Ledger, batch_id: str, step: SubmissionStep, actor: Actor
) -> None:
    """Record a step of the submission: upload started or done, batch created or refused.

    Decided once, not retried on a conflict: each records something already done at OpenAI.
    """
    await ledger.execute(BATCHES, batch_id, step, actor, attempts=1)


class Batching:
    """Use cases that form batches and submit them to OpenAI, intent first."""

    def __init__(
        self,
        ledger: Ledger,
        gateway: OpenAIGateway,
        *,
        max_requests: int,
        max_bytes: int,
        actor: Actor,
        log: Any,
        new_batch_id: Callable[[], str] = ids.batch_id,
    ) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.actor = actor
        self.log = log
        self.new_batch_id = new_batch_id
        self._files: dict[str, bytes] = {}  # input files built while planning, for the upload

    async def plan(self, request_ids: Sequence[str]) -> list[str]:
        """Record new batches and their requests' assignment before anything goes to OpenAI."""
        if not request_ids:
            return []
        streams = await self.ledger.read_many(REQUESTS, request_ids)
        planned = []
        for (company_id, model), candidates in group(streams).items():
            for part in chunk(candidates, self.max_requests, self.max_bytes):
                bid = await self._plan_one(company_id, model, part)
                if bid is not None:
                    planned.append(bid)
        return planned

    async def _plan_one(self, company_id: str, model: str, part: list[Candidate]) -> str | None:
        bid = self.new_batch_id()
        members = {c.request.request_id: c.request for c in part}
        try:
            await plan_batch(self.ledger, bid, company_id, model, members, self.actor)
        except ConcurrencyError as exc:
            # Another instance batched some of them first; the next pass plans the rest.
            self.log.info(
                "batch.plan_conflict",
                company_id=company_id,
                model=model,
                conflicts=len(exc.conflicts),
            )
            return None
        self._files[bid] = b"\n".join(c.line for c in part) + b"\n"
        self.log.info(
            "batch.planned",
            batch_id=bid,
            company_id=company_id,
            model=model,
            requests=len(part),
            bytes=len(self._files[bid]),
        )
        faults.point("creator.after_plan")
        return bid

    async def _input_file(self, batch: Batch) -> bytes:
        cached = self._files.pop(batch.batch_id, None)
        if cached is not None:
            return cached
        # After a restart: rebuild the same file from the requests' streams.
        streams = await self.ledger.read_many(REQUESTS, batch.request_ids)
        lines = []
        for rid in batch.request_ids:
            queued = streams[rid][0]
            assert isinstance(queued, RequestQueued)
            lines.append(jsonl_line(rid, batch.model, queued.transcript))
        return b"\n".join(lines) + b"\n"

    async def _record(self, bid: str, command: SubmissionStep) -> None:
        await record_submission(self.ledger, bid, command, self.actor)

    async def submit(self, bid: str) -> None:
        """Take a batch from PENDING to VALIDATING, resuming wherever a crash left it."""
        batch = await self.ledger.load(BATCHES, bid)
        log = self.log.bind(batch_id=bid)
        try:
            if batch is not None and batch.state is BatchState.PENDING:
                await self._record(bid, StartUpload(filename=f"batchledger-{bid}.jsonl"))
                faults.point("creator.after_upload_started")
                batch = await self.ledger.load(BATCHES, bid)
            if batch is None or batch.state is not BatchState.UPLOADING:
                return
            if batch.input_file_id is None:
                await self._upload(batch, log)
                batch = await self.ledger.load(BATCHES, bid)
                assert batch is not None
            await self._create(batch, log)
        except TransientError as exc:
            log.warning("batch.submit_deferred", reason=str(exc)[:300])
        except PermanentError as exc:
            await self._record(bid, FailSubmission(code=exc.code, message=exc.message[:500]))
            log.error("batch.submit_failed", code=exc.code, message=exc.message[:300])

    async def _upload(self, batch: Batch, log: Any) -> None:
        content = await self._input_file(batch)
        started = time.perf_counter()
        file_id = await self.gateway.upload(
            batch.upload_filename or f"batchledger-{batch.batch_id}.jsonl", content
        )
        faults.point("creator.after_upload")
        await self._record(batch.batch_id, RecordUpload(input_file_id=file_id, bytes=len(content)))
        log.info(
            "batch.uploaded",
            input_file_id=file_id,
            bytes=len(content),
            seconds=round(time.perf_counter() - started, 3),
        )
        faults.point("creator.after_record_upload")

    async def _create(self, batch: Batch, log: Any) -> None:
        assert batch.input_file_id is not None
        found = await self.gateway.find_batch(batch.batch_id)
        if found is not None:
            command = RecordSubmission(
                openai_batch_id=found.id, input_file_id=found.input_file_id, reconciled=True
            )
        else:
            created = await self.gateway.create_batch(batch.input_file_id, batch.batch_id)
            faults.point("creator.after_create")
            command = RecordSubmission(
                openai_batch_id=created.id, input_file_id=batch.input_file_id
            )
        await self._record(batch.batch_id, command)
        log.info(
            "batch.submitted",
            openai_batch_id=command.openai_batch_id,
            reconciled=command.reconciled,
            requests=len(batch.request_ids),
        )

    async def cancel(
        self, bid: str, actor: Actor, *, companies: frozenset[str] | None = None
    ) -> None:
        """Ask OpenAI to cancel a running batch and record it; its requests follow the lifecycle.

        A batch of a company outside `companies` (None: every company) is Missing.
        """
        batch = await self.ledger.load(BATCHES, bid)
        if batch is None or (companies is not None and batch.company_id not in companies):
            raise Missing("batch", bid)
        command = CancelBatch()
        if (
            not BATCH_MACHINE.accepts(batch.state, command.trigger, batch, command)
            or batch.openai_batch_id is None
        ):
            raise NotCancellable(f"batch {bid} is {batch.state.value.lower()}")
        try:
            await self.gateway.cancel(batch.openai_batch_id)
        except TransientError as exc:
            raise OpenAIUnavailable(str(exc)[:300]) from None
        except PermanentError as exc:
            raise NotCancellable(exc.message[:300]) from None
        await self.ledger.execute(BATCHES, bid, command, actor)
