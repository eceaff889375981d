"""The HTTP edge: the limits aiohttp does not set by itself, and headers on every answer.

aiohttp bounds header sizes (8190-byte lines, 128 headers) and closes a keep-alive
connection that stays idle for its keep-alive timeout, but it has no header-read or body
timeout and no cap of connections per client. `EdgeSite` listens like `web.TCPSite`,
with a protocol that adds them:

* **header timeout**: a connection must complete its request line and headers within
  `header_timeout` of connecting, or of the first byte of its next request on a
  keep-alive connection; else it is closed (a silent client, or one header line every
  few seconds, no longer holds a connection forever);
* **body timeout**: a request body must arrive within `body_timeout` of its headers;
  else the request is answered 408 `request_timeout` and the connection is closed;
* **idle timeout**: a keep-alive connection with no request in progress is closed after
  `idle_timeout` (aiohttp's keep-alive timeout);
* **per-address cap**: beyond `max_connections_per_address` open connections from one
  peer address (0: no cap), new ones are closed at once. Addresses of trusted proxies
  are exempt: behind a proxy every client has its address, and the proxy limits them.

A response in progress is never cut by these: an event stream is a long response, not an
idle connection. Errors aiohttp answers itself (a malformed request) use the JSON
envelope, and `security_headers` gives every response of the app the same headers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.streams import StreamReader
from yarl import URL

from service.entrypoints.api.deps import REQUEST_ID
from service.entrypoints.api.errors import _HTTP_CODES, ApiError, error_response
from service.logs import get_logger

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RequestHandlerFunction = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    # Every answer of the admin API may carry personal data (transcripts, analyses).
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Server": "batchledger",  # aiohttp's default names its and Python's versions
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for streamed responses and error envelopes too."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    # Here too, not only in the middleware: a stream sends its headers before it returns.
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id


@dataclass(frozen=True)
class EdgeLimits:
    """Connection-level limits (see the module docstring)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections_per_address: int = 64
    exempt: tuple[Network, ...] = ()


class _Addresses:
    """Open connections per peer address."""

    def __init__(self, limits: EdgeLimits) -> None:
        self._limits = limits
        self._open: dict[str, int] = {}
        # Refusals since the last line logged for each address: at most one line a minute
        # per address, so a flood of connections cannot fill the disk.
        self._refused: dict[str, tuple[float, int]] = {}

    def refused(self, address: str) -> None:
        """Log a connection refused over the cap (a line a minute per address at most)."""
        now = time.monotonic()
        last, count = self._refused.get(address, (float("-inf"), 0))
        if now - last < 60:
            self._refused[address] = (last, count + 1)
            return
        if len(self._refused) > 10_000:
            self._refused.clear()  # bounded: a flood of addresses only costs log lines
        self._refused[address] = (now, 0)
        get_logger("api").warning(
            "api.connection_refused",
            address=address,
            cap=self._limits.max_connections_per_address,
            refused_since_last_line=count + 1,
            hint="behind a proxy or balancer, list it in API_TRUSTED_PROXIES",
        )

    def _exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._limits.exempt)

    def admit(self, address: str) -> bool:
        cap = self._limits.max_connections_per_address
        count = self._open.get(address, 0)
        if cap and count >= cap and not self._exempt(address):
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


class EdgeConnection(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol with header and body timeouts and the address cap.

    Between requests the connection is "awaiting": the header timer starts on its first
    byte (or at connect). While a handler runs, only the body timer can fire.
    """

    def __init__(
        self, manager: web.Server, limits: EdgeLimits, addresses: _Addresses, **kwargs: Any
    ) -> None:
        super().__init__(
            manager,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=limits.idle_timeout,
            access_log=None,  # type: ignore[arg-type]  # None: no access log, as AppRunner takes it
            **kwargs,
        )
        self._limits = limits
        self._addresses = addresses
        self._address: str | None = None
        self._awaiting = True
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -- the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._addresses.admit(address):
            cast(asyncio.Transport, transport).abort()  # over the cap: closed before reading
            self._addresses.refused(address)
            return
        self._address = address
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is None:
            return  # refused at connect: aiohttp never saw it
        self._cancel_timers()
        self._addresses.release(self._address)
        self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._awaiting and self._header_timer is None:
            self._start_header_timer()  # the first byte of the next request
        super().data_received(data)

    # -- timers

    def _start_header_timer(self) -> None:
        self._header_timer = asyncio.get_running_loop().call_later(
            self._limits.header_timeout, self._headers_late
        )

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting:
            self.force_close()

    def _body_late(self, body: StreamReader) -> None:
        self._body_timer = None
        if body.is_eof():
            return
        self.close()  # read no more; close once the 408 is written
        body.set_exception(
            ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {self._limits.body_timeout:g} s",
                {"Connection": "close"},
            )
        )
        body.feed_eof()  # nothing left to wait for (aiohttp would linger on it)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    # -- the request in progress (called around the application's handler)

    def request_started(self, request: web.BaseRequest) -> None:
        self._awaiting = False
        self._cancel_timers()
        if request.body_exists:
            self._body_timer = asyncio.get_running_loop().call_later(
                self._limits.body_timeout, self._body_late, request.content
            )

    def request_finished(self, request: web.BaseRequest) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        # An unread body is still arriving (aiohttp reads it away for a few seconds):
        # the next request starts after it.
        request.content.on_eof(self._await_next)

    def _await_next(self) -> None:
        self._awaiting = True

    # -- errors aiohttp answers itself

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A malformed request (400) or an exception that escaped the app: the envelope."""
        if status >= 500:
            get_logger("api").error("api.unhandled", path=request.path, exc_info=exc)
        if request.writer.output_size > 0:  # part of an answer is out: nothing else can be
            raise ConnectionError("the response was partly sent")
        code = _HTTP_CODES.get(status, "internal" if status >= 500 else "http_error")
        text = "malformed HTTP request" if status == 400 else "the request could not be handled"
        # Every answer carries a request id; a malformed request never reached the
        # middleware that gives one, so it gets a fresh one here.
        headers = {**SECURITY_HEADERS, "X-Request-Id": secrets.token_hex(8)}
        response = error_response(status, code, text, headers)
        response.force_close()
        return response


def _tracking(handler: RequestHandlerFunction) -> RequestHandlerFunction:
    """The app's handler, telling an EdgeConnection when its request starts and ends."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        if not isinstance(connection, EdgeConnection):
            return await handler(request)
        connection.request_started(request)
        try:
            return await handler(request)
        finally:
            connection.request_finished(request)

    handle.edge_tracking = True  # type: ignore[attr-defined]
    return handle


class EdgeSite(web.BaseSite):
    """A TCP site whose connections are `EdgeConnection`s."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: EdgeLimits) -> None:
        super().__init__(runner)
        self._host, self._port, self._limits = host, port, limits
        self._addresses = _Addresses(limits)

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        if not getattr(server.request_handler, "edge_tracking", False):
            server.request_handler = _tracking(server.request_handler)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: EdgeConnection(server, self._limits, self._addresses),
            self._host,
            self._port,
            backlog=self._backlog,
        )
