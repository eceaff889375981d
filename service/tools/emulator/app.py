"""The emulator's HTTP surface: /v1/files, /v1/batches, and /_emulator/ controls."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from service.tools.emulator.bodies import ENDPOINTS
from service.tools.emulator.knobs import KnobError, Knobs, with_knobs
from service.tools.emulator.params import (
    Int,
    Obj,
    ParamError,
    Str,
    check,
    check_object,
    invalid_value,
    missing,
)
from service.tools.emulator.state import UNFINISHED, Emulator

EMULATOR = web.AppKey("emulator", Emulator)
CLOSING = web.AppKey("closing", asyncio.Event)  # set on shutdown: held answers go out at once
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answered with OpenAI's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )
        self.headers = headers or {}


def _envelope(e: ApiError) -> dict[str, Any]:
    return {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}


@web.middleware
async def openai_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids, bearer auth, faults and delays on /v1; the error envelope everywhere."""
    request_id = "req_" + secrets.token_hex(16)
    try:
        if request.path.startswith("/v1/"):
            _check_auth(request)
            _inject_fault(request.app[EMULATOR])
        response = await handler(request)
    except ApiError as e:
        response = web.json_response(_envelope(e), status=e.status, headers=e.headers)
    except web.HTTPException as e:
        err = ApiError(e.status, e.reason or "error", code=None)
        response = web.json_response(_envelope(err), status=e.status)
    if not response.prepared:  # a streamed answer (file content) waits before it starts
        await _hold_answer(request)
    response.headers["x-request-id"] = request_id
    return response


async def _hold_answer(request: web.Request) -> None:
    """Wait out `response_delay_seconds` before a /v1 answer: the call is carried out at
    once and answered late, so a client that gives up first has still, as at OpenAI,
    created its file or batch (aiohttp lets a handler finish after its client left)."""
    if request.path.startswith("/v1/") and (
        delay := request.app[EMULATOR].knobs.response_delay_seconds
    ):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.app[CLOSING].wait(), delay)


def _check_auth(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise ApiError(401, "You didn't provide an API key.", code="invalid_api_key")


def _inject_fault(emu: Emulator) -> None:
    k = emu.knobs
    if k.fail_next_calls <= 0:
        return
    k.fail_next_calls -= 1
    if k.fail_status == 429:
        raise ApiError(
            429,
            "Rate limit reached for requests.",
            type_="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(k.retry_after_seconds)},
        )
    raise ApiError(
        k.fail_status,
        "The server had an error while processing your request.",
        type_="server_error",
    )


def _emu(request: web.Request) -> Emulator:
    return request.app[EMULATOR]


PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
DEFAULT_BATCH_FILE_SECONDS = 30 * 24 * 3600  # OpenAI: batch files expire after 30 days
EXPIRES_AFTER = Obj(
    fields={"anchor": Str(choices=("created_at",)), "seconds": Int(ge=3600, le=2_592_000)},
    required=("anchor", "seconds"),
)


def _param_error(exc: ParamError) -> ApiError:
    return ApiError(400, exc.message, param=exc.param, code=exc.code)


class Upload(msgspec.Struct):
    """The fields of a multipart upload, as read."""

    purpose: str | None = None
    filename: str | None = None
    content: bytes | None = None
    expires_after: dict[str, Any] = msgspec.field(default_factory=dict)


async def _read_upload(request: web.Request, max_bytes: int) -> Upload:
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "Expected multipart/form-data.", param="file")
    try:
        return await _parts(request, max_bytes)
    except (ValueError, LookupError, HttpProcessingError) as exc:  # UnicodeError: a ValueError
        raise ApiError(400, f"The multipart form could not be read: {exc}.") from None


async def _parts(request: web.Request, max_bytes: int) -> Upload:
    upload = Upload()
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            upload.purpose = (await part.text()).strip()
        elif part.name == "file":
            upload.filename = part.filename or "upload.jsonl"
            upload.content = bytes(await part.read(decode=False))
            if len(upload.content) > max_bytes:
                raise ApiError(
                    400,
                    f"File is larger than {max_bytes} bytes.",
                    param="file",
                    code="file_too_large",
                )
        elif part.name in ("expires_after[anchor]", "expires_after[seconds]"):
            text = (await part.text()).strip()
            key = part.name[len("expires_after[") : -1]
            upload.expires_after[key] = _as_int(text) if key == "seconds" else text
        else:
            raise ApiError(400, f"Unrecognized request argument supplied: {part.name}")
    return upload


