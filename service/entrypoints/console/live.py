"""GET /admin/live: the live channel, Server-Sent Events that tell pages what changed.

For each new event of the log that the session's companies may see, one small `change`
event: `{"position", "type", "stream", "company"}` (never the event's data: pages fetch
what they show, through their own checks). Comments keep the connection alive. The
stream starts at the head of the log (a page was just rendered) and ends with an `end`
event when the session ends: signed out, idle, expired, or its token revoked or
expired, within seconds. It does not restart the session's idle clock: an open page is
not a person at work.

A change is announced once the projections have applied it (settle.py, at most 2 s
later, and then once more when they have), so the fragment a page fetches on hearing of
it shows it.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from eventstore import RecordedEvent
from service.adapters.tokens import Role
from service.entrypoints.api.sse import follow, open_stream
from service.entrypoints.console.core import ConsoleRoute, companies, console, session
from service.entrypoints.console.settle import SettledSubscription

END = b'event: end\ndata: {"reason":"session"}\n\n'


class Change(msgspec.Struct, frozen=True):
    """What a `change` event says."""

    position: int
    type: str
    stream: str
    company: str | None


_encode = msgspec.json.Encoder().encode


def change_frame(e: RecordedEvent) -> bytes:
    """One SSE frame for an event of the log."""
    data = _encode(Change(e.position, e.type, e.stream_id, e.scope))
    return b"id: %d\nevent: change\ndata: %s\n\n" % (e.position, data)


async def live(request: web.Request) -> web.StreamResponse:
    """The live channel of the signed-in session."""
    c = console(request)
    store = c.deps.store
    seen = companies(request)
    scopes = None if seen is None else sorted(seen)
    after = await store.head(scopes=scopes)
    response = await open_stream(request)
    if request.method == "HEAD":
        return response
    sub = SettledSubscription(store, after, c.projected, scopes=scopes)
    await follow(
        request,
        response,
        sub,
        watch=c.watch,
        key=session(request).id_hash,
        heartbeat=c.deps.heartbeat_seconds,
        frame=change_frame,
        farewell=END,
    )
    return response


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/live", live, Role.support, name="live", background=True),
)
