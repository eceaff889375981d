"""The handlers of the admin API routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from eventstore import RecordedEvent
from projections import queries
from projections.batches import BatchRow
from service.actors import token_actor
from service.adapters.tokens import Principal
from service.application.ledger import Actor
from service.entrypoints.api import schemas as s
from service.entrypoints.api.deps import DEPS, PRINCIPAL, REQUEST_ID, Deps
from service.entrypoints.api.errors import ApiError
from service.entrypoints.api.io import ASCII_NUMBER, parse_body, parse_query, respond
from service.entrypoints.api.readiness import READINESS
from service.entrypoints.api.sse import follow, open_stream
from service.entrypoints.api.watch import TOKEN_WATCH
from service.feed import event_item
from service.ids import request_id as make_request_id
from service.transcripts import (
    MessageError,
    TranscriptError,
    parse_transcript,
    render,
    to_message,
    utc_time,
)
from statemachine.batch import BATCHES
from statemachine.commands import QueueRequest
from statemachine.request import REQUESTS
from statemachine.states import BatchState, RequestState


def deps(request: web.Request) -> Deps:
    """The app's collaborators."""
    return request.app[DEPS]


def actor(request: web.Request) -> Actor:
    """The calling token's name, recorded on every event a write appends."""
    principal: Principal = request[PRINCIPAL]
    return Actor(token_actor(principal.name), correlation_id=request.get(REQUEST_ID))


def companies(request: web.Request) -> frozenset[str] | None:
    """The companies the calling token may see (None: every company)."""
    principal: Principal = request[PRINCIPAL]
    return principal.companies


def visible(request: web.Request, company_id: str | None) -> bool:
    """Whether the calling token may see this company's data (an unknown company: no)."""
    principal: Principal = request[PRINCIPAL]
    return company_id is not None and principal.sees(company_id)


def _company_param(request: web.Request, company_id: str | None) -> None:
    """A 404 for a companyId parameter outside the token's companies, as for an unknown id."""
    if company_id is not None and not visible(request, company_id):
        raise ApiError(404, "not_found", f"no company {company_id!r}")


def path_id(request: web.Request) -> str:
    """The `{id}` of the path, held to the same rule as ids in bodies (a NUL never reaches SQL)."""
    try:
        return msgspec.convert(request.match_info["id"], s.Id)
    except msgspec.ValidationError:
        raise ApiError(400, "invalid_parameter", "the id in the path is not a valid id") from None


def _request_item(
    row: queries.RequestItem, kind: type[s.RequestItem] = s.RequestItem, **extra: Any
) -> Any:
    error = (
        s.ErrorInfo(row.last_error_code, row.last_error_message) if row.last_error_code else None
    )
    return kind(
        id=row.request_id,
        session_id=row.session_id,
        company_id=row.company_id,
        model=row.model,
        status=row.status.value.lower(),
        batch_id=row.batch_id,
        attempts=row.attempts,
        last_error=error,
        total_tokens=row.total_tokens,
        cost_micro_usd=row.cost_micro_usd,
        queued_at=row.queued_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        **extra,
    )


def _batch_item(row: BatchRow) -> s.BatchItem:
    return s.BatchItem(
        id=row.batch_id,
        company_id=row.company_id,
        model=row.model,
        status=row.status.value.lower(),
        request_count=row.request_count,
        openai_batch_id=row.openai_batch_id,
        openai_status=row.openai_status,
        input_file_id=row.input_file_id,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        request_counts=s.Counts(row.counts_total, row.counts_completed, row.counts_failed),
        outcome=s.Outcome(row.completed, row.failed, row.missing, row.rejected_lines),
        last_error=row.last_error,
        planned_at=row.planned_at,
        submitted_at=row.submitted_at,
        finished_at=row.finished_at,
        processed_at=row.processed_at,
        updated_at=row.updated_at,
    )


def _history(events: list[RecordedEvent]) -> list[s.HistoryEntry]:
    return [
        s.HistoryEntry(
            position=e.position,
            version=e.version,
            type=e.type,
            occurred_at=e.metadata.occurred_at,
            actor=e.metadata.actor,
            correlation_id=e.metadata.correlation_id,
            data=msgspec.Raw(e.data.encode()),
        )
        for e in events
    ]


async def summary(request: web.Request) -> web.Response:
    """Requests per status (the seed's shape)."""
    q = parse_query(request, s.SummaryQuery)
    _company_param(request, q.company_id)
    counts = await queries.summary(
        deps(request).store.pool, q.company_id, companies=companies(request)
    )
    return respond(s.SummaryResponse(summary=s.Summary(**msgspec.structs.asdict(counts))))


