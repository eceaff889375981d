"""Ingesting a finished batch: stream both files, match lines by custom_id, decide, append once."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from service import faults
from service.adapters.openai_gateway import OpenAIGateway
from service.application.analysis import InvalidAnalysis, parse_analysis
from service.application.ledger import Actor, Ledger, Unit
from service.pricing import cost_micro_usd
from statemachine.batch import BATCH_MACHINE, BATCHES, Batch
from statemachine.commands import (
    CompleteRequest,
    FailRequest,
    FinishIngestion,
    RejectedLine,
    ReleaseRequests,
)
from statemachine.events import BatchError, RequestEvent, RequestRequeued, Usage
from statemachine.request import REQUEST_MACHINE, REQUESTS, Request

RETRYABLE_BATCH_FAILURES = frozenset(
    {"token_limit_exceeded", "rate_limit_exceeded", "server_error"}
)
INVALID_ELSEWHERE = "batch_invalid_elsewhere"  # a request whose batch another line failed
LISTED_LINES = 5  # offending lines a request's message names; "and N more" beyond


class _Error(msgspec.Struct):
    code: str | None = None
    message: str | None = None
    type: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | None = None


class _Response(msgspec.Struct):
    status_code: int
    body: msgspec.Raw
    request_id: str | None = None


class _Line(msgspec.Struct):
    custom_id: str
    id: str | None = None
    response: _Response | None = None
    error: _Error | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


_decode_line = msgspec.json.Decoder(_Line).decode
_decode_completion = msgspec.json.Decoder(_Completion).decode
_decode_error_body = msgspec.json.Decoder(_ErrorBody).decode

Outcome = CompleteRequest | FailRequest


@dataclass(frozen=True)
class Failure:
    """One request a batch failed: why, and whether it goes back to wait for another batch."""

    request_id: str
    code: str
    message: str
    requeued: bool


@dataclass
class IngestResult:
    """What one ingestion did."""

    completed: int = 0
    failed: int = 0
    missing: int = 0
    rejected: list[RejectedLine] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0


class Verdict(msgspec.Struct, frozen=True):
    """What a failed batch makes of one of its requests (hashable: requests share a few)."""

    code: str
    message: str
    retryable: bool
    charged: bool = True  # False: not the request's own failure; its attempt is given back


def retryable_batch_error(error: BatchError) -> bool:
    """Whether another batch may succeed where this error failed one: a transient refusal,
    or OpenAI's missing input file (the next batch uploads a file of its own)."""
    missing_input_file = error.code == "invalid_request" and error.param == "file_id"
    return error.code in RETRYABLE_BATCH_FAILURES or missing_input_file


def release_verdicts(
    request_ids: Sequence[str], errors: Sequence[BatchError]
) -> dict[str, Verdict]:
    """What each request of a failed batch becomes; line n of its input file is
    `request_ids[n-1]`.

    A request whose line an error names fails with that line's first error. Every other
    request gets the first error that names no line, if any; else, when errors name lines,
    it was not at fault and fails as retryable `batch_invalid_elsewhere`.
    """
    blamed = _first_error_per_line(errors)
    verdicts = dict.fromkeys(request_ids, _unblamed(errors, blamed))
    for line, error in blamed.items():
        if 1 <= line <= len(request_ids):
            verdicts[request_ids[line - 1]] = _verdict(error)
    return verdicts


def _verdict(error: BatchError) -> Verdict:
    return Verdict(error.code, error.message, retryable_batch_error(error))


def _first_error_per_line(errors: Sequence[BatchError]) -> dict[int, BatchError]:
    by_line: dict[int, BatchError] = {}
    for error in errors:
        if error.line is not None:
            by_line.setdefault(error.line, error)
    return by_line


