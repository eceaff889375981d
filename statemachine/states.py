"""The states of both machines, named as in the seed spec, and every named set of them."""

from __future__ import annotations

from enum import StrEnum


class RequestState(StrEnum):
    """Where one analysis request is in the pipeline."""

    PENDING_BATCHING = "PENDING_BATCHING"
    BATCHING_IN_PROGRESS = "BATCHING_IN_PROGRESS"
    PROCESSING_COMPLETE = "PROCESSING_COMPLETE"
    PROCESSING_FAILED = "PROCESSING_FAILED"


class BatchState(StrEnum):
    """Where one batch is: the seed's nine states plus CANCELLING and EXPIRED."""

    PENDING = "PENDING"
    UPLOADING = "UPLOADING"
    VALIDATING = "VALIDATING"
    IN_PROGRESS = "IN_PROGRESS"
    FINALIZING = "FINALIZING"
    COMPLETED = "COMPLETED"
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CANCELLING = "CANCELLING"
    EXPIRED = "EXPIRED"


ACTIVE = frozenset({BatchState.VALIDATING, BatchState.IN_PROGRESS, BatchState.FINALIZING})
"""Batch states in which OpenAI works on the batch: the ones an admin can cancel."""

IN_FLIGHT = ACTIVE | {BatchState.CANCELLING}
"""Batch states the poller keeps asking OpenAI about."""

SUBMITTING = frozenset({BatchState.PENDING, BatchState.UPLOADING})
"""Batch states the creator finishes submitting (after a crash, too)."""

TO_INGEST = frozenset({BatchState.COMPLETED, BatchState.EXPIRED, BatchState.CANCELLED})
"""Batch states whose output and error files are ingested before PROCESSED."""

ENDED_AT_OPENAI = TO_INGEST | {BatchState.FAILED}
"""Batch states in which OpenAI is done with the batch."""

UNFINISHED = SUBMITTING | IN_FLIGHT | TO_INGEST
"""Batch states that still need the pipeline's work (a FAILED batch is released at once)."""
