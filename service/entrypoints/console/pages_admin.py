"""The superadmin pages: API tokens (list, create, revoke) and projections (status, rebuild).

Tokens are administered with the adapters the CLI and the API use, with the signed-in
token as the actor (`token:<name>`, as over the API). A new token is shown once, in the
answer to the form's POST: never in a URL, a log line or the browser's storage.

A rebuild runs as a background task of the console application (`RebuildJobs`, started
and cancelled with it through `rebuild_jobs`, its cleanup context), one at a time per
projection, through `projections.rebuild.rebuild`; the page shows its progress in the
`status` fragment, which admin.js polls while a rebuild runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from eventstore import EventStore
from projections import rebuild as rebuilding
from projections.base import Projection
from projections.registry import all_projections, status
from service.adapters.tokens import (
    NameTaken,
    Role,
    TokenError,
    check_name,
    create_token,
    get_token,
    list_tokens,
    parse_duration,
    revoke_token,
)
from service.entrypoints.console.auth import see_other
from service.entrypoints.console.core import (
    CONSOLE,
    PREFIX,
    ConsoleRoute,
    PageError,
    actor,
    companies,
    console,
    deps,
    principal,
)
from service.entrypoints.console.rendering import render

# -- tokens

ROLE_NAMES = tuple(r.name for r in Role)


@dataclass(frozen=True)
class TokenForm:
    """What the create form holds (echoed back when it is refused)."""

    name: str = ""
    role: str = Role.support.name
    companies: str = ""
    expires: str = ""


def _text(form: Any, key: str, limit: int = 2_000) -> str:
    value = form.get(key, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def _company_list(text: str) -> list[str] | None:
    """The comma-separated companies of the form; None (every company) when empty."""
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    return chosen or None


async def _tokens_context(request: web.Request) -> dict[str, Any]:
    within = companies(request)
    found = await list_tokens(deps(request).store.pool, within=within)
    now = datetime.now(UTC)
    return {
        "title": "Tokens",
        "tokens": found,
        "now": now,
        "roles": ROLE_NAMES,
        "form": TokenForm(),
        "form_error": None,
        "created": None,
        "notice": None,
        "scoped": within is not None,
    }


async def tokens_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/tokens: every token (a scoped superadmin: those within its companies)."""
    context = await _tokens_context(request)
    revoked = request.query.get("revoked")
    if revoked:
        context["notice"] = (
            f"Token {revoked} revoked: it no longer works for the API, and its console"
            " sessions have ended."
        )
    return render(request, "tokens.html", context)


async def token_create(request: web.Request) -> web.StreamResponse:
    """POST /admin/tokens: create a token and show it this once (the answer is not cached)."""
    posted = await request.post()
    form = TokenForm(
        name=_text(posted, "name", 200),
        role=_text(posted, "role", 20),
        companies=_text(posted, "companies"),
        expires=_text(posted, "expires", 20),
    )
    context = await _tokens_context(request)
    context["form"] = form
    problem = _check_form(request, form)
    if problem is not None:
        return _form_refused(request, context, *problem)
    wanted = _company_list(form.companies)
    pool = deps(request).store.pool
    by = actor(request).name
    try:
        expires_in = parse_duration(form.expires) if form.expires else None
        token = await create_token(
            pool, form.name, Role[form.role], by=by, companies=wanted, expires_in=expires_in
        )
    except NameTaken as e:
        return _form_refused(request, context, 409, f"{str(e).capitalize()}.")
    except TokenError as e:
        return _form_refused(request, context, 400, f"{str(e).capitalize()}.")
    console(request).log.info(
        "token.created", name=form.name, role=form.role, companies=wanted, by=by
    )
    context.update(await _tokens_context(request))  # the list with the new token
    context["created"] = {"token": token, "info": await get_token(pool, form.name)}
    return render(request, "tokens.html", context, status=201)


def _check_form(request: web.Request, form: TokenForm) -> tuple[int, str] | None:
    """(status, message) of a form that cannot be carried out, else None."""
    if not form.name:
        return 400, "Give the token a name."
    if form.role not in ROLE_NAMES:
        return 400, f"Choose a role: {', '.join(ROLE_NAMES)}."
    grantor = principal(request).companies
    wanted = _company_list(form.companies)
    if grantor is not None:
        if wanted is None:
            return 403, (
                "Your token is limited to companies, so it cannot create a token for every"
                f" company: list some of {', '.join(sorted(grantor))}."
            )
        outside = sorted(set(wanted) - grantor)
        if outside:
            return 403, f"Your token cannot grant {', '.join(outside)}."
    return None


def _form_refused(
    request: web.Request, context: dict[str, Any], status: int, message: str
) -> web.StreamResponse:
    context["form_error"] = message
    return render(request, "tokens.html", context, status=status)


async def token_revoke(request: web.Request) -> web.StreamResponse:
    """POST /admin/tokens/{name}/revoke: effective at once, for the API and the console."""
    name = request.match_info["name"]
    by = actor(request).name
    try:
        check_name(name)
    except TokenError:
        done = False  # no token can have that name
    else:
        done = await revoke_token(deps(request).store.pool, name, by=by, within=companies(request))
    if not done:
        raise PageError(
            404,
            f"There is no active token named {name}: it may be revoked already. Reload"
            " the tokens page.",
        )
    console(request).log.info("token.revoked", name=name, by=by)
    url = request.app.router["tokens"].url_for().with_query(revoked=name)
    return see_other(str(url))


