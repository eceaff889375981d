"""Use cases that batch requests: plan (intent first), upload and submit, cancel."""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from eventstore import ConcurrencyError
from service import faults, ids
from service.adapters.openai_gateway import ENDPOINT, OpenAIGateway, PermanentError, TransientError
from service.application.analysis import chat_body
from service.application.errors import Missing, NotCancellable
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
from statemachine.errors import InvalidTransition
from statemachine.events import RequestEvent, RequestQueued
from statemachine.request import REQUESTS, Request
from statemachine.states import BatchState, RequestState

_encode = msgspec.json.Encoder().encode

CancelSent = Literal["sent", "deferred", "refused"]
"""What became of a recorded cancel at OpenAI: taken, to be sent again, or refused."""


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


PAGE_SIZE = 5_000
"""Request streams the batch creator reads at once: a tenth of a full batch, so what a pass
holds is about one batch's input file (at most BATCH_MAX_BYTES) and one page of transcripts,
whatever the backlog."""


def fits(count: int, size: int, line: bytes, max_requests: int, max_bytes: int) -> bool:
    """Whether a line joins a batch of `count` lines and `size` bytes within the limits.

    A first line always does: an oversized one gets a batch of its own, which OpenAI refuses.
    """
    return count == 0 or (count < max_requests and size + len(line) + 1 <= max_bytes)


