"""The batch creator: plan batches from pending requests (intent first), then upload and submit."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import msgspec

from eventstore import ConcurrencyError, StreamAppend
from projections import queries
from service import faults
from service.adapters.openai_gateway import ENDPOINT, OpenAIGateway, PermanentError, TransientError
from service.application.analysis import chat_body
from service.application.ledger import Actor, Aggregates
from service.ids import batch_id as new_batch_id
from statemachine import batch as batch_agg
from statemachine import request as request_agg
from statemachine.batch import Batch
from statemachine.commands import (
    AssignToBatch,
    FailSubmission,
    PlanBatch,
    RecordSubmission,
    RecordUpload,
    StartUpload,
)
from statemachine.events import RequestEvent, RequestQueued, decode_event
from statemachine.request import Request
from statemachine.states import BatchState, RequestState

_encode = msgspec.json.Encoder().encode
PENDING_SCAN_LIMIT = 500_000


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


class BatchCreator:
    """Groups pending requests by company and model into batches and submits them."""

    def __init__(
        self,
        aggregates: Aggregates,
        gateway: OpenAIGateway,
        *,
        max_requests: int,
        max_bytes: int,
        actor: Actor,
        log: Any,
    ) -> None:
        self.aggregates = aggregates
        self.gateway = gateway
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.actor = actor
        self.log = log
        self._files: dict[str, bytes] = {}  # input files built while planning, for the upload

    async def run_once(self) -> int:
        """Finish batches a crash left half-submitted, then plan and submit new ones."""
        pool = self.aggregates.store.pool
        unfinished = await queries.batches_in(pool, [BatchState.PENDING, BatchState.UPLOADING])
        planned = await self.plan()
        for bid in dict.fromkeys(unfinished + planned):
            await self.submit(bid)
        return len(planned) + len(unfinished)

    async def _candidates(self) -> dict[tuple[str, str], list[Candidate]]:
        rows = await queries.pending_requests(self.aggregates.store.pool, PENDING_SCAN_LIMIT)
        if not rows:
            return {}
        streams = await self.aggregates.store.read_streams(
            [request_agg.stream_id(r["request_id"]) for r in rows]
        )
        groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
        for recorded in streams.values():
            events: list[RequestEvent] = [decode_event(e.data) for e in recorded]  # type: ignore[misc]
            state = request_agg.fold(events)
            # The projection may lag: the stream says whether the request still waits.
            if state is None or state.state is not RequestState.PENDING_BATCHING:
                continue
            queued = events[0]
            assert isinstance(queued, RequestQueued)
            line = jsonl_line(state.request_id, state.model, queued.transcript)
            groups[(state.company_id, state.model)].append(Candidate(state, line))
        return groups

    async def plan(self) -> list[str]:
        """Record new batches and their requests' assignment before anything goes to OpenAI."""
        planned = []
        for (company_id, model), candidates in (await self._candidates()).items():
            for part in chunk(candidates, self.max_requests, self.max_bytes):
                bid = new_batch_id()
                requests = [c.request for c in part]
                plan = PlanBatch(
                    batch_id=bid,
                    company_id=company_id,
                    model=model,
                    request_ids=[r.request_id for r in requests],
                )
                appends = [
                    StreamAppend(
                        batch_agg.stream_id(bid),
                        0,
                        self.aggregates.to_new_events(batch_agg.decide(None, plan), self.actor),
                    )
                ]
                assigned = request_agg.decide_many(requests, AssignToBatch(batch_id=bid))
                appends += self.aggregates.request_appends(
                    list(zip(requests, assigned, strict=True)), self.actor
                )
                try:
                    await self.aggregates.store.append_many(appends)
                except ConcurrencyError as exc:
                    self.log.info(
                        "batch.plan_conflict",
                        company_id=company_id,
                        model=model,
                        conflicts=len(exc.conflicts),
                    )
                    continue
                self._files[bid] = b"\n".join(c.line for c in part) + b"\n"
                planned.append(bid)
                self.log.info(
                    "batch.planned",
                    batch_id=bid,
                    company_id=company_id,
                    model=model,
                    requests=len(part),
                    bytes=len(self._files[bid]),
                )
                faults.point("creator.after_plan")
        return planned

    async def _input_file(self, batch: Batch) -> bytes:
        cached = self._files.pop(batch.batch_id, None)
        if cached is not None:
            return cached
        # After a restart: rebuild the same file from the requests' streams.
        streams = await self.aggregates.store.read_streams(
            [request_agg.stream_id(r) for r in batch.request_ids]
        )
        lines = []
        for rid in batch.request_ids:
            queued = decode_event(streams[request_agg.stream_id(rid)][0].data)
            assert isinstance(queued, RequestQueued)
            lines.append(jsonl_line(rid, batch.model, queued.transcript))
        return b"\n".join(lines) + b"\n"

    async def submit(self, bid: str) -> None:
        """Take a batch from PENDING to VALIDATING, resuming wherever a crash left it."""
        batch = await self.aggregates.load_batch(bid)
        log = self.log.bind(batch_id=bid)
        try:
            if batch is not None and batch.state is BatchState.PENDING:
                await self.aggregates.handle_batch(
                    bid, StartUpload(filename=f"batchledger-{bid}.jsonl"), self.actor
                )
                faults.point("creator.after_upload_started")
                batch = await self.aggregates.load_batch(bid)
            if batch is None or batch.state is not BatchState.UPLOADING:
                return
            if batch.input_file_id is None:
                await self._upload(batch, log)
                batch = await self.aggregates.load_batch(bid)
                assert batch is not None
            await self._create(batch, log)
        except TransientError as exc:
            log.warning("batch.submit_deferred", reason=str(exc)[:300])
        except PermanentError as exc:
            await self.aggregates.handle_batch(
                bid, FailSubmission(code=exc.code, message=exc.message[:500]), self.actor
            )
            log.error("batch.submit_failed", code=exc.code, message=exc.message[:300])

    async def _upload(self, batch: Batch, log: Any) -> None:
        content = await self._input_file(batch)
        started = time.perf_counter()
        file_id = await self.gateway.upload(
            batch.upload_filename or f"batchledger-{batch.batch_id}.jsonl", content
        )
        faults.point("creator.after_upload")
        await self.aggregates.handle_batch(
            batch.batch_id, RecordUpload(input_file_id=file_id, bytes=len(content)), self.actor
        )
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
        await self.aggregates.handle_batch(batch.batch_id, command, self.actor)
        log.info(
            "batch.submitted",
            openai_batch_id=command.openai_batch_id,
            reconciled=command.reconciled,
            requests=len(batch.request_ids),
        )