def _unblamed(errors: Sequence[BatchError], blamed: Mapping[int, BatchError]) -> Verdict:
    """What a request that no error names becomes."""
    general = next((e for e in errors if e.line is None), None)
    if general is not None:
        return _verdict(general)
    if blamed:
        return Verdict(INVALID_ELSEWHERE, _refused_elsewhere(blamed), retryable=True, charged=False)
    return Verdict("batch_failed", "the batch failed", retryable=False)


def _refused_elsewhere(blamed: Mapping[int, BatchError]) -> str:
    """'not run: OpenAI refused line 2 (invalid_request) of this batch', and the like."""
    lines = sorted(blamed)
    named = ", ".join(f"{n} ({blamed[n].code})" for n in lines[:LISTED_LINES])
    more = f" and {len(lines) - LISTED_LINES} more" if len(lines) > LISTED_LINES else ""
    noun = "line" if len(lines) == 1 else "lines"
    return f"not run: OpenAI refused {noun} {named}{more} of this batch"


def _failure(rid: str, command: FailRequest, events: Sequence[RequestEvent]) -> Failure:
    requeued = bool(events) and isinstance(events[-1], RequestRequeued)
    return Failure(rid, command.code, command.message, requeued)


def _applies(request: Request, outcome: Outcome) -> bool:
    """Whether an outcome of its batch still applies to the request (its current batch)."""
    return REQUEST_MACHINE.accepts(request.state, outcome.trigger, request, outcome)


async def record_outcomes(
    ledger: Ledger,
    batch: Batch,
    members: Mapping[str, Request],
    outcomes: Mapping[str, Outcome],
    *,
    missing: FailRequest,
    rejected: Sequence[RejectedLine] = (),
    actor: Actor,
) -> IngestResult:
    """Record every member's outcome (`missing` for those without one) and close the batch.

    One unit for the batch and all its requests: ingesting twice is impossible, and a crash
    before the commit leaves everything to be ingested again from scratch.
    """
    result = IngestResult(rejected=list(rejected))
    unit = Unit(ledger, actor)
    for rid, request in members.items():
        command = outcomes.get(rid, missing)
        if not _applies(request, command):
            continue  # the request moved on from this batch: its outcome no longer applies
        if rid not in outcomes:
            result.missing += 1
        elif isinstance(command, CompleteRequest):
            result.completed += 1
        else:
            result.failed += 1
        events = unit.decide(REQUESTS, rid, request, command)
        if isinstance(command, FailRequest):
            result.failures.append(_failure(rid, command, events))
    faults.point("ingest.before_append")
    finish = FinishIngestion(
        completed=result.completed,
        failed=result.failed,
        missing=result.missing,
        rejected=result.rejected,
    )
    unit.decide(BATCHES, batch.batch_id, batch, finish)
    await unit.commit()
    faults.point("ingest.after_append")
    return result


