"""What each Batch endpoint answers for one request: OpenAI's body for it, or its 400."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from service.application.analysis import SCHEMA_NAME
from service.tools.emulator.bodies import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES
from service.tools.emulator.model import (
    analysis_json,
    count_tokens,
    input_tokens,
    plain_reply,
    prompt_text,
    texts,
)
from service.tools.emulator.schemas import SchemaError, instance, strict_problem

NewId = Callable[[str, int], str]  # prefix, hex digits -> an id in OpenAI's style
GARBLED = "I am sorry, I cannot analyse this conversation."
EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072}  # others: 1536
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Answer:
    """A request's response: status, body, and the tokens it used."""

    status: int
    body: dict[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0


class Refused(Exception):
    """A request OpenAI accepts in validation but answers with a 400 when it runs it."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


@dataclass(frozen=True)
class Context:
    """What an answer needs besides the request: ids, the time, and whether to garble it."""

    new_id: NewId
    now: int
    garbled: bool = False


def answer(endpoint: str, body: dict[str, Any], ctx: Context) -> Answer:
    """The response to one request of a batch at `endpoint`."""
    builders = {
        CHAT: _chat,
        COMPLETIONS: _completions,
        EMBEDDINGS: _embeddings,
        RESPONSES: _responses,
    }
    try:
        return builders[endpoint](body, ctx)
    except Refused as exc:
        error = {
            "message": exc.message,
            "type": "invalid_request_error",
            "param": exc.param,
            "code": None,
        }
        return Answer(400, {"error": error})


def _json_object(text: str, context: str, word_param: str, fmt_param: str) -> str:
    if "json" not in context.lower():
        raise Refused(
            f"'{word_param}' must contain the word 'json' in some form, to use "
            f"'{fmt_param}' of type 'json_object'.",
            word_param,
        )
    return _encode({"reply": plain_reply(text)}).decode()


def _json_schema(spec: dict[str, Any], text: str) -> str:
    name, schema = spec.get("name"), spec.get("schema", {"type": "object"})
    if name == SCHEMA_NAME:  # the pipeline's own request: a domain-aware analysis
        return analysis_json(text)
    try:
        if spec.get("strict") is True and (problem := strict_problem(str(name), schema)):
            raise Refused(problem, "response_format")
        return _encode(instance(schema, text)).decode()
    except RecursionError:
        message = f"Invalid schema for response_format '{name}': the schema nests too deeply."
        raise Refused(message, "response_format") from None
    except SchemaError as exc:
        message = f"Invalid schema for response_format '{name}': {exc}"
        raise Refused(message, "response_format") from None


def _formatted(fmt: Any, text: str, body: dict[str, Any], *, chat: bool) -> str:
    """The content a response format asks for (chat nests json_schema; Responses does not)."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":  # the 'json' rule reads every message, not only the user's
        if chat:
            context = _encode(body.get("messages")).decode()
            return _json_object(text, context, "messages", "response_format")
        context = _encode(body.get("input")).decode()
        return _json_object(text, context, "input", "text.format")
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        spec = fmt.get("json_schema") if chat else fmt
        return _json_schema(spec if isinstance(spec, dict) else {}, text)
    return plain_reply(text)


def _chat_usage(p: int, c: int) -> dict[str, Any]:
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _choices(body: dict[str, Any]) -> int:
    return int(body.get("n") or 1)  # checked in validation (bodies.py)


def _chat(body: dict[str, Any], ctx: Context) -> Answer:
    text = prompt_text(CHAT, body)
    content = (
        GARBLED if ctx.garbled else _formatted(body.get("response_format"), text, body, chat=True)
    )
    n = _choices(body)
    p, c = input_tokens(CHAT, body), count_tokens(content) * n
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": "stop"}
        for i in range(n)
    ]
    completion = {
        "id": ctx.new_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": ctx.now,
        "model": body["model"],
        "choices": choices,
        "usage": _chat_usage(p, c),
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }
    return Answer(200, completion, p, c)


def _completions(body: dict[str, Any], ctx: Context) -> Answer:
    n = _choices(body)
    prompts = texts(body.get("prompt")) or [""]
    replies = [f" Emulated completion of: {p[:60]}" for p in prompts for _ in range(n)]
    p, c = input_tokens(COMPLETIONS, body), sum(count_tokens(r) for r in replies)
    choices = [
        {"text": r, "index": i, "logprobs": None, "finish_reason": "stop"}
        for i, r in enumerate(replies)
    ]
    completion = {
        "id": ctx.new_id("cmpl-", 29),
        "object": "text_completion",
        "created": ctx.now,
        "model": body["model"],
        "choices": choices,
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        "system_fingerprint": "fp_emulator",
    }
    return Answer(200, completion, p, c)


def _dimensions(body: dict[str, Any]) -> int:
    model = str(body["model"])
    native = EMBEDDING_DIMENSIONS.get(model, 1536)
    asked = body.get("dimensions")
    if asked is None:
        return native
    if not model.startswith("text-embedding-3"):
        raise Refused("This model does not support specifying dimensions.", "dimensions")
    if asked > native:
        raise Refused(
            f"Invalid value for 'dimensions' = {asked}. Must be less than or equal to {native}.",
            "dimensions",
        )
    return int(asked)


def vector(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector derived from the text: the same text always embeds the same. Two bytes
    of SHAKE-256 a component: a tenth of the cost of drawing Gaussians."""
    stream = hashlib.shake_256(f"{model}\0{text}".encode()).digest(2 * dimensions)
    raw = [x - 32767.5 for x in struct.unpack(f"<{dimensions}H", stream)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [round(x / norm, 8) for x in raw]


def _embeddings(body: dict[str, Any], ctx: Context) -> Answer:
    dims, model = _dimensions(body), str(body["model"])
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts(body.get("input"))):
        v = vector(model, text, dims)
        packed = base64.b64encode(struct.pack(f"<{dims}f", *v)).decode() if as_base64 else v
        data.append({"object": "embedding", "index": i, "embedding": packed})
    p = input_tokens(EMBEDDINGS, body)
    usage = {"prompt_tokens": p, "total_tokens": p}
    return Answer(200, {"object": "list", "data": data, "model": model, "usage": usage}, p, 0)


def _responses(body: dict[str, Any], ctx: Context) -> Answer:
    text = prompt_text(RESPONSES, body)
    config = body.get("text")
    fmt = config.get("format") if isinstance(config, dict) else None
    content = _formatted(fmt, text, body, chat=False)
    p, c = input_tokens(RESPONSES, body), count_tokens(content)
    message = {
        "id": ctx.new_id("msg_", 48),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": content, "annotations": [], "logprobs": []}],
    }
    response = {
        "id": ctx.new_id("resp_", 48),
        "object": "response",
        "created_at": ctx.now,
        "completed_at": ctx.now,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [message],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": fmt or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": p + c,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    return Answer(200, response, p, c)
