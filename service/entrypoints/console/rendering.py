"""Templates through aiohttp-jinja2: pages, `?fragment=` partials, and the error pages.

Every template gets the base context (`principal`, `can`, `nav`, `csrf_token`, ...),
the globals `csrf_field()`, `static_url(name)` and `url(route_name, **parts)`, and the
filter `time` (`{{ row.updated_at | time }}`). Autoescaping is on and an undefined name
is an error, not an empty string.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup

from service.adapters.tokens import Role
from service.entrypoints.api.deps import REQUEST_ID
from service.entrypoints.console.core import (
    CSRF_FIELD,
    NAV,
    PREFIX,
    SESSION,
    SIGNIN_CSRF,
    Asset,
    PageError,
)

TEMPLATES = Path(__file__).parent / "templates"
_FRAGMENT = re.compile(r"[a-z0-9_]{1,64}")


@dataclass(frozen=True)
class NavLink:
    """A navigation entry as the header shows it."""

    label: str
    href: str
    current: bool


def time_tag(value: datetime | None, empty: str = "—") -> Markup:
    """`<time>` of a moment: UTC in the markup and its title; console.js shows it in the
    viewer's zone. A naive datetime is taken as UTC; None shows `empty`."""
    if value is None:
        return Markup("{}").format(empty)
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    iso = utc.isoformat(timespec="seconds").replace("+00:00", "Z")
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, shown, shown)


@jinja2.pass_context
def csrf_field(context: jinja2.runtime.Context) -> Markup:
    """The hidden field every console form must carry: `{{ csrf_field() }}`."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        CSRF_FIELD, context["csrf_token"]
    )


def setup_templates(app: web.Application, assets: Mapping[str, Asset]) -> jinja2.Environment:
    """The console's Jinja environment, registered on its sub-application."""

    def static_url(name: str) -> str:
        asset = assets[name]  # an unknown asset is a template bug: fail loudly
        return f"{PREFIX}/static/{name}?v={asset.version}"

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=True,  # url(route_name, **parts)
    )
    env.filters["time"] = time_tag
    env.globals["csrf_field"] = csrf_field
    env.globals["static_url"] = static_url
    return env


def base_context(request: web.Request) -> dict[str, Any]:
    """What every template may use."""
    found = request.get(SESSION)
    who = found.principal if found is not None else None

    def can(role: str) -> bool:
        return who is not None and who.role >= Role[role]

    here = request.path
    nav = [
        NavLink(
            item.label,
            PREFIX + item.path,
            here == PREFIX + item.path
            or (item.path != "/" and here.startswith(f"{PREFIX}{item.path}/")),
        )
        for item in NAV
        if who is not None and who.role >= item.role
    ]
    return {
        "principal": who,  # None on the sign-in page and on errors before sign-in
        "can": can,  # can("admin"): offer only what the token may do
        "nav": nav,
        "csrf_token": found.csrf if found is not None else request.get(SIGNIN_CSRF, ""),
        "request_id": request.get(REQUEST_ID, ""),
        "app": request.app,  # for url()
        "prefix": PREFIX,
        "title": "",
        "live": False,
        "live_url": f"{PREFIX}/live",
    }


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    live: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A page from `template` (which extends base.html), or with `?fragment=NAME` only its
    block `fragment_NAME` (an unknown name is a 404). `live` turns on the live channel."""
    ctx = {**base_context(request), "live": live, **(context or {})}
    name = request.query.get("fragment")
    if name is None:
        text = aiohttp_jinja2.render_string(template, request, ctx)
    else:
        text = render_fragment(request, template, name, ctx)
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def render_fragment(
    request: web.Request, template: str, name: str, context: Mapping[str, Any]
) -> str:
    """Only the block `fragment_NAME` of `template`."""
    if not _FRAGMENT.fullmatch(name):
        raise PageError(400, "The fragment name is not valid: use lower-case letters and _.")
    env = aiohttp_jinja2.get_env(request.app)
    tmpl = env.get_template(template)
    block = tmpl.blocks.get(f"fragment_{name}")
    if block is None:
        raise PageError(404, f"This page has no part named {name!r}; reload the page.")
    return "".join(block(tmpl.new_context(dict(context))))


@dataclass(frozen=True)
class ErrorText:
    """The error page of a status: its title and what to do."""

    title: str
    advice: str


ERRORS: dict[int, ErrorText] = {
    400: ErrorText(
        "Bad request",
        "The console could not read what was sent. Go back, check what you entered and try again.",
    ),
    401: ErrorText("Signed out", "Your session has ended. Sign in again to go on."),
    403: ErrorText(
        "Not allowed",
        "Your token's role does not allow this. Ask a superadmin for a token with the"
        " role it needs.",
    ),
    404: ErrorText(
        "Not found",
        "There is nothing at this address, or it belongs to a company your token cannot"
        " see. Check the link, or start again from the overview.",
    ),
    405: ErrorText(
        "Method not allowed",
        "This address does not accept that kind of request. Use the console's links and"
        " buttons rather than typing or bookmarking form addresses.",
    ),
    409: ErrorText(
        "Changed meanwhile",
        "What you acted on changed in the meantime. Reload the page to see it as it is now,"
        " then try again if it still applies.",
    ),
    413: ErrorText("Too large", "What was sent is too large. Send less at a time."),
    429: ErrorText(
        "Too many attempts",
        "Too many requests in a short time. Wait a minute and try again.",
    ),
    501: ErrorText("Not built yet", "This part of the console is not built yet."),
    500: ErrorText(
        "Something went wrong",
        "The console hit an error on its side; it was logged. Try again; if it keeps"
        " happening, give the operators the request id below.",
    ),
    503: ErrorText(
        "Unavailable",
        "The database is unreachable or busy. Wait a few seconds and try again.",
    ),
}


def error_page(
    request: web.Request,
    status: int,
    message: str = "",
    headers: Mapping[str, str] | None = None,
    *,
    log: Callable[..., Any] | None = None,
) -> web.Response:
    """The HTML error page of `status`: `message` says what happened and what to do (the
    status's advice when empty)."""
    text = ERRORS.get(status, ErrorText("Error", "Something went wrong. Go back and try again."))
    ctx = {
        **base_context(request),
        "title": text.title,
        "status": status,
        "message": message or text.advice,  # what happened and what to do
    }
    try:
        body = aiohttp_jinja2.render_string("error.html", request, ctx)
    except Exception:  # the error page must not fail: a bare page says the same
        if log is not None:
            log("console.error_page_failed", status=status, path=request.path)
        body = (
            f"<!doctype html><html lang=en><meta charset=utf-8><title>{text.title}</title>"
            f"<h1>{text.title}</h1><p>{html.escape(message or text.advice)}</p>"
            f'<p><a href="{PREFIX}/">Back to the console</a></p></html>'
        )
    return web.Response(text=body, status=status, content_type="text/html", headers=headers)