def _expiry(upload: Upload) -> int | None:
    """Seconds until the uploaded file expires, or None if it never does."""
    if not upload.expires_after:
        return DEFAULT_BATCH_FILE_SECONDS if upload.purpose == "batch" else None
    try:
        check(upload.expires_after, EXPIRES_AFTER, "expires_after")
    except ParamError as exc:
        raise _param_error(exc) from None
    return int(upload.expires_after["seconds"])


async def upload_file(request: web.Request) -> web.Response:
    """POST /v1/files (multipart: purpose, file, optional expires_after)."""
    emu = _emu(request)
    upload = await _read_upload(request, emu.knobs.max_file_bytes)
    if upload.purpose is None:
        raise _param_error(missing("purpose"))
    if upload.content is None or upload.filename is None:
        raise _param_error(missing("file"))
    if upload.purpose not in PURPOSES:
        raise _param_error(invalid_value(upload.purpose, PURPOSES, "purpose"))
    if upload.purpose == "batch" and not upload.filename.endswith(".jsonl"):
        raise ApiError(
            400,
            "Invalid file format for Batch API. Must be .jsonl",
            param="file",
            code="invalid_file_format",
        )
    stored = emu.add_file(upload.filename, upload.purpose, upload.content, _expiry(upload))
    return web.json_response(stored.to_json())


def _file(request: web.Request) -> Any:
    f = _emu(request).file(request.match_info["file_id"])
    if f is None:
        raise ApiError(404, f"No such File object: {request.match_info['file_id']}", param="id")
    return f


async def get_file(request: web.Request) -> web.Response:
    """GET /v1/files/{id}."""
    return web.json_response(_file(request).to_json())


async def get_file_content(request: web.Request) -> web.StreamResponse:
    """GET /v1/files/{id}/content, streamed in chunks."""
    f = _file(request)
    await _hold_answer(request)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = len(f.content)
    await response.prepare(request)
    view = memoryview(f.content)
    for start in range(0, len(view), 1 << 20):
        await response.write(view[start : start + (1 << 20)])
    await response.write_eof()
    return response


async def delete_file(request: web.Request) -> web.Response:
    """DELETE /v1/files/{id}."""
    f = _file(request)
    del _emu(request).files[f.id]
    return web.json_response({"id": f.id, "object": "file", "deleted": True})


def _as_int(text: str) -> int | str:
    """A form or query value as the integer it spells, else as the text it is."""
    try:
        return int(text)
    except ValueError:
        return text


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    value = _as_int(raw)
    try:
        check(value, Int(ge=1, le=maximum), "limit")
    except ParamError as exc:
        raise _param_error(exc) from None
    assert isinstance(value, int)
    return value


def _page(objects: list[Any], request: web.Request, default: int, maximum: int) -> dict[str, Any]:
    limit, after = _limit(request, default, maximum), request.query.get("after")
    if after is not None:
        ids = [o.id for o in objects]
        if after not in ids:
            raise ApiError(
                400, f"Invalid value for 'after': {after!r}.", param="after", code="invalid_value"
            )
        objects = objects[ids.index(after) + 1 :]
    data = [o.to_json() for o in objects[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(objects) > limit,
    }


async def list_files(request: web.Request) -> web.Response:
    """GET /v1/files, newest first."""
    emu = _emu(request)
    files = [f for f in reversed(list(emu.files.values())) if emu.file(f.id) is not None]
    if purpose := request.query.get("purpose"):
        files = [f for f in files if f.purpose == purpose]
    if request.query.get("order") == "asc":
        files.reverse()
    return web.json_response(_page(files, request, 10_000, 10_000))


CREATE_BATCH = Obj(
    fields={
        "input_file_id": Str(min_length=1),
        "endpoint": Str(choices=ENDPOINTS),
        "completion_window": Str(choices=("24h",)),
        "metadata": Obj(values=Str(max_length=512), max_properties=16, max_key_length=64),
        "output_expires_after": EXPIRES_AFTER,
    },
    required=("input_file_id", "endpoint", "completion_window"),
)
UNPARSABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)