async def list_requests(request: web.Request) -> web.Response:
    """A keyset page of requests in one status."""
    q = parse_query(request, s.RequestsQuery)
    _company_param(request, q.company_id)
    d = deps(request)
    scope = f"requests|{q.status}|{q.company_id or ''}|{q.batch_id or ''}"
    after = d.cursors.decode(q.cursor, scope)
    rows, next_seq = await queries.requests_page(
        d.store.pool,
        RequestState(q.status.upper()),
        q.limit,
        after_seq=after,
        company_id=q.company_id,
        batch_id=q.batch_id,
        companies=companies(request),
    )
    cursor = d.cursors.encode(next_seq, scope)
    return respond(
        s.RequestsResponse(requests=[_request_item(r) for r in rows], next_cursor=cursor)
    )


async def get_request(request: web.Request) -> web.Response:
    """One request with its analysis, usage and cost."""
    parse_query(request, s.NoQuery)
    rid = path_id(request)
    row = await queries.request_detail(deps(request).store.pool, rid)
    if row is None or not visible(request, row.company_id):
        raise ApiError(404, "not_found", f"no request {rid!r}")
    a = row.analysis
    analysis = s.Analysis(**msgspec.structs.asdict(a)) if a is not None else None
    usage = s.UsageOut(row.prompt_tokens, row.completion_tokens, row.total_tokens)
    detail = _request_item(row, s.RequestDetail, source=row.source, usage=usage, analysis=analysis)
    return respond(s.RequestResponse(request=detail))


async def _stream_history(
    request: web.Request, stream_id: Callable[[str], str], entity: str
) -> web.Response:
    parse_query(request, s.NoQuery)
    entity_id = path_id(request)
    store, stream = deps(request).store, stream_id(entity_id)
    # The first event says whose stream it is: another company's is not read any further.
    first = await store.read_stream(stream, limit=1)
    if not first or not visible(request, first[0].scope):
        raise ApiError(404, "not_found", f"no {entity} {entity_id!r}")
    events = first + await store.read_stream(stream, after_version=1)
    return respond(s.HistoryResponse(id=entity_id, history=_history(events)))


async def request_history(request: web.Request) -> web.Response:
    """The request's events in order: the audit trail."""
    return await _stream_history(request, REQUESTS.stream_id, "request")


async def requeue(request: web.Request) -> web.Response:
    """Send failed requests back to waiting; the rest are counted, not touched."""
    parse_query(request, s.NoQuery)
    body = await parse_body(request, s.RequeueBody)
    done = await deps(request).app.requeue(
        body.request_ids, actor(request), companies=companies(request)
    )
    return respond(
        s.RequeueResponse(
            requeued_count=done.requeued,
            not_found_count=done.not_found,
            skipped_count=done.skipped,
        )
    )


def _transcript(body: s.EnqueueBody) -> str:
    if (body.transcript is None) == (body.messages is None):
        raise ApiError(400, "invalid_body", "give exactly one of transcript or messages")
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    if body.transcript is not None:
        # Parsing splits the turns; rendering writes them back in the one canonical form.
        try:
            parsed = parse_transcript(body.transcript)
        except TranscriptError as exc:
            raise ApiError(400, "invalid_transcript", f"transcript: {exc}") from None
        for number, message in enumerate(parsed, 1):
            try:
                utc_time(message.at, now)  # bounded only: a transcript's times stay as written
            except MessageError as exc:
                raise ApiError(
                    400, "invalid_transcript", f"transcript: message {number}: {exc}"
                ) from None
        return render(parsed)
    assert body.messages is not None
    messages = []
    for index, m in enumerate(body.messages):
        # A header inside a message would forge a turn: refused, never rewritten.
        try:
            messages.append(to_message(m.role, m.content, m.at, now))
        except MessageError as exc:
            raise ApiError(
                400, "invalid_body", f"{exc} - at `$.messages[{index}].{exc.field}`"
            ) from None
    return render(messages)


async def enqueue(request: web.Request) -> web.Response:
    """Queue one analysis request; the same company and session always give the same request."""
    parse_query(request, s.NoQuery)
    body = await parse_body(request, s.EnqueueBody)
    if not visible(request, body.company_id):
        raise ApiError(403, "forbidden", f"this token cannot write for company {body.company_id!r}")
    d = deps(request)
    rid = make_request_id(body.company_id, body.session_id)
    command = QueueRequest(
        request_id=rid,
        company_id=body.company_id,
        session_id=body.session_id,
        model=body.model or d.default_model,
        transcript=_transcript(body),
        source="api",
    )
    done = await d.app.queue([command], actor(request))
    if not done.created:
        return respond(s.EnqueueResponse(request_id=rid, created=False))
    return respond(s.EnqueueResponse(request_id=rid, created=True), status=201)


