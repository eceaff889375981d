"""The requests pages: list with filters, search and keyset paging; CSV export; one
request with its analysis and audit timeline (and its state as of any event); requeue
one failed request or every failed request of a filter."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

import msgspec
from aiohttp import web

from eventstore import RecordedEvent
from projections import console_queries as cq
from projections import request_queries as rq
from projections.queries import RequestItem
from service.adapters.tokens import Role
from service.entrypoints.api.errors import ApiError
from service.entrypoints.console.auth import see_other
from service.entrypoints.console.core import (
    PREFIX,
    ConsoleRoute,
    PageError,
    actor,
    companies,
    deps,
    session,
    valid_id,
)
from service.entrypoints.console.rendering import render
from service.entrypoints.console.settle import Projected, checkpoints_reader
from statemachine.events import (
    RequestBatched,
    RequestCompleted,
    RequestFailed,
    RequestQueued,
    RequestRequeued,
)
from statemachine.request import REQUESTS, Request, decode, fold
from statemachine.states import RequestState

PAGE_SIZE = 50
EXPORT_PAGE = 1000
REQUEUE_CURSOR_SECONDS = 900
"""A "requeue again" cursor is honoured in its quarter hour and the next."""
REQUEUE_PAGE = 500
# Pages one click requeues: an answer within a proxy's timeout; the rest on the next click
# (requeued requests leave the failed filter).
REQUEUE_PAGES = 20
PROJECTION_WAIT = 2.0
"""Seconds a requeue waits for the requests projection before showing the list."""
FILTER_FIELDS = ("status", "company", "batch", "model", "from", "to", "q")
STATUSES = tuple(s.value.lower() for s in RequestState)
_CSV_RISKY = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Filters:
    """The requests page's filters: what was typed (`raw`), what it means (`query`), and
    what was wrong with it (`errors`, one sentence each)."""

    raw: dict[str, str]
    query: rq.RequestFilter = field(default_factory=rq.RequestFilter)
    search: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def failed_only(self) -> bool:
        """Whether the filter is status=processing_failed (requeue-all is offered then)."""
        return self.raw.get("status") == "processing_failed"

    def params(self, **extra: str) -> str:
        """The filter as a query string (empty fields left out), plus `extra`."""
        pairs = [(k, v) for k, v in self.raw.items() if v] + list(extra.items())
        return urlencode(pairs)

    def scope(self) -> str:
        """What a cursor is bound to: a cursor of another filter is refused."""
        return "console-requests|" + "|".join(self.raw.get(k, "") for k in FILTER_FIELDS)

    def requeue_scope(self) -> str:
        """What a "requeue again" cursor is bound to (never a list page's cursor)."""
        return "console-requeue|" + "|".join(self.raw.get(k, "") for k in FILTER_FIELDS)


def _day(raw: str, label: str, errors: list[str]) -> date | None:
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        day = None
    if day is None or day >= date.max:  # its end, the next day's start, does not exist
        errors.append(f"{label} must be a date like 2026-03-01 (YYYY-MM-DD).")
        return None
    return day


def parse_filters(values: Mapping[str, str]) -> Filters:
    """Read the filter fields; never raises: problems are in `.errors`."""
    raw = {k: str(values.get(k, "")).strip() for k in FILTER_FIELDS}
    raw["status"] = raw["status"].lower()
    if raw["status"] == "all":
        raw["status"] = ""
    errors: list[str] = []
    statuses: tuple[RequestState, ...] = ()
    if raw["status"]:
        if raw["status"] in STATUSES:
            statuses = (RequestState(raw["status"].upper()),)
        else:
            errors.append(f"Status must be one of {', '.join(STATUSES)}, or all.")
    texts: dict[str, str | None] = {}
    for key, label in (("company", "Company"), ("batch", "Batch"), ("model", "Model")):
        value = raw[key]
        if value and not valid_id(value):
            errors.append(f"{label} may hold only letters, digits and . _ : @ - (at most 200).")
            value = ""
        texts[key] = value or None
    start, end = _day(raw["from"], "Queued from", errors), _day(raw["to"], "Queued to", errors)
    if start and end and start > end:
        errors.append("Queued from must not be after Queued to.")
    search = raw["q"] or None
    if search is not None and (len(search) > 200 or not search.isprintable()):
        errors.append("The search must be a request id or a session id (at most 200 characters).")
        search = None
    query = rq.RequestFilter(
        statuses=statuses,
        company_id=texts["company"],
        batch_id=texts["batch"],
        model=texts["model"],
        session_id=search,
        queued_from=start,
        queued_to=end,
    )
    return Filters(raw=raw, query=query, search=search, errors=errors)


def _counts(request: web.Request) -> str | None:
    """The message of a requeue, from the redirect's query."""
    try:
        done = int(request.query.get("requeued", ""))
        skipped = int(request.query.get("skipped", "0"))
    except ValueError:
        return None
    noun = "request" if done == 1 else "requests"
    more = " More failed requests remain: requeue again." if request.query.get("more") else ""
    return (
        f"Requeued {done} {noun}; skipped {skipped} (not failed, or not visible to your token)."
        + more
    )


def _cursor(request: web.Request, filters: Filters) -> int | None:
    try:
        return deps(request).cursors.decode(request.query.get("cursor") or None, filters.scope())
    except ApiError:
        raise PageError(
            400,
            "This page link is out of date or was changed. Start again from the first page"
            " of the requests list.",
        ) from None


async def requests_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/requests: filters, search, newest first, a page at a time."""
    filters = parse_filters(request.query)
    pool, scope = deps(request).store.pool, companies(request)
    ctx: dict[str, Any] = {
        "title": "Requests",
        "filters": filters,
        "statuses": STATUSES,
        "rows": [],
        "next_url": None,
        "first_url": None,
        "csv_url": f"{PREFIX}/requests.csv?{filters.params()}",
        "message": _counts(request),
        "paged": bool(request.query.get("cursor")),
        "requeue_cursor": None,
    }
    if filters.errors:
        return render(request, "requests.html", ctx, status=400)
    if filters.search is not None and "cursor" not in request.query:
        found = await rq.visible_request_id(pool, filters.search, companies=scope)
        if found is not None:
            return see_other(f"{PREFIX}/requests/{found}")
    more = request.query.get("more", "")
    if filters.failed_only and _requeue_cursor(request, filters, more) is not None:
        ctx["requeue_cursor"] = more  # "requeue again" goes on below it
    before = _cursor(request, filters)
    rows, next_seq = await rq.requests_newest_first(
        pool, filters.query, PAGE_SIZE, before_seq=before, companies=scope
    )
    cursor = deps(request).cursors.encode(next_seq, filters.scope())
    ctx["rows"] = rows
    if cursor is not None:
        ctx["next_url"] = f"{PREFIX}/requests?{filters.params(cursor=cursor)}"
    if ctx["paged"]:
        ctx["first_url"] = f"{PREFIX}/requests?{filters.params()}"
    return render(request, "requests.html", ctx, live=True)


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_CSV_RISKY) else text


def usd(micro: int) -> str:
    """Micro-dollars as dollars (6 decimals)."""
    return f"{micro / 1_000_000:.6f}"


CSV_HEADER = (
    "request_id",
    "company_id",
    "session_id",
    "model",
    "status",
    "attempts",
    "last_error_code",
    "total_tokens",
    "cost_usd",
    "queued_at",
    "batch_id",
)


def csv_row(r: RequestItem) -> list[str]:
    """One request as a CSV row (CSV_HEADER's order)."""
    values: list[object] = [
        r.request_id,
        r.company_id,
        r.session_id,
        r.model,
        r.status.value.lower(),
        r.attempts,
        r.last_error_code,
        r.total_tokens,
        usd(r.cost_micro_usd),
        r.queued_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        r.batch_id,
    ]
    return [csv_cell(v) for v in values]


async def requests_csv(request: web.Request) -> web.StreamResponse:
    """GET /admin/requests.csv: every request of the filter (not just a page), streamed."""
    filters = parse_filters(request.query)
    if filters.errors:
        raise PageError(400, " ".join(filters.errors) + " Fix the filter and export again.")
    pool, scope = deps(request).store.pool, companies(request)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="requests-{stamp}.csv"',
        }
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    before: int | None = None
    first = True
    window = await rq.seq_window(pool, filters.query)  # once for every page
    while True:
        rows, before = await rq.requests_newest_first(
            pool, filters.query, EXPORT_PAGE, before_seq=before, companies=scope, window=window
        )
        if first:  # the first read succeeded: from here the answer is a 200
            await response.prepare(request)
            first = False
        writer.writerows(csv_row(r) for r in rows)
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if before is None:
            break
    await response.write_eof()
    return response


async def requeue_filtered(request: web.Request) -> web.StreamResponse:
    """POST /admin/requests/requeue (admin): every failed request of the posted filter."""
    form = await request.post()
    filters = parse_filters({k: v for k, v in form.items() if isinstance(v, str)})
    if filters.errors:
        raise PageError(400, " ".join(filters.errors) + " Go back, fix the filter and try again.")
    filters.raw["status"] = "processing_failed"
    query = msgspec.structs.replace(filters.query, statuses=(RequestState.PROCESSING_FAILED,))
    d, scope, who = deps(request), companies(request), actor(request)
    # A later click goes on below where the last one stopped, whatever the projection
    # shows by then (requeued requests above it may still read as failed).
    cursor = form.get("cursor")
    before = _requeue_cursor(request, filters, cursor if isinstance(cursor, str) else "")
    if before is None and cursor:
        raise PageError(400, "This requeue form is out of date: reload the list and try again.")
    window = await rq.seq_window(d.store.pool, query)
    requeued = skipped = 0
    for _ in range(REQUEUE_PAGES):
        rows, before = await rq.requests_newest_first(
            d.store.pool, query, REQUEUE_PAGE, before_seq=before, companies=scope, window=window
        )
        if rows:
            done = await d.app.requeue([r.request_id for r in rows], who, companies=scope)
            requeued += done.requeued
            skipped += done.skipped + done.not_found
        if before is None:
            break
    await _requests_projected(request)
    more = d.cursors.encode(before, _requeue_scope(request, filters))
    back = filters.params(
        requeued=str(requeued), skipped=str(skipped), **({"more": more} if more else {})
    )
    return see_other(f"{PREFIX}/requests?{back}")


def _requeue_scope(request: web.Request, filters: Filters, age: int = 0) -> str:
    """A "requeue again" cursor's scope: the filter, the session, the quarter hour."""
    # A bookmarked or shared URL must not turn "requeue all" into "requeue the older ones"
    # later, or for someone else: the cursor lapses with its quarter hour (or the next).
    quarter = int(time.time() // REQUEUE_CURSOR_SECONDS) - age
    return f"{filters.requeue_scope()}|{session(request).id_hash}|{quarter}"


def _requeue_cursor(request: web.Request, filters: Filters, raw: str) -> int | None:
    """Where a "requeue again" continues (None: from the newest; or `raw` is not valid)."""
    for age in (0, 1):
        try:
            return deps(request).cursors.decode(raw or None, _requeue_scope(request, filters, age))
        except ApiError:
            continue
    return None


async def _requests_projected(request: web.Request) -> None:
    """Wait (up to PROJECTION_WAIT) for the requests projection to apply the requeues."""
    # The list shown next reads it, and would still show them as failed.
    store = deps(request).store
    waiter = Projected(checkpoints_reader(store.pool, ["requests"]))
    try:
        await waiter.reach(await store.head(), within=PROJECTION_WAIT)
    finally:
        await waiter.close()


async def requeue_one(request: web.Request) -> web.StreamResponse:
    """POST /admin/requests/{id}/requeue (admin): one failed request."""
    rid = request.match_info["id"]
    if not valid_id(rid):
        raise PageError(404, _NO_SUCH)
    done = await deps(request).app.requeue([rid], actor(request), companies=companies(request))
    if done.not_found:
        raise PageError(404, _NO_SUCH)
    return see_other(f"{PREFIX}/requests/{rid}?requeued={done.requeued}&skipped={done.skipped}")


_NO_SUCH = (
    "There is no such request, or it belongs to a company your token cannot see. Check the"
    " id, or find it from the requests list."
)


@dataclass(frozen=True)
class TimelineEntry:
    """One event of a request's stream as the timeline shows it."""

    version: int
    position: int
    type: str
    occurred_at: datetime
    actor: str
    correlation_id: str | None
    reason: str | None
    batch_id: str | None
    openai_request_id: str | None
    attempt: int | None


def _entry(e: RecordedEvent) -> TimelineEntry:
    event = decode(e.data)
    reason = batch = openai_id = None
    attempt: int | None = None
    match event:
        case RequestBatched():
            batch, attempt = event.batch_id, event.attempt
        case RequestCompleted():
            batch, openai_id = event.batch_id, event.openai_request_id
        case RequestFailed():
            batch, attempt = event.batch_id, event.attempt
            reason = f"{event.code}: {event.message}"
        case RequestRequeued():
            reason = event.reason
        case _:
            pass
    return TimelineEntry(
        version=e.version,
        position=e.position,
        type=e.type,
        occurred_at=e.metadata.occurred_at,
        actor=e.metadata.actor,
        correlation_id=e.metadata.correlation_id,
        reason=reason,
        batch_id=batch,
        openai_request_id=openai_id,
        attempt=attempt,
    )


async def request_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/requests/{id}: analysis, usage, transcript, audit timeline, and the
    request's state as of any event (?at=<version>)."""
    rid = request.match_info["id"]
    pool, scope = deps(request).store.pool, companies(request)
    if not valid_id(rid):
        raise PageError(404, _NO_SUCH)
    row = await rq.request_detail(pool, rid, companies=scope)
    if row is None:
        raise PageError(404, _NO_SUCH)
    events = await deps(request).store.read_stream(REQUESTS.stream_id(rid))
    timeline = [_entry(e) for e in events]
    at_raw = request.query.get("at", "")
    at: int | None = None
    if at_raw:
        try:
            at = int(at_raw)
        except ValueError:
            at = 0
        if not 1 <= at <= len(events):
            raise PageError(
                400,
                f"This request has events 1 to {len(events)}; pick one from its timeline.",
            )
    decoded = [decode(e.data) for e in events]
    # "Now" is folded from the log like "as of": the timeline and the state always agree,
    # even while the projection (usage, analysis) is still catching up.
    current = fold(decoded)
    state: Request | None = fold(decoded[:at]) if at is not None else None
    queued = decoded[0] if decoded else None
    transcript = queued.transcript if isinstance(queued, RequestQueued) else ""
    batch_ids = [e.batch_id for e in timeline if e.batch_id]
    openai_batches = await cq.openai_batch_ids(pool, batch_ids)
    return render(
        request,
        "request.html",
        {
            "title": f"Request {rid}",
            "r": row,
            "timeline": timeline,
            "at": at,
            "state": state,
            "current": current,
            "transcript": transcript,
            "openai_batches": openai_batches,
            "usd": usd,
            "message": _counts(request),
            "can_requeue": current is not None and current.state is RequestState.PROCESSING_FAILED,
        },
        live=True,
    )


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/requests", requests_page, Role.support, name="requests"),
    ConsoleRoute("GET", "/requests.csv", requests_csv, Role.support, name="requests_csv"),
    ConsoleRoute("POST", "/requests/requeue", requeue_filtered, Role.admin, name="requeue"),
    ConsoleRoute("GET", "/requests/{id}", request_page, Role.support, name="request"),
    ConsoleRoute("POST", "/requests/{id}/requeue", requeue_one, Role.admin, name="request_requeue"),
)