async def _json_body(request: web.Request, spec: Obj) -> dict[str, Any]:
    """The request's JSON object, checked against `spec` as OpenAI checks a body."""
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        raise ApiError(400, UNPARSABLE) from None
    if not isinstance(body, dict):
        raise ApiError(400, UNPARSABLE)
    try:
        check_object(body, spec)
    except ParamError as exc:
        raise _param_error(exc) from None
    return body


async def create_batch(request: web.Request) -> web.Response:
    """POST /v1/batches; an input file that does not exist fails the batch in validation."""
    emu = _emu(request)
    body = await _json_body(request, CREATE_BATCH)
    source = emu.file(body["input_file_id"])
    if source is not None and source.purpose != "batch":
        raise ApiError(
            400,
            "The input file must have purpose 'batch'.",
            param="input_file_id",
            code="invalid_value",
        )
    expiry = body.get("output_expires_after") or {}
    batch = emu.create_batch(
        body["input_file_id"],
        body["endpoint"],
        body["completion_window"],
        body.get("metadata"),
        expiry.get("seconds"),
    )
    return web.json_response(batch.to_json())


def _batch(request: web.Request) -> Any:
    b = _emu(request).batches.get(request.match_info["batch_id"])
    if b is None:
        raise ApiError(
            404, f"No batch found with id '{request.match_info['batch_id']}'.", param="batch_id"
        )
    return b


async def get_batch(request: web.Request) -> web.Response:
    """GET /v1/batches/{id}."""
    return web.json_response(_emu(request).retrieve(_batch(request)))


async def cancel_batch(request: web.Request) -> web.Response:
    """POST /v1/batches/{id}/cancel."""
    batch = _batch(request)
    if batch.status not in UNFINISHED:
        raise ApiError(
            409,
            f"Cannot cancel a batch with status '{batch.status}'.",
            code="batch_not_cancellable",
        )
    if batch.status != "cancelling":
        _emu(request).request_cancel(batch)
    return web.json_response(batch.to_json())


async def list_batches(request: web.Request) -> web.Response:
    """GET /v1/batches, newest first, cursor `after`."""
    return web.json_response(
        _page(list(reversed(_emu(request).batches.values())), request, 20, 100)
    )


async def get_knobs(request: web.Request) -> web.Response:
    """GET /_emulator/knobs."""
    return web.json_response(msgspec.to_builtins(_emu(request).knobs))


async def _knobs(request: web.Request, base: Knobs) -> Knobs:
    """`base` with the knobs of the JSON body set; anything out of range is a 400 naming it."""
    body = await request.read()
    try:
        values = msgspec.json.decode(body) if body.strip() else {}
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(values, dict):
        raise ApiError(400, "The body must be a JSON object of knobs.", code="invalid_value")
    try:
        return with_knobs(base, values)
    except KnobError as exc:
        raise ApiError(400, f"Invalid knob: {exc}.", param=exc.name, code="invalid_value") from None


async def set_knobs(request: web.Request) -> web.Response:
    """POST /_emulator/knobs: update the named knobs."""
    emu = _emu(request)
    emu.knobs = await _knobs(request, emu.knobs)
    return web.json_response(msgspec.to_builtins(emu.knobs))


async def reset(request: web.Request) -> web.Response:
    """POST /_emulator/reset: forget everything; optional body sets the knobs."""
    emu = _emu(request)
    knobs = await _knobs(request, Knobs())  # checked first: a refused reset changes nothing
    await emu.close()
    emu.reset(knobs)
    return web.json_response({"ok": True})


def create_emulator_app(knobs: Knobs | None = None) -> web.Application:
    """The emulator application."""
    app = web.Application(middlewares=[openai_middleware], client_max_size=210 * 1024 * 1024)
    app[EMULATOR] = Emulator(knobs)
    app[CLOSING] = asyncio.Event()

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()

    # on_shutdown runs before aiohttp waits for handlers in progress (up to its shutdown
    # timeout), so a long response_delay_seconds never holds up stopping the emulator.
    app.on_shutdown.append(closing)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[EMULATOR].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{file_id}", get_file)
    app.router.add_get("/v1/files/{file_id}/content", get_file_content)
    app.router.add_delete("/v1/files/{file_id}", delete_file)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{batch_id}", get_batch)
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel_batch)
    app.router.add_get("/_emulator/knobs", get_knobs)
    app.router.add_post("/_emulator/knobs", set_knobs)
    app.router.add_post("/_emulator/reset", reset)
    return app