def chunk(candidates: list[Candidate], max_requests: int, max_bytes: int) -> list[list[Candidate]]:
    """Split a group at the request and byte limits, keeping order (the rule `Filling` keeps)."""
    chunks: list[list[Candidate]] = []
    size = 0
    for c in candidates:
        if not chunks or not fits(len(chunks[-1]), size, c.line, max_requests, max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(c)
        size += len(c.line) + 1
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


class Filling:
    """A batch being filled for one company and model: its members and its input file so far.

    Each line goes into the file as it joins, so a candidate's line is not held twice.
    """

    def __init__(self, company_id: str, model: str) -> None:
        self.company_id = company_id
        self.model = model
        self.members: dict[str, Request] = {}
        self._file = io.BytesIO()

    def takes(self, c: Candidate, max_requests: int, max_bytes: int) -> bool:
        """Whether the candidate still fits."""
        return fits(len(self.members), self._file.tell(), c.line, max_requests, max_bytes)

    def add(self, c: Candidate) -> None:
        """Add a candidate and its line."""
        self.members[c.request.request_id] = c.request
        self._file.write(c.line)
        self._file.write(b"\n")

    def file(self) -> bytes:
        """The input file (BytesIO hands its buffer over without a copy)."""
        return self._file.getvalue()


class PagePlanner:
    """Plans batches from pages of request ids; a batch still filling when a page ends takes
    the next page's requests of its company and model, so pages make no needlessly small
    batches."""

    def __init__(self, batching: Batching) -> None:
        self.batching = batching
        self._filling: dict[tuple[str, str], Filling] = {}

    async def add(self, request_ids: Sequence[str]) -> list[str]:
        """Read one page of request streams and plan every batch it fills; their ids."""
        if not request_ids:
            return []
        b, planned = self.batching, []
        for key, candidates in group(await b.ledger.read_many(REQUESTS, request_ids)).items():
            for c in candidates:
                filling = self._filling.get(key)
                if filling is not None and not filling.takes(c, b.max_requests, b.max_bytes):
                    planned += await self._close(key)
                self._filling.setdefault(key, Filling(*key)).add(c)
        return planned

    async def flush(self) -> list[str]:
        """Plan the batches still filling (each company's and model's last); their ids."""
        planned = []
        for key in list(self._filling):
            planned += await self._close(key)
        return planned

    async def _close(self, key: tuple[str, str]) -> list[str]:
        bid = await self.batching._plan_one(self._filling.pop(key))
        return [] if bid is None else [bid]


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
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.page_size = page_size
        self.actor = actor
        self.log = log
        self.new_batch_id = new_batch_id
        self._files: dict[str, bytes] = {}  # input files built while planning, for the upload

    def pages(self) -> PagePlanner:
        """A planner fed one page of request ids at a time (the batch creator's pass)."""
        return PagePlanner(self)

    async def plan(self, request_ids: Sequence[str]) -> list[str]:
        """Record new batches and their requests' assignment before anything goes to OpenAI.

        Requests that no longer wait in their stream are skipped; streams are read a page at
        a time.
        """
        request_ids = list(dict.fromkeys(request_ids))  # one listed twice is planned once
        pages, planned = self.pages(), []
        for start in range(0, len(request_ids), self.page_size):
            planned += await pages.add(request_ids[start : start + self.page_size])
        return planned + await pages.flush()

    async def _plan_one(self, filling: Filling) -> str | None:
        bid = self.new_batch_id()
        company_id, model, members = filling.company_id, filling.model, filling.members
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
        self._files[bid] = filling.file()
        self.log.info(
            "batch.planned",
            batch_id=bid,
            company_id=company_id,
            model=model,
            requests=len(members),
            bytes=len(self._files[bid]),
        )
        faults.point("creator.after_plan")
        return bid

    async def _input_file(self, batch: Batch) -> bytes:
        cached = self._files.pop(batch.batch_id, None)
        if cached is not None:
            return cached
        # After a restart or a failed attempt: rebuild the same file from the requests'
        # streams, a page at a time.
        file, ids = io.BytesIO(), batch.request_ids
        for start in range(0, len(ids), self.page_size):
            page = ids[start : start + self.page_size]
            streams = await self.ledger.read_many(REQUESTS, page)
            for rid in page:
                queued = streams[rid][0]
                assert isinstance(queued, RequestQueued)
                file.write(jsonl_line(rid, batch.model, queued.transcript) + b"\n")
        return file.getvalue()

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
        finally:
            # Whatever happened, the file planned for it is not kept: a later attempt rebuilds
            # it from the streams, so the cache never outlives the page that filled it.
            self._files.pop(bid, None)

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
    ) -> CancelSent:
        """Record the decision to cancel a running batch, then ask OpenAI; its requests follow
        the lifecycle.

        Intent first: what OpenAI is asked is always recorded before, so a crash or a
        conflict can never leave a cancel at OpenAI that the log does not know. A cancel
        OpenAI cannot take now is sent again by the poller. A batch of a company outside
        `companies` (None: every company) is Missing.
        """
        batch = await self.ledger.load(BATCHES, bid)
        if batch is None or (companies is not None and batch.company_id not in companies):
            raise Missing("batch", bid)
        if not _cancellable(batch):
            raise NotCancellable(f"batch {bid} is {batch.state.value.lower()}")
        try:
            await self.ledger.execute(BATCHES, bid, CancelBatch(), actor)
        except InvalidTransition:
            # It moved on (finished, failed) while we decided: nothing was sent.
            raise NotCancellable(f"batch {bid} is no longer running") from None
        faults.point("cancel.after_intent")
        assert batch.openai_batch_id is not None
        log = self.log.bind(actor=actor.name, company_id=batch.company_id)
        return await send_cancel(self.gateway, log, bid, batch.openai_batch_id)


async def send_cancel(
    gateway: OpenAIGateway, log: Any, bid: str, openai_batch_id: str
) -> CancelSent:
    """Ask OpenAI to cancel a batch whose cancel is recorded; never raises for OpenAI."""
    log = log.bind(batch_id=bid, openai_batch_id=openai_batch_id)
    try:
        await gateway.cancel(openai_batch_id)
    except TransientError as exc:
        log.warning("batch.cancel_deferred", reason=str(exc)[:300])
        return "deferred"
    except PermanentError as exc:
        # Typically it already ended at OpenAI: the poller records how it ended.
        log.warning("batch.cancel_refused", code=exc.code, message=exc.message[:300])
        return "refused"
    log.info("batch.cancel_sent")
    return "sent"


def _cancellable(batch: Batch) -> bool:
    """Running at OpenAI, and the declaration lets it be cancelled from where it is."""
    command = CancelBatch()
    return batch.openai_batch_id is not None and BATCH_MACHINE.accepts(
        batch.state, command.trigger, batch, command
    )
