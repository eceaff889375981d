"""The Request aggregate: its machine, state, decide and evolve (single and bulk)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

import msgspec

from statemachine.commands import (
    AssignToBatch,
    CompleteRequest,
    FailRequest,
    QueueRequest,
    RequeueRequest,
)
from statemachine.decider import Decider
from statemachine.errors import AlreadyExists, NotFound
from statemachine.events import (
    RequestBatched,
    RequestCompleted,
    RequestEvent,
    RequestFailed,
    RequestQueued,
    RequestRequeued,
)
from statemachine.machine import Declaration
from statemachine.states import RequestState as RS

RequestCommand = QueueRequest | AssignToBatch | CompleteRequest | FailRequest | RequeueRequest


class Request(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A request as its events left it; `version` is its stream version."""

    request_id: str
    company_id: str
    session_id: str
    model: str
    state: RS = RS.PENDING_BATCHING
    attempts: int = 0
    retry_base: int = 0  # attempts already used when an admin last requeued it
    batch_id: str | None = None
    version: int = 0


def _from_current_batch(r: Request, c: CompleteRequest | FailRequest) -> bool:
    return c.batch_id is None or c.batch_id == r.batch_id


def _can_retry(r: Request, c: FailRequest) -> bool:
    return c.retryable and (not c.charged or r.attempts - r.retry_base < c.max_attempts)


REQUEST_MACHINE: Declaration[RS] = Declaration(
    entity="request",
    states=RS,
    initial=RS.PENDING_BATCHING,
    transitions=[
        {"trigger": "assign", "source": RS.PENDING_BATCHING, "dest": RS.BATCHING_IN_PROGRESS},
        {
            "trigger": "complete",
            "source": RS.BATCHING_IN_PROGRESS,
            "dest": RS.PROCESSING_COMPLETE,
            "conditions": ["from_current_batch"],
        },
        {
            "trigger": "fail",
            "source": RS.BATCHING_IN_PROGRESS,
            "dest": RS.PENDING_BATCHING,
            "conditions": ["from_current_batch", "can_retry"],
        },
        {
            "trigger": "fail",
            "source": RS.BATCHING_IN_PROGRESS,
            "dest": RS.PROCESSING_FAILED,
            "conditions": ["from_current_batch"],
        },
        {"trigger": "requeue", "source": RS.PROCESSING_FAILED, "dest": RS.PENDING_BATCHING},
    ],
    guards={"from_current_batch": _from_current_batch, "can_retry": _can_retry},
)


def decide(state: Request | None, command: RequestCommand) -> list[RequestEvent]:
    """The events a command produces for a request, or a DomainError."""
    if isinstance(command, QueueRequest):
        if state is not None:
            raise AlreadyExists("request", command.request_id)
        return [
            RequestQueued(
                request_id=command.request_id,
                company_id=command.company_id,
                session_id=command.session_id,
                model=command.model,
                transcript=command.transcript,
                source=command.source,
            )
        ]
    if state is None:
        raise NotFound("request", "?")
    dest = REQUEST_MACHINE.route(state.request_id, state.state, command.trigger, state, command)
    return _emit(state, command, dest)


def _emit(r: Request, command: RequestCommand, dest: RS) -> list[RequestEvent]:
    rid = r.request_id
    match command:
        case QueueRequest():
            raise AssertionError("QueueRequest is decided before any state exists")
        case AssignToBatch():
            return [
                RequestBatched(request_id=rid, batch_id=command.batch_id, attempt=r.attempts + 1)
            ]
        case CompleteRequest():
            return [
                RequestCompleted(
                    request_id=rid,
                    batch_id=command.batch_id,
                    analysis=command.analysis,
                    usage=command.usage,
                    cost_micro_usd=command.cost_micro_usd,
                    openai_request_id=command.openai_request_id,
                )
            ]
        case FailRequest():
            failed = RequestFailed(
                request_id=rid,
                batch_id=command.batch_id,
                code=command.code,
                message=command.message,
                retryable=command.retryable,
                attempt=r.attempts,
            )
            if dest is RS.PENDING_BATCHING:
                reason = "retry" if command.charged else "not_at_fault"
                return [failed, RequestRequeued(request_id=rid, reason=reason)]
            return [failed]
        case RequeueRequest():
            return [RequestRequeued(request_id=rid, reason="admin")]
        case _:
            assert_never(command)