class Ingestion:
    """Turns a finished batch's files into request outcomes and closes the batch."""

    def __init__(
        self,
        ledger: Ledger,
        gateway: OpenAIGateway,
        *,
        max_attempts: int,
        prices: dict[str, tuple[float, float]],
        actor: Actor,
    ) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.max_attempts = max_attempts
        self.prices = prices
        self.actor = actor

    def outcome(self, batch: Batch, line: _Line) -> Outcome:
        """The command one output or error line stands for."""
        if line.response is None:
            err = line.error or _Error(code="no_response")
            return self._fail(batch, err.code or "no_response", err.message or "no response", True)
        if line.response.status_code != 200:
            status = line.response.status_code
            try:
                err = _decode_error_body(line.response.body).error or _Error()
            except msgspec.DecodeError:
                err = _Error()
            code = err.code or err.type or f"http_{status}"
            return self._fail(
                batch, code, err.message or f"HTTP {status}", status >= 500 or status == 429
            )
        return self._completion(batch, line)

    def _completion(self, batch: Batch, line: _Line) -> Outcome:
        assert line.response is not None
        try:
            body = _decode_completion(line.response.body)
            content = body.choices[0].message.content if body.choices else None
            analysis = parse_analysis(content)
        except (msgspec.DecodeError, InvalidAnalysis) as exc:
            return self._fail(batch, "invalid_output", str(exc)[:500], True)
        u = body.usage or _Usage()
        return CompleteRequest(
            batch_id=batch.batch_id,
            analysis=msgspec.to_builtins(analysis),
            usage=Usage(
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                total_tokens=u.total_tokens,
            ),
            cost_micro_usd=cost_micro_usd(
                self.prices, batch.model, u.prompt_tokens, u.completion_tokens
            ),
            openai_request_id=line.response.request_id,
        )

    def _fail(
        self, batch: Batch, code: str, message: str, retryable: bool, *, charged: bool = True
    ) -> FailRequest:
        return FailRequest(
            batch_id=batch.batch_id,
            code=code,
            message=message,
            retryable=retryable,
            max_attempts=self.max_attempts,
            charged=charged,
        )

    async def _read(
        self, batch: Batch, members: dict[str, Request], rejected: list[RejectedLine]
    ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id is None:
                continue
            n = 0
            async for raw in self.gateway.lines(file_id):
                n += 1
                try:
                    line = _decode_line(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    rejected.append(
                        RejectedLine(
                            file_id=file_id, line=n, kind="malformed", detail=str(exc)[:200]
                        )
                    )
                    continue
                if line.custom_id not in members:
                    rejected.append(
                        RejectedLine(
                            file_id=file_id,
                            line=n,
                            kind="unknown_custom_id",
                            custom_id=line.custom_id,
                        )
                    )
                elif line.custom_id in outcomes:
                    rejected.append(
                        RejectedLine(
                            file_id=file_id,
                            line=n,
                            kind="duplicate_custom_id",
                            custom_id=line.custom_id,
                        )
                    )
                else:
                    outcomes[line.custom_id] = self.outcome(batch, line)
        return outcomes

    async def ingest(self, batch_id: str) -> IngestResult | None:
        """Ingest a completed, expired or cancelled batch; None when there is nothing to do."""
        started = time.perf_counter()
        batch = await self.ledger.load(BATCHES, batch_id)
        if batch is None or not BATCH_MACHINE.accepts(batch.state, "mark_processed", batch, None):
            return None
        loaded = await self.ledger.load_many(REQUESTS, batch.request_ids)
        members = {rid: r for rid, r in loaded.items() if r is not None}
        rejected: list[RejectedLine] = []
        outcomes = await self._read(batch, members, rejected)
        missing = self._fail(batch, "missing", "no output or error line for this request", True)
        result = await record_outcomes(
            self.ledger,
            batch,
            members,
            outcomes,
            missing=missing,
            rejected=rejected,
            actor=self.actor,
        )
        result.seconds = time.perf_counter() - started
        return result

    async def release(self, batch_id: str) -> list[Failure] | None:
        """Send a failed batch's requests back or fail them, each as `release_verdicts` says;
        what became of each (those failed for good first), or None when there is nothing
        to do."""
        batch = await self.ledger.load(BATCHES, batch_id)
        if batch is None or not BATCH_MACHINE.accepts(batch.state, "release_requests", batch, None):
            return None
        verdicts = release_verdicts(batch.request_ids, batch.errors)
        commands = {
            v: self._fail(batch, v.code, v.message, v.retryable, charged=v.charged)
            for v in set(verdicts.values())
        }
        loaded = await self.ledger.load_many(REQUESTS, batch.request_ids)
        unit = Unit(self.ledger, self.actor)
        failures: list[Failure] = []
        for rid, request in loaded.items():
            fail = commands[verdicts[rid]]
            if request is not None and _applies(request, fail):
                failures.append(_failure(rid, fail, unit.decide(REQUESTS, rid, request, fail)))
        requeued = sum(f.requeued for f in failures)
        release = ReleaseRequests(requeued=requeued, failed=len(failures) - requeued)
        unit.decide(BATCHES, batch_id, batch, release)
        await unit.commit()
        return sorted(failures, key=lambda f: f.requeued)
