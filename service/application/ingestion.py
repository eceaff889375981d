"""Ingesting a finished batch: stream both files, match lines by custom_id, decide, append once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from eventstore import StreamAppend
from service import faults
from service.adapters.openai_gateway import OpenAIGateway
from service.application.analysis import InvalidAnalysis, parse_analysis
from service.application.ledger import Actor, Aggregates
from service.application.pricing import cost_micro_usd
from statemachine import batch as batch_agg
from statemachine import request as request_agg
from statemachine.batch import Batch
from statemachine.commands import (
    CompleteRequest,
    FailRequest,
    FinishIngestion,
    RejectedLine,
    ReleaseRequests,
)
from statemachine.errors import InvalidTransition
from statemachine.events import Event, Usage
from statemachine.request import Request
from statemachine.states import TO_INGEST, RequestState

RETRYABLE_BATCH_FAILURES = frozenset(
    {"token_limit_exceeded", "rate_limit_exceeded", "server_error"}
)


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


@dataclass
class IngestResult:
    """What one ingestion did."""

    completed: int = 0
    failed: int = 0
    missing: int = 0
    rejected: list[RejectedLine] = field(default_factory=list)
    seconds: float = 0.0


class Ingestion:
    """Turns a finished batch's files into request outcomes and closes the batch."""

    def __init__(
        self,
        aggregates: Aggregates,
        gateway: OpenAIGateway,
        *,
        max_attempts: int,
        prices: dict[str, tuple[float, float]],
        actor: Actor,
    ) -> None:
        self.aggregates = aggregates
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

    def _fail(self, batch: Batch, code: str, message: str, retryable: bool) -> FailRequest:
        return FailRequest(
            batch_id=batch.batch_id,
            code=code,
            message=message,
            retryable=retryable,
            max_attempts=self.max_attempts,
        )

    async def _read(
        self, batch: Batch, members: dict[str, Request], result: IngestResult
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
                    result.rejected.append(
                        RejectedLine(
                            file_id=file_id, line=n, kind="malformed", detail=str(exc)[:200]
                        )
                    )
                    continue
                if line.custom_id not in members:
                    result.rejected.append(
                        RejectedLine(
                            file_id=file_id,
                            line=n,
                            kind="unknown_custom_id",
                            custom_id=line.custom_id,
                        )
                    )
                elif line.custom_id in outcomes:
                    result.rejected.append(
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
        batch = await self.aggregates.load_batch(batch_id)
        if batch is None or batch.state not in TO_INGEST:
            return None
        loaded = await self.aggregates.load_requests(batch.request_ids)
        members = {rid: r for rid, r in loaded.items() if r is not None}
        result = IngestResult()
        outcomes = await self._read(batch, members, result)
        decided: list[tuple[Request, list[Event]]] = []
        for rid, request in members.items():
            if (
                request.state is not RequestState.BATCHING_IN_PROGRESS
                or request.batch_id != batch_id
            ):
                continue
            command = outcomes.get(rid)
            if command is None:
                result.missing += 1
                command = self._fail(
                    batch, "missing", "no output or error line for this request", True
                )
            elif isinstance(command, CompleteRequest):
                result.completed += 1
            else:
                result.failed += 1
            try:
                decided.append((request, list(request_agg.decide(request, command))))
            except InvalidTransition as exc:
                result.rejected.append(
                    RejectedLine(file_id="", line=0, kind="refused", custom_id=rid, detail=str(exc))
                )
        faults.point("ingest.before_append")
        finish = FinishIngestion(
            completed=result.completed,
            failed=result.failed,
            missing=result.missing,
            rejected=result.rejected,
        )
        await self._append(batch, finish, decided)
        faults.point("ingest.after_append")
        result.seconds = time.perf_counter() - started
        return result

    async def release(self, batch_id: str) -> tuple[int, int] | None:
        """Send a failed batch's requests back (or fail them); (requeued, failed), or None."""
        batch = await self.aggregates.load_batch(batch_id)
        if batch is None or batch.released or batch.state.value != "FAILED":
            return None
        code = batch.failure_code or "batch_failed"
        message = batch.failure_message or "the batch failed"
        retryable = code in RETRYABLE_BATCH_FAILURES
        loaded = await self.aggregates.load_requests(batch.request_ids)
        decided: list[tuple[Request, list[Event]]] = []
        requeued = failed = 0
        for request in loaded.values():
            if (
                request is None
                or request.state is not RequestState.BATCHING_IN_PROGRESS
                or request.batch_id != batch_id
            ):
                continue
            events: list[Event] = list(
                request_agg.decide(request, self._fail(batch, code, message, retryable))
            )
            requeued += len(events) > 1
            failed += len(events) == 1
            decided.append((request, events))
        await self._append(batch, ReleaseRequests(requeued=requeued, failed=failed), decided)
        return requeued, failed

    async def _append(
        self, batch: Batch, command: Any, decided: list[tuple[Request, list[Event]]]
    ) -> None:
        # One transaction for the batch and all its requests: ingesting twice is impossible,
        # and a crash before commit leaves everything to be ingested again from scratch.
        batch_events = batch_agg.decide(batch, command)
        appends = [
            StreamAppend(
                batch_agg.stream_id(batch.batch_id),
                batch.version,
                self.aggregates.to_new_events(batch_events, self.actor),
            )
        ]
        appends += self.aggregates.request_appends(decided, self.actor)
        await self.aggregates.store.append_many(appends)