# -- projections


@dataclass
class RebuildJob:
    """One rebuild of a projection: where it stands, and how it ended."""

    name: str
    started_by: str
    started_at: datetime
    task: asyncio.Task[None] | None = None
    position: int = 0
    total: int = 0
    events: int = 0
    seconds: float = 0.0
    finished_at: datetime | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def percent(self) -> int:
        if not self.running:
            return 100 if self.error is None else 0
        return min(99, int(100 * self.position / self.total)) if self.total else 0


@dataclass
class RebuildJobs:
    """The console's rebuilds, by projection name: at most one running for each."""

    store: EventStore
    log: Any
    jobs: dict[str, RebuildJob] = field(default_factory=dict)

    def start(self, projection: Projection, started_by: str) -> RebuildJob:
        """Start rebuilding `projection`; a RebuildRunning when it is being rebuilt."""
        current = self.jobs.get(projection.name)
        if current is not None and current.running:
            raise RebuildRunning(current)
        job = RebuildJob(projection.name, started_by, datetime.now(UTC))
        job.task = asyncio.create_task(self._rebuild(job, projection))
        self.jobs[projection.name] = job
        return job

    async def _rebuild(self, job: RebuildJob, projection: Projection) -> None:
        def progress(position: int, head: int) -> None:
            job.position, job.total = position, head

        started = time.perf_counter()
        self.log.info("projection.rebuild_started", name=job.name, by=job.started_by)
        try:
            # Looked up at each start, so that a test can slow the rebuild down.
            job.events = await rebuilding.rebuild(self.store, [projection], progress=progress)
        except asyncio.CancelledError:
            job.error = "stopped: the server shut down"
            raise
        except Exception as e:
            job.error = f"{type(e).__name__}: {e}"
            self.log.exception("projection.rebuild_failed", name=job.name)
        finally:
            job.seconds = time.perf_counter() - started
            job.finished_at = datetime.now(UTC)
        if job.error is None:
            job.position = job.total = max(job.total, job.position)
            self.log.info(
                "projection.rebuilt", name=job.name, events=job.events, seconds=job.seconds
            )

    async def stop(self) -> None:
        """Cancel the running rebuilds (their shadow tables are dropped by the next one)."""
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class RebuildRunning(Exception):
    """A rebuild of that projection is running."""

    def __init__(self, job: RebuildJob):
        super().__init__(job.name)
        self.job = job


REBUILDS = web.AppKey("console_rebuilds", RebuildJobs)


async def rebuild_jobs(app: web.Application) -> AsyncIterator[None]:
    """The console application's cleanup context: its rebuilds end with it."""
    c = app[CONSOLE]
    app[REBUILDS] = RebuildJobs(c.deps.store, c.log)
    yield
    await app[REBUILDS].stop()


def _jobs(request: web.Request) -> RebuildJobs:
    return request.config_dict[REBUILDS]


@dataclass(frozen=True)
class ProjectionRow:
    """A projection as the page shows it."""

    name: str
    checkpoint: int
    lag: int
    rows: dict[str, int]
    job: RebuildJob | None


async def projections_page(
    request: web.Request, *, status_code: int = 200, error: str = ""
) -> web.StreamResponse:
    """GET /admin/projections: checkpoints, the log head, lag, rows, and rebuilds."""
    store = deps(request).store
    jobs = _jobs(request).jobs
    found = await status(store)
    head = max((p.checkpoint + p.lag for p in found), default=0)
    rows = [ProjectionRow(p.name, p.checkpoint, p.lag, p.rows, jobs.get(p.name)) for p in found]
    context = {
        "title": "Projections",
        "projections": rows,
        "head": head,
        "now": datetime.now(UTC),
        "running": any(r.job is not None and r.job.running for r in rows),
        "error": error,
    }
    return render(request, "projections.html", context, status=status_code, live=True)


async def projections_get(request: web.Request) -> web.StreamResponse:
    """GET /admin/projections."""
    return await projections_page(request)


async def projection_rebuild(request: web.Request) -> web.StreamResponse:
    """POST /admin/projections/{name}/rebuild: start a rebuild in the background."""
    name = request.match_info["name"]
    projection = all_projections().get(name)
    if projection is None:
        raise PageError(404, f"There is no projection named {name!r}. Reload the page.")
    try:
        _jobs(request).start(projection, actor(request).name)
    except RebuildRunning as e:
        started = e.job.started_at.strftime("%H:%M:%S UTC")
        return await projections_page(
            request,
            status_code=409,
            error=f"A rebuild of {name} is already running (started {started} by"
            f" {e.job.started_by}); wait for it to finish.",
        )
    return see_other(f"{PREFIX}/projections")


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/tokens", tokens_page, Role.superadmin, name="tokens"),
    ConsoleRoute("POST", "/tokens", token_create, Role.superadmin, name="token_create"),
    ConsoleRoute(
        "POST", "/tokens/{name}/revoke", token_revoke, Role.superadmin, name="token_revoke"
    ),
    ConsoleRoute("GET", "/projections", projections_get, Role.superadmin, name="projections"),
    ConsoleRoute(
        "POST",
        "/projections/{name}/rebuild",
        projection_rebuild,
        Role.superadmin,
        name="projection_rebuild",
    ),
)
