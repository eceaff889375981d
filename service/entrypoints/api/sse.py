"""Server-Sent Events over the event log: the API's /events/stream and the console's
live channel share this loop (heartbeats, slow readers, revocation, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from eventstore import RecordedEvent, Subscription
from service.entrypoints.api.deps import CLOSING
from service.entrypoints.api.watch import Watch

WRITE_TIMEOUT = 10.0
"""A client that cannot take a frame within this many seconds is dropped (it resumes)."""


async def open_stream(request: web.Request) -> web.StreamResponse:
    """A prepared text/event-stream response (headers only, for HEAD)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def follow(
    request: web.Request,
    response: web.StreamResponse,
    sub: Subscription,
    *,
    watch: Watch,
    key: str,
    heartbeat: float,
    frame: Callable[[RecordedEvent], bytes],
    farewell: bytes,
) -> None:
    """Send `frame(e)` for each event of `sub` until `key` stops being valid in `watch`
    (then `farewell`), the server stops, or the client goes; a comment every `heartbeat`
    seconds when nothing happens. Closes `sub`."""
    # Set when the key is no longer valid (a token revoked, a session ended), or when
    # the server stops.
    closing = request.config_dict[CLOSING]
    ended = watch.open(key)
    if closing.is_set():  # the server began stopping before this stream was watched:
        ended.set()  # its end_all missed it, and nothing else would end it
    try:
        await response.write(b": connected\n\n")
        while not ended.is_set():
            page = await sub.next_page_before(ended, heartbeat)
            if page is None:  # a quiet heartbeat interval, or the stream must end
                if not ended.is_set():
                    await asyncio.wait_for(response.write(b": keepalive\n\n"), WRITE_TIMEOUT)
                continue
            for e in page:
                if ended.is_set():  # revoked mid-page: not one more frame (a page holds 1,000)
                    break
                # A client that cannot take a frame in 10 s is dropped; it resumes by Last-Event-ID.
                await asyncio.wait_for(response.write(frame(e)), WRITE_TIMEOUT)
        if not closing.is_set():
            await asyncio.wait_for(response.write(farewell), WRITE_TIMEOUT)
    except (ConnectionResetError, TimeoutError, asyncio.CancelledError):
        pass
    finally:
        watch.close(key, ended)
        with contextlib.suppress(Exception):
            await sub.close()
