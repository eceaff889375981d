"""The overview page: requests per status, batches in flight, cost, requests finished per
hour and projection lag, limited to the signed-in token's companies. The other pages live
in pages_requests, pages_batches and pages_admin."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from projections import console_queries as cq
from projections.queries import StatusCounts
from service.adapters.tokens import Role
from service.entrypoints.console.core import ConsoleRoute, companies, deps
from service.entrypoints.console.rendering import render
from statemachine.states import RequestState

IN_FLIGHT_SHOWN = 50
"""The overview lists at most this many batches in flight (the oldest first)."""
CHART_HOURS = 24

# The chart's drawing box, in SVG user units (the SVG scales to its container).
CHART_WIDTH, CHART_HEIGHT = 720, 200
CHART_LEFT, CHART_BOTTOM, CHART_TOP = 40, 24, 12


class Status(msgspec.Struct, frozen=True):
    """A request status as the overview names it: its field in StatusCounts, its state
    name, a label for people and a CSS class."""

    key: str
    name: str
    label: str
    css: str


STATUSES = (
    Status("pending_batching", RequestState.PENDING_BATCHING.value, "Waiting for a batch", ""),
    Status(
        "batching_in_progress",
        RequestState.BATCHING_IN_PROGRESS.value,
        "In a batch at OpenAI",
        "status-warn",
    ),
    Status(
        "processing_complete",
        RequestState.PROCESSING_COMPLETE.value,
        "Completed",
        "status-ok",
    ),
    Status("processing_failed", RequestState.PROCESSING_FAILED.value, "Failed", "status-bad"),
)


class Bar(msgspec.Struct, frozen=True):
    """One hour's bar of the chart: geometry in SVG units, and what it stands for."""

    hour: datetime
    completed: int
    failed: int
    x: float
    width: float
    completed_y: float
    completed_height: float
    failed_y: float
    failed_height: float
    label: str


class Tick(msgspec.Struct, frozen=True):
    """A label of an axis: where, and its text."""

    x: float
    y: float
    text: str


class Chart(msgspec.Struct, frozen=True):
    """The finished-per-hour bar chart, laid out for an inline SVG."""

    width: int
    height: int
    left: int
    base: int
    top: int
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    peak: int
    total_completed: int
    total_failed: int


def _nice_ceiling(n: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at or above n (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= n:
                return step * m
        step *= 10


def chart(buckets: list[cq.HourBucket]) -> Chart:
    """The bars of `buckets`, stacked (completed below, failed on top), scaled to the
    busiest hour."""
    peak = max((b.total for b in buckets), default=0)
    scale_max = _nice_ceiling(peak)
    base = CHART_HEIGHT - CHART_BOTTOM
    plot_height = base - CHART_TOP
    slot = (CHART_WIDTH - CHART_LEFT) / max(len(buckets), 1)
    width = round(slot * 0.7, 2)
    bars, x_ticks = [], []
    for i, b in enumerate(buckets):
        x = round(CHART_LEFT + i * slot + (slot - width) / 2, 2)
        ch = round(plot_height * b.completed / scale_max, 2)
        fh = round(plot_height * b.failed / scale_max, 2)
        label = f"{b.hour:%H}:00 UTC: {b.completed} completed, {b.failed} failed"
        bars.append(
            Bar(b.hour, b.completed, b.failed, x, width, base - ch, ch, base - ch - fh, fh, label)
        )
        if i % 3 == 0:
            x_ticks.append(Tick(round(x + width / 2, 2), CHART_HEIGHT - 6, f"{b.hour:%H}"))
    y_ticks = [
        Tick(CHART_LEFT - 6, round(base - plot_height * v / scale_max, 2), str(v))
        for v in sorted({0, scale_max // 2, scale_max})
    ]
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        left=CHART_LEFT,
        base=base,
        top=CHART_TOP,
        bars=bars,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        peak=peak,
        total_completed=sum(b.completed for b in buckets),
        total_failed=sum(b.failed for b in buckets),
    )


def usd(micro: int) -> str:
    """Micro-USD as dollars for people: `$12.35`, and below a cent `$0.0042`."""
    dollars = micro / 1_000_000
    if micro and abs(dollars) < 0.01:
        return f"${dollars:.4f}"
    return f"${dollars:,.2f}"


def age(since: datetime | None, now: datetime) -> str:
    """How long ago `since` was, for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    if since is None:
        return "—"
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def count_of(counts: StatusCounts, status: Status) -> int:
    value: int = getattr(counts, status.key)
    return value


async def overview(request: web.Request) -> web.StreamResponse:
    """GET /admin/: the overview, live (each part is a fragment the live channel refreshes)."""
    seen = companies(request)
    d = deps(request)
    pool, now = d.store.pool, datetime.now(UTC)
    part = request.query.get("fragment")
    context: dict[str, object] = {
        "title": "Overview",
        "now": now,
        "statuses": STATUSES,
        "count_of": count_of,
        "usd": usd,
        "age": age,
        "scoped": seen is not None,
    }
    # A fragment request computes only what its block shows.
    if part in (None, "activity"):
        context["head"] = await d.store.head(scopes=None if seen is None else sorted(seen))
    if part in (None, "statuses"):
        context["summary"] = await cq.status_overview(pool, companies=seen)
    if part in (None, "in_flight"):
        context["in_flight"] = await cq.batches_in_flight(pool, IN_FLIGHT_SHOWN, companies=seen)
    if part in (None, "costs"):
        context["costs"] = await cq.costs(pool, now, companies=seen)
    if part in (None, "chart"):
        buckets = await cq.finished_per_hour(pool, now, hours=CHART_HOURS, companies=seen)
        context["chart"] = chart(buckets)
    if part in (None, "lag"):
        # The log and the projections are every company's: a scoped token sees no lag.
        context["lag"] = None if seen is not None else await cq.projection_lag(pool)
    return render(request, "overview.html", context, live=True)


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/", overview, Role.support, name="overview"),
)
