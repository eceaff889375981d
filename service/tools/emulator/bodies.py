"""The request bodies of a batch's lines, checked per endpoint as the Batch API validates them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.tools.emulator.params import (
    Int,
    ParamError,
    check,
    invalid,
    invalid_value,
    missing,
    wrong_type,
)

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
)
# The Batch endpoints the emulator answers, in the order OpenAI's error message lists them.
ENDPOINTS = (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES)
_LABELS = {CHAT: "Chat Completions", COMPLETIONS: "Completions", RESPONSES: "Responses"}
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_NEEDS_CONTENT = ("system", "user", "developer", "tool")
_FORMATS = ("text", "json_object", "json_schema")
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's cap on one embeddings request's input array
COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "babbage-002", "davinci-002")


def served_by(model: str) -> tuple[str, ...]:
    """The endpoints a model answers, from its family as OpenAI names them."""
    if model.startswith("text-embedding-"):
        return (EMBEDDINGS,)
    if model in COMPLETION_MODELS or model.endswith("-instruct"):
        return (COMPLETIONS,)
    return (CHAT, RESPONSES)


def _optional(body: dict[str, Any], key: str, spec: Int) -> None:
    if body.get(key) is not None:
        check(body[key], spec, f"body.{key}")


def _required(body: dict[str, Any], key: str, word: str) -> None:
    if body.get(key) is None:
        raise ParamError(
            f"{word} parameter is required.", f"body.{key}", "missing_required_parameter"
        )


def _chat_message(n: int, message: Any) -> None:
    at = f"body.messages[{n}]"
    if not isinstance(message, dict):
        raise wrong_type(at, "an object", message)
    role = message.get("role")
    if role is None:
        raise missing(f"{at}.role")
    if not isinstance(role, str):
        raise wrong_type(f"{at}.role", "a string", role)
    if role not in ROLES:
        raise invalid_value(role, ROLES, f"{at}.role")
    content = message.get("content")
    if content is None and role in _NEEDS_CONTENT:
        raise missing(f"{at}.content")
    if content is not None and not isinstance(content, str | list):
        raise wrong_type(f"{at}.content", "a string or an array", content)


def _response_format(fmt: Any, at: str) -> None:
    if not isinstance(fmt, dict):
        raise wrong_type(at, "an object", fmt)
    kind = fmt.get("type")
    if kind is None:
        raise missing(f"{at}.type")
    if kind not in _FORMATS:
        raise invalid_value(str(kind), _FORMATS, f"{at}.type")


def _chat(body: dict[str, Any]) -> None:
    _required(body, "messages", "Messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise wrong_type("body.messages", "an array", messages)
    if not messages:
        raise invalid(
            "body.messages",
            "empty array",
            "Expected an array with minimum length 1, but got an empty array instead.",
            "empty_array",
        )
    for n, message in enumerate(messages):
        _chat_message(n, message)
    _optional(body, "n", Int(ge=1, le=128))
    if body.get("response_format") is not None:
        _response_format(body["response_format"], "body.response_format")
        if body["response_format"].get("type") == "json_schema":
            schema = body["response_format"].get("json_schema")
            if not isinstance(schema, dict):
                raise missing("body.response_format.json_schema")
            if not isinstance(schema.get("name"), str):
                raise missing("body.response_format.json_schema.name")


def _texts(value: Any, at: str) -> None:
    """A prompt or input: a string, or a non-empty array of strings or token arrays."""
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise wrong_type(at, "a string or a non-empty array", value)
    for n, item in enumerate(value):
        if not isinstance(item, str | int | list) or isinstance(item, bool):
            raise wrong_type(f"{at}[{n}]", "a string or an array of integers", item)


def _completions(body: dict[str, Any]) -> None:
    _required(body, "prompt", "Prompt")
    _texts(body["prompt"], "body.prompt")
    _optional(body, "n", Int(ge=1, le=128))


def _embeddings(body: dict[str, Any]) -> None:
    _required(body, "input", "Input")
    _texts(body["input"], "body.input")
    if isinstance(body["input"], list) and len(body["input"]) > MAX_EMBEDDING_INPUTS:
        raise invalid(
            "body.input",
            "array too long",
            f"Expected an array with maximum length {MAX_EMBEDDING_INPUTS}, "
            f"but got an array with length {len(body['input'])} instead.",
            "array_above_max_length",
        )
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise invalid_value(str(fmt), ("float", "base64"), "body.encoding_format")
    _optional(body, "dimensions", Int(ge=1, le=3072))


def _responses(body: dict[str, Any]) -> None:
    value = body.get("input")
    if value is not None and not isinstance(value, str | list):
        raise wrong_type("body.input", "a string or an array", value)
    text = body.get("text")
    if isinstance(text, dict) and text.get("format") is not None:
        _response_format(text["format"], "body.text.format")


_BY_ENDPOINT: dict[str, Callable[[dict[str, Any]], None]] = {
    CHAT: _chat,
    COMPLETIONS: _completions,
    EMBEDDINGS: _embeddings,
    RESPONSES: _responses,
}


def check_body(endpoint: str, body: dict[str, Any]) -> None:
    """Raise the ParamError the Batch API's validation reports for this line's body, if any."""
    _required(body, "model", "Model")
    if not isinstance(body["model"], str):
        raise wrong_type("body.model", "a string", body["model"])
    if body.get("stream") is True and endpoint in _LABELS:
        raise ParamError(
            f"{_LABELS[endpoint]}: Streaming is not supported in the Batch API.",
            "body.stream",
            "streaming_unsupported",
        )
    _BY_ENDPOINT[endpoint](body)