async def list_batches(request: web.Request) -> web.Response:
    """A keyset page of batches."""
    q = parse_query(request, s.BatchesQuery)
    d = deps(request)
    scope = f"batches|{q.status or ''}"
    after = d.cursors.decode(q.cursor, scope)
    rows, next_seq = await queries.batches_page(
        d.store.pool,
        q.limit,
        status=BatchState(q.status.upper()) if q.status else None,
        after_seq=after,
        companies=companies(request),
    )
    cursor = d.cursors.encode(next_seq, scope)
    return respond(s.BatchesResponse(batches=[_batch_item(r) for r in rows], next_cursor=cursor))


async def get_batch(request: web.Request) -> web.Response:
    """One batch."""
    parse_query(request, s.NoQuery)
    bid = path_id(request)
    row = await queries.batch_detail(deps(request).store.pool, bid)
    if row is None or not visible(request, row.company_id):
        raise ApiError(404, "not_found", f"no batch {bid!r}")
    return respond(s.BatchResponse(batch=_batch_item(row)))


async def batch_history(request: web.Request) -> web.Response:
    """The batch's events in order."""
    return await _stream_history(request, BATCHES.stream_id, "batch")


async def cancel_batch(request: web.Request) -> web.Response:
    """Record a batch's cancel, then send it to OpenAI; its requests follow the lifecycle."""
    parse_query(request, s.NoQuery)
    bid = path_id(request)
    sent = await deps(request).app.cancel_batch(bid, actor(request), companies=companies(request))
    return respond(s.CancelResponse(batch_id=bid, openai_cancel=sent), status=202)


def _split(raw: str | None) -> list[str] | None:
    return [x for x in raw.split(",") if x] if raw else None


async def events(request: web.Request) -> web.Response:
    """The global event feed, paged by position."""
    q = parse_query(request, s.EventsQuery)
    seen = companies(request)
    page = await deps(request).store.read_all(
        q.after,
        q.limit,
        types=_split(q.type),
        categories=_split(q.category),
        scopes=None if seen is None else sorted(seen),
    )
    if not page:
        await _not_past_the_head(request, q.after, "invalid_parameter", "after")
    next_after = page[-1].position if page else q.after
    return respond(s.EventsResponse(events=[event_item(e) for e in page], next_after=next_after))


async def _not_past_the_head(request: web.Request, after: int, code: str, name: str) -> None:
    # A position past the newest event was never handed out (positions only grow): a
    # client following it would wait forever, so it is told now.
    seen = companies(request)
    # A scoped token is told about its companies' newest event only, not the log's.
    head = await deps(request).store.head(scopes=None if seen is None else sorted(seen))
    if after and after > head:
        raise ApiError(400, code, f"{name} is past the newest event; resume from a position given")


def last_event_id(request: web.Request) -> int | None:
    """The Last-Event-ID header as a position: ASCII digits only, else a 400."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        return None
    if not ASCII_NUMBER.fullmatch(raw):
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an event position")
    return int(raw)


async def events_stream(request: web.Request) -> web.StreamResponse:
    """The feed as Server-Sent Events: resumable with Last-Event-ID, with heartbeats."""
    q = parse_query(request, s.EventsQuery)
    d = deps(request)
    resumed = last_event_id(request)
    if resumed is None:
        after = q.after
        await _not_past_the_head(request, after, "invalid_parameter", "after")
    else:
        after = resumed
        await _not_past_the_head(request, after, "invalid_last_event_id", "Last-Event-ID")
    response = await open_stream(request)
    if request.method == "HEAD":
        return response  # the headers only: no stream behind them
    seen = companies(request)
    sub = d.store.subscribe(
        after,
        types=_split(q.type),
        categories=_split(q.category),
        scopes=None if seen is None else sorted(seen),
        page_size=q.limit,
    )
    encode = msgspec.json.Encoder().encode

    def frame(e: RecordedEvent) -> bytes:
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (
            e.position,
            e.type.encode(),
            encode(event_item(e)),
        )

    await follow(
        request,
        response,
        sub,
        watch=request.config_dict[TOKEN_WATCH],
        key=request[PRINCIPAL].token_id,
        heartbeat=d.heartbeat_seconds,
        frame=frame,
        farewell=b": token revoked or expired\n\n",
    )
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return respond(s.Health(ok=True))


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and every migration is applied (cached briefly); the
    relay, when it runs, is reported."""
    d = deps(request)
    status, health = await request.app[READINESS].check(d.store.pool, d.metrics.relay)
    return respond(health, status=status)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    d = deps(request)
    body = await d.metrics.render_for(d.store, companies(request))
    return web.Response(body=body, content_type="text/plain", charset="utf-8")
