"""The one table from OpenAI's batch statuses to our batch states."""

from __future__ import annotations

from statemachine.states import BatchState

OPENAI_STATUS_TO_STATE: dict[str, BatchState] = {
    "validating": BatchState.VALIDATING,
    "in_progress": BatchState.IN_PROGRESS,
    "finalizing": BatchState.FINALIZING,
    "completed": BatchState.COMPLETED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelling": BatchState.CANCELLING,
    "cancelled": BatchState.CANCELLED,
}

STATE_TO_TRIGGER: dict[BatchState, str] = {
    BatchState.VALIDATING: "mark_validating",
    BatchState.IN_PROGRESS: "mark_in_progress",
    BatchState.FINALIZING: "mark_finalizing",
    BatchState.COMPLETED: "mark_completed",
    BatchState.FAILED: "mark_failed",
    BatchState.EXPIRED: "mark_expired",
    BatchState.CANCELLING: "mark_cancelling",
    BatchState.CANCELLED: "mark_cancelled",
}
"""The trigger that moves a batch into the state an observed status maps to."""


class UnknownOpenAIStatus(ValueError):
    """OpenAI reported a status this table does not know."""


def is_known(openai_status: str) -> bool:
    """Whether the table maps this OpenAI batch status to a state of ours."""
    return openai_status in OPENAI_STATUS_TO_STATE


def state_for(openai_status: str) -> BatchState:
    """Our state for an OpenAI batch status."""
    try:
        return OPENAI_STATUS_TO_STATE[openai_status]
    except KeyError:
        raise UnknownOpenAIStatus(f"unknown OpenAI batch status {openai_status!r}") from None
