"""What the emulator can be told to do: timings, faults and forced outcomes."""

from __future__ import annotations

from typing import Literal

import msgspec

Outcome = Literal["complete", "fail", "expire", "cancel", "stuck_finalizing"]
DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-4-turbo", "gpt-5-mini"]


class Knobs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every knob; POST /_emulator/knobs updates the fields it names."""

    validating_seconds: float = 0.0
    in_progress_seconds: float = 0.0
    finalizing_seconds: float = 0.0
    cancelling_seconds: float = 0.0
    line_failure_rate: float = 0.0  # share of lines answered with a 500 in the error file
    outcome: Outcome = "complete"  # the fate of every new batch...
    outcome_queue: list[Outcome] = msgspec.field(default_factory=list)  # ...unless one is queued
    partial_lines: int = 0  # lines answered before a forced expiry or cancellation
    fail_next_calls: int = 0  # the next N /v1 calls answer fail_status
    fail_status: Literal[429, 500, 502, 503] = 429
    retry_after_seconds: int = 1
    malformed_output_lines: int = 0  # extra lines of invalid JSON in each output file
    unknown_custom_id_lines: int = 0  # extra lines for custom ids the input never had
    omitted_lines: int = 0  # requests that get no line in either file (a lossy batch)
    invalid_output_lines: int = 0  # answered requests whose content breaks the JSON schema
    enqueued_token_limit: int | None = None  # per model, over batches not yet finished
    models: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_MODELS))
    max_lines: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    seed: int = 0


def next_outcome(knobs: Knobs) -> Outcome:
    """The outcome for a batch being created: the queue first, then the default."""
    return knobs.outcome_queue.pop(0) if knobs.outcome_queue else knobs.outcome
