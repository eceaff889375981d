"""Input file validation as the Batch API does it: every problem reported with its line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.tools.emulator.bodies import check_body, served_by
from service.tools.emulator.knobs import Knobs
from service.tools.emulator.model import input_tokens
from service.tools.emulator.params import ParamError, invalid_value, wrong_type

ORGANIZATION = "org-emulator"


@dataclass
class Parsed:
    """A valid input file: its requests in order, its model and its prompt tokens."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    tokens: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


_decode = msgspec.json.Decoder().decode


def _error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _check_line(
    n: int, raw: bytes, endpoint: str, seen: set[str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    try:
        obj = _decode(raw)
    except msgspec.DecodeError:
        return None, _error("invalid_json_line", f"Line {n} is not valid JSON.", n)
    if not isinstance(obj, dict):
        return None, _error("invalid_json_line", f"Line {n} is not a JSON object.", n)
    for key in ("custom_id", "method", "url", "body"):
        if key not in obj or obj[key] in (None, ""):
            return None, _error(
                "missing_required_parameter", f"Missing required parameter: '{key}'.", n, key
            )
    if obj["method"] != "POST":
        return None, _param_error(invalid_value(str(obj["method"]), ("POST",), "method"), n)
    if obj["url"] != endpoint:
        msg = f"The URL provided for this request does not match the batch endpoint {endpoint}."
        return None, _error("invalid_url", msg, n, "url")
    if not isinstance(obj["custom_id"], str):
        return None, _param_error(wrong_type("custom_id", "a string", obj["custom_id"]), n)
    if obj["custom_id"] in seen:
        msg = (
            f"The custom_id for this request is a duplicate of another request: {obj['custom_id']}."
        )
        return None, _error("duplicate_custom_id", msg, n, "custom_id")
    seen.add(obj["custom_id"])
    if not isinstance(obj["body"], dict):
        return None, _param_error(wrong_type("body", "an object", obj["body"]), n)
    try:
        check_body(endpoint, obj["body"])
    except ParamError as exc:
        return None, _param_error(exc, n)
    return obj, None


def _param_error(exc: ParamError, n: int) -> dict[str, Any]:
    return _error(exc.code or "invalid_request", exc.message, n, exc.param)


def missing_file(file_id: str) -> dict[str, Any]:
    """OpenAI's error for a batch whose input file does not exist (or no longer does)."""
    msg = f"Cannot find file {file_id}, or organization {ORGANIZATION} does not have access to it."
    return _error("invalid_request", msg, None, "file_id")


def _model_errors(out: Parsed, n: int, model: str, endpoint: str, knobs: Knobs) -> bool:
    """Record a line's model problem, if any; True when the line is fine."""
    if out.model is None:
        out.model = model
    elif model != out.model:
        msg = "The batch input file contains requests for more than one model."
        out.errors.append(_error("mismatched_model", msg, n, "body.model"))
        return False
    if model not in knobs.models:
        msg = f"The provided model '{model}' is not supported by the Batch API."
        out.errors.append(_error("model_not_found", msg, n, "body.model"))
        return False
    if endpoint not in served_by(model):
        msg = f"The model '{model}' does not support {endpoint}."
        out.errors.append(_error("invalid_value", msg, n, "body.model"))
        return False
    return True


def validate(content: bytes, endpoint: str, knobs: Knobs, enqueued: dict[str, int]) -> Parsed:
    """Parse and check an input file; `errors` is empty when the batch may run."""
    out = Parsed()
    seen: set[str] = set()
    rejected = set(knobs.rejected_input_lines)
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) > knobs.max_lines:
        msg = (
            f"The batch input file is larger than the {knobs.max_lines} maximum number of requests."
        )
        out.errors.append(_error("too_many_requests", msg, None))
        return out
    for n, raw in enumerate(lines, start=1):
        obj, err = _check_line(n, raw, endpoint, seen)
        if err is not None:
            out.errors.append(err)
            continue
        assert obj is not None
        if not _model_errors(out, n, obj["body"]["model"], endpoint, knobs):
            continue
        if n in rejected:
            msg = f"Line {n} was refused in validation (emulator knob rejected_input_lines)."
            out.errors.append(_error("invalid_request", msg, n, "body"))
            continue
        out.requests.append(obj)
        out.tokens += input_tokens(endpoint, obj["body"])
    if not lines:
        out.errors.append(_error("empty_file", "The batch input file is empty.", None))
    limit = knobs.enqueued_token_limit
    if not out.errors and limit is not None and out.model is not None:
        current = enqueued.get(out.model, 0)
        if current + out.tokens > limit:
            msg = (
                f"Enqueued token limit reached for {out.model} in organization {ORGANIZATION}. "
                f"Limit: {limit} enqueued tokens. Please try again once some in_progress batches "
                "have been completed."
            )
            out.errors.append(_error("token_limit_exceeded", msg, None))
    return out
