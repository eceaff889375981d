"""The one error envelope, and the middleware that maps every failure onto it."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from eventstore import ConcurrencyError, WriterBusy
from service.application.errors import (
    Missing,
    NotCancellable,
    StillChanging,
    UseCaseError,
)
from service.entrypoints.api.schemas import ErrorBody, ErrorResponse
from statemachine.errors import InvalidTransition

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encode = msgspec.json.Encoder().encode


class ApiError(Exception):
    """An answer other than success: status, stable code, human message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON error envelope."""
    body = _encode(ErrorResponse(error=ErrorBody(code=code, message=message)))
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


_USE_CASE_STATUS: dict[type[UseCaseError], tuple[int, dict[str, str] | None]] = {
    Missing: (404, None),
    NotCancellable: (409, None),
    StillChanging: (409, None),
}

_DATABASE_DOWN = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def make_error_middleware(log: object) -> Middleware:
    """Domain, validation and HTTP errors to the envelope; anything else a logged 500."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(e.status, e.code, e.message, e.headers)
        except UseCaseError as e:
            status, headers = _USE_CASE_STATUS[type(e)]
            return error_response(status, e.code, str(e), headers)
        except InvalidTransition as e:
            return error_response(409, "invalid_transition", str(e))
        except ConcurrencyError:
            return error_response(409, "conflict", "the entity changed meanwhile; try again")
        except WriterBusy as e:
            # Another transaction holds the writer lock: nothing was written, so a retry is
            # safe; the operator finds the holder from the warning (docs/operations.md).
            log.warning("api.writer_busy", path=request.path, method=request.method)  # type: ignore[attr-defined]
            retry = str(max(1, math.ceil(e.timeout)))
            return error_response(503, "writer_busy", str(e), {"Retry-After": retry})
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = _HTTP_CODES.get(e.status, "http_error")
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None  # 405
            return error_response(e.status, code, e.reason or code, allow)
        except _DATABASE_DOWN as e:
            if isinstance(e, ConnectionError) and _client_gone(request):
                # The client hung up (mid-body, say): not the database, and nobody to answer.
                log.info("api.client_disconnected", path=request.path, method=request.method)  # type: ignore[attr-defined]
                return error_response(400, "client_disconnected", "the client hung up")
            # Not the client's fault and not a bug: say so, so balancers and clients retry.
            log.warning("api.database_unavailable", path=request.path, error=type(e).__name__)  # type: ignore[attr-defined]
            return error_response(
                503,
                "database_unavailable",
                "the database is unreachable; try again shortly",
                {"Retry-After": "5"},
            )
        except Exception:
            log.exception("api.unhandled", path=request.path)  # type: ignore[attr-defined]
            return error_response(500, "internal", "internal error; it was logged")

    return errors
