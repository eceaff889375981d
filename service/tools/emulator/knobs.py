"""What the emulator can be told to do: timings, faults and forced outcomes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

Outcome = Literal["complete", "fail", "expire", "cancel", "stuck_finalizing"]
DEFAULT_MODELS = [
    *("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-4-turbo", "gpt-5-mini"),
    *("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"),
    *("gpt-3.5-turbo-instruct", "babbage-002", "davinci-002"),
]
OPENAI_MAX_FILE_BYTES = 200 * 1024 * 1024

# The ranges are declared here, once: POST /_emulator/knobs, POST /_emulator/reset and
# the `batchledger emulator` flags all check values against them (`check_knob`).
Seconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]  # no step outlasts the 24 h window
Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]
# Counts are bounded so that one knob cannot make the emulator write a billion lines.
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Knobs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every knob; POST /_emulator/knobs updates the fields it names."""

    validating_seconds: Seconds = 0.0
    in_progress_seconds: Seconds = 0.0
    finalizing_seconds: Seconds = 0.0
    cancelling_seconds: Seconds = 0.0
    line_failure_rate: Rate = 0.0  # share of lines answered with a 500 in the error file
    outcome: Outcome = "complete"  # the fate of every new batch...
    outcome_queue: Annotated[list[Outcome], msgspec.Meta(max_length=10_000)] = msgspec.field(
        default_factory=list
    )  # ...unless one is queued
    partial_lines: Count = 0  # lines answered before a forced expiry or cancellation
    fail_next_calls: Count = 0  # the next N /v1 calls answer fail_status
    fail_status: Literal[429, 500, 502, 503] = 429
    retry_after_seconds: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 1
    malformed_output_lines: Count = 0  # extra lines of invalid JSON in each output file
    unknown_custom_id_lines: Count = 0  # extra lines for custom ids the input never had
    omitted_lines: Count = 0  # requests that get no line in either file (a lossy batch)
    invalid_output_lines: Count = 0  # answered requests whose content breaks the JSON schema
    enqueued_token_limit: Annotated[int, msgspec.Meta(ge=0)] | None = None  # per model
    models: Annotated[list[Model], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_MODELS)
    )
    max_lines: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 50_000
    # At most OpenAI's cap: the app refuses larger bodies before this knob could.
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1, le=OPENAI_MAX_FILE_BYTES)] = (
        OPENAI_MAX_FILE_BYTES
    )
    seed: int = 0
    response_delay_seconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 0.0  # every /v1 call
    # The next batch created reports this status on its first odd_status_retrieves
    # retrievals; creating it disarms the knob (back to None).
    odd_status: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    odd_status_retrieves: Count = 3
    # Validation refuses these input lines (1-based) of every batch while set: a stand-in for
    # whatever rule OpenAI may add that one of our lines breaks.
    rejected_input_lines: Annotated[
        list[Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]], msgspec.Meta(max_length=10_000)
    ] = msgspec.field(default_factory=list)


def next_outcome(knobs: Knobs) -> Outcome:
    """The outcome for a batch being created: the queue first, then the default."""
    return knobs.outcome_queue.pop(0) if knobs.outcome_queue else knobs.outcome


class KnobError(ValueError):
    """A knob that does not exist, or a value outside its range; `name` is the knob."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


_TYPES: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(Knobs)}


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _words(t: msgspec.inspect.Type) -> str:
    """A type's accepted values in words, constraints included."""
    i = msgspec.inspect
    if isinstance(t, i.UnionType):
        kinds = [_words(x) for x in t.types if not isinstance(x, i.NoneType)]
        nullable = len(kinds) < len(t.types)
        return " or ".join(kinds) + (" or null" if nullable else "")
    if isinstance(t, i.LiteralType):
        return "one of " + ", ".join(msgspec.json.encode(v).decode() for v in t.values)
    if isinstance(t, i.IntType | i.FloatType):
        kind = "a whole number" if isinstance(t, i.IntType) else "a number"
        if t.ge is not None and t.le is not None:
            return f"{kind} from {_number(t.ge)} to {_number(t.le)}"
        return f"{kind} >= {_number(t.ge)}" if t.ge is not None else kind
    if isinstance(t, i.StrType):
        return f"a string of {t.min_length or 0} to {t.max_length} characters"
    if isinstance(t, i.ListType):
        return f"a list of at most {t.max_length} items, each {_words(t.item_type)}"
    return type(t).__name__.removesuffix("Type").lower()


def accepted(name: str) -> str:
    """What knob `name` accepts, in words, read from its declaration."""
    return _words(msgspec.inspect.type_info(_TYPES[name]))


def check_knob(name: str, value: Any) -> Any:
    """`value` as knob `name` holds it; a KnobError names the knob and its range."""
    if name not in _TYPES:
        raise KnobError(name, f"there is no knob {name!r}; the knobs are {', '.join(_TYPES)}")
    try:
        return msgspec.convert(value, _TYPES[name])
    except msgspec.ValidationError:
        shown = json.dumps(value, default=repr)[:100]  # NaN shows as NaN (msgspec: null)
        raise KnobError(name, f"{name} must be {accepted(name)}, not {shown}") from None


def with_knobs(base: Knobs, values: Mapping[str, Any]) -> Knobs:
    """A copy of `base` with `values` set, each checked against its range first."""
    checked = {name: check_knob(name, value) for name, value in values.items()}
    return msgspec.structs.replace(base, **checked)
