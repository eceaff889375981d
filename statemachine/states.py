"""The states of both machines, named as in the seed spec."""

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


IN_FLIGHT = frozenset(
    {BatchState.VALIDATING, BatchState.IN_PROGRESS, BatchState.FINALIZING, BatchState.CANCELLING}
)
"""Batch states the poller keeps asking OpenAI about."""

TO_INGEST = frozenset({BatchState.COMPLETED, BatchState.EXPIRED, BatchState.CANCELLED})
"""Batch states whose output and error files are ingested before PROCESSED."""
