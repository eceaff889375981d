"""The batches pages: the list (filters, keyset paging, newest first), a batch's detail
with its requests and timeline, and cancel (admin)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import msgspec
from aiohttp import web

from projections import console_queries as cq
from service.adapters.tokens import Role
from service.application.errors import Missing
from service.entrypoints.api import schemas as s
from service.entrypoints.console.auth import see_other
from service.entrypoints.console.core import (
    PREFIX,
    ConsoleRoute,
    PageError,
    actor,
    companies,
    console,
    deps,
    valid_id,
)
from service.entrypoints.console.pages import age, usd
from service.entrypoints.console.rendering import render
from statemachine.states import ACTIVE, BatchState

PAGE_SIZE = 25
"""Batches per page of the list."""
REQUESTS_SHOWN = 50
"""Requests of a batch shown on its page (the first ones; the requests page has them all)."""

PROJECTION_WAIT = 2.0
"""Seconds a cancel waits for the batches projection before showing the batch page."""

NO_SUCH_BATCH = (
    "There is no such batch, or it belongs to a company your token cannot see. Check the"
    " link, or pick the batch from the batches list."
)

CANCEL_MESSAGES: dict[str, tuple[str, str]] = {
    "sent": (
        "notice",
        "Cancel sent: OpenAI took it and the batch is cancelling. The poller records when"
        " OpenAI has cancelled it; its finished requests are kept and the others fail"
        " and can be requeued.",
    ),
    "deferred": (
        "notice",
        "Cancel recorded, but OpenAI did not answer. The poller sends it again by itself;"
        " nothing else to do.",
    ),
    "refused": (
        "error",
        "Cancel recorded, but OpenAI refused it: the batch had most likely ended there"
        " already. The poller records how it ended.",
    ),
}
"""What the batch page says after a cancel, by `openai_cancel` (class, text)."""


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    """The list's filters as the query string gives them."""

    status: BatchState | None = None
    company: str | None = None
    before: int | None = None

    def query(self, **changes: object) -> str:
        """`?…` of these filters with `changes` (None drops a key); empty when none."""
        values: dict[str, object] = {
            "status": self.status.value if self.status else None,
            "company": self.company,
            "before": self.before,
            **changes,
        }
        kept = {k: str(v) for k, v in values.items() if v not in (None, "")}
        return f"?{urlencode(kept)}" if kept else ""


def _filters(request: web.Request) -> Filters:
    q = request.query
    raw_status = q.get("status") or None
    raw_before = q.get("before") or None
    company = (q.get("company") or "").strip() or None
    if company is not None and not valid_id(company):
        raise PageError(400, "A company id is letters, digits and . _ : @ - (at most 200).")
    try:
        status = BatchState(raw_status.upper()) if raw_status else None
    except ValueError:
        raise PageError(
            400, f"There is no batch status {raw_status!r}: pick one from the Status list."
        ) from None
    before = None
    if raw_before is not None:
        if not raw_before.isascii() or not raw_before.isdigit() or len(raw_before) > 18:
            raise PageError(
                400, "The page link is not valid: go back to the first page of the list."
            )
        before = int(raw_before)
    return Filters(status=status, company=company, before=before)


# Plain quotes: the template escapes the text (a repr's quotes and escapes read oddly).
NOT_FOUND_SEARCH = (
    'No batch has the id or OpenAI batch id "{text}" that your token can see. Check it,'
    " or find the batch in the list."
)


async def _search(request: web.Request) -> tuple[web.StreamResponse | None, str | None]:
    """?q=: a batch id or an OpenAI batch id opens that batch; else what to say."""
    text = (request.query.get("q") or "").strip()
    if not text:
        return None, None
    if not valid_id(text):
        return None, NOT_FOUND_SEARCH.format(text=text[:200])
    pool = deps(request).store.pool
    found = await cq.find_batch(pool, text, companies=companies(request))
    if found is None:
        return None, NOT_FOUND_SEARCH.format(text=text)
    return see_other(f"{PREFIX}/batches/{quote(found, safe='')}"), None