def recorded_trigger(event: RequestEvent) -> str | None:
    """The trigger an event records (None: the event creates the request)."""
    match event:
        case RequestQueued():
            return None
        case RequestBatched():
            return "assign"
        case RequestCompleted():
            return "complete"
        case RequestFailed():
            return "fail"
        case RequestRequeued():
            return "requeue"
        case _:
            assert_never(event)


def next_state(request_id: str, state: RS, event: RequestEvent) -> RS:
    """The state after one event, read off the declaration: the one rule evolve and the
    projections share."""
    return REQUEST_MACHINE.after(request_id, state, type(event), _trigger, event)


def _trigger(_: RS, event: RequestEvent) -> str | None:
    return recorded_trigger(event)


def evolve(state: Request | None, event: RequestEvent) -> Request:
    """The request after one event."""
    if isinstance(event, RequestQueued):
        return Request(
            request_id=event.request_id,
            company_id=event.company_id,
            session_id=event.session_id,
            model=event.model,
            version=1,
        )
    assert state is not None, f"{type(event).__name__} before RequestQueued"
    moved = msgspec.structs.replace(
        state,
        state=next_state(state.request_id, state.state, event),
        version=state.version + 1,
    )
    match event:
        case RequestBatched():
            return msgspec.structs.replace(moved, batch_id=event.batch_id, attempts=event.attempt)
        case RequestRequeued():
            return msgspec.structs.replace(
                moved, batch_id=None, retry_base=_retry_base(state, event)
            )
        case RequestCompleted() | RequestFailed():
            return moved
        case _:
            assert_never(event)


def _retry_base(r: Request, event: RequestRequeued) -> int:
    """Attempts that no longer count against the limit after this requeue."""
    if event.reason == "admin":
        return r.attempts
    if event.reason == "not_at_fault":
        return r.retry_base + 1  # the attempt just used is given back
    return r.retry_base


def fold(events: Sequence[RequestEvent]) -> Request | None:
    """The request its events describe (None for no events)."""
    return REQUESTS.fold(events)


def decide_many(requests: Sequence[Request], command: RequestCommand) -> list[list[RequestEvent]]:
    """Apply one command to many requests (a whole batch) through the derived table.

    No Machine and no `add_model` per request: the route of each distinct state is
    looked up once, and guards run only where the declaration has them.
    """
    if isinstance(command, QueueRequest):
        raise TypeError("QueueRequest creates one request; use decide()")
    trigger, table = command.trigger, REQUEST_MACHINE.table
    unguarded = {
        state: alts[0][0] for (state, t), alts in table.items() if t == trigger and not alts[0][1]
    }
    out = []
    for r in requests:
        dest = unguarded.get(r.state)
        if dest is None:
            dest = REQUEST_MACHINE.route(r.request_id, r.state, trigger, r, command)
        out.append(_emit(r, command, dest))
    return out


_decode = msgspec.json.Decoder(RequestEvent).decode


def decode(data: bytes | str) -> RequestEvent:
    """A stored request event."""
    return _decode(data)


def _company(state: Request) -> str:
    return state.company_id


REQUESTS: Decider[Request, RequestCommand, RequestEvent] = Decider(
    category="request",
    decode=decode,
    decide=decide,
    decide_many=decide_many,
    evolve=evolve,
    scope_of=_company,
)
"""The request aggregate's decider record; its streams are `request-<id>`."""