async def batches_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/batches: batches, newest first, filtered by status and company; ?q= opens
    the batch with that id or OpenAI batch id."""
    f = _filters(request)
    opened, search_error = await _search(request)
    if opened is not None:
        return opened
    seen = companies(request)
    pool = deps(request).store.pool
    rows, next_before = await cq.batches_newest(
        pool,
        PAGE_SIZE,
        status=f.status,
        company_id=f.company,
        before_seq=f.before,
        companies=seen,
    )
    context = {
        "title": "Batches",
        "rows": rows,
        "filters": f,
        "statuses": list(BatchState),
        "companies": await cq.batch_companies(pool, companies=seen),
        "next_url": (
            f"{PREFIX}/batches{f.query(before=next_before)}" if next_before is not None else None
        ),
        "first_url": f"{PREFIX}/batches{f.query(before=None)}" if f.before is not None else None,
        "filtered": f.status is not None or f.company is not None,
        "now": datetime.now(UTC),
        "age": age,
        "usd": usd,
        "search": request.query.get("q", "").strip(),
        "search_error": search_error,
    }
    return render(request, "batches.html", context, live=True)


def _batch_id(request: web.Request) -> str:
    """The `{id}` of the path, held to the API's rule for ids; anything else is unknown."""
    try:
        return msgspec.convert(request.match_info["id"], s.Id)
    except msgspec.ValidationError:
        raise PageError(404, NO_SUCH_BATCH) from None


async def batch_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/batches/{id}: the batch, its first requests and its timeline; the same
    404 for an unknown batch and another company's."""
    bid = _batch_id(request)
    seen = companies(request)
    d = deps(request)
    batch = await cq.batch_detail(d.store.pool, bid, companies=seen)
    if batch is None:
        raise PageError(404, NO_SUCH_BATCH)
    part = request.query.get("fragment")
    timeline = None
    if part in (None, "timeline"):
        timeline = await cq.batch_timeline(d.store, bid, companies=seen)
        if timeline is None:  # a projected batch always has its stream; be safe
            raise PageError(404, NO_SUCH_BATCH)
    requests_ = []
    if part in (None, "requests"):
        requests_ = await cq.batch_requests(d.store.pool, bid, REQUESTS_SHOWN, companies=seen)
    outcome = CANCEL_MESSAGES.get(request.query.get("cancel", ""))
    context = {
        "title": f"Batch {bid}",
        "batch": batch,
        "timeline": timeline or [],
        "requests": requests_,
        "requests_shown": REQUESTS_SHOWN,
        "cancellable": batch.status in ACTIVE and batch.openai_batch_id is not None,
        "dashboard": console(request).settings.openai_dashboard,
        "outcome": outcome,
        "now": datetime.now(UTC),
        "age": age,
        "usd": usd,
    }
    return render(request, "batch.html", context, live=True)


async def batch_cancel(request: web.Request) -> web.StreamResponse:
    """POST /admin/batches/{id}/cancel (admin): record the cancel, send it to OpenAI, and
    go back to the batch page saying what OpenAI answered. An unknown batch or another
    company's is a 404; a batch no longer running, a 409 (the guard's pages)."""
    bid = _batch_id(request)
    try:
        sent = await deps(request).app.cancel_batch(
            bid, actor(request), companies=companies(request)
        )
    except Missing:
        raise PageError(404, NO_SUCH_BATCH) from None
    # The batch page reads the projection: let it apply the cancel first (the runner
    # follows the log within moments; the page says so and refreshes live if not).
    d = deps(request)
    head = await d.store.head()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PROJECTION_WAIT):
            await cq.wait_projected(d.store.pool, "batches", head)
    return see_other(f"{PREFIX}/batches/{bid}?{urlencode({'cancel': sent})}")


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/batches", batches_page, Role.support, name="batches"),
    ConsoleRoute("GET", "/batches/{id}", batch_page, Role.support, name="batch"),
    ConsoleRoute("POST", "/batches/{id}/cancel", batch_cancel, Role.admin, name="batch_cancel"),
)
