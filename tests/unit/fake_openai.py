"""An in-memory fake of our OpenAI adapter (OpenAIGateway), not of the SDK.

Files and batches live in dicts; `fail` queues errors for a method's next calls, and
`finish` plays OpenAI ending a batch with the output and error lines a test chooses.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, cast

from openai.types import Batch, BatchError
from openai.types.batch import Errors
from openai.types.batch_request_counts import BatchRequestCounts

from service.adapters.openai_gateway import (
    ENDPOINT,
    METADATA_KEY,
    OpenAIGateway,
    PermanentError,
)

Status = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class FakeOpenAI:
    """The gateway's async methods and return shapes, over dicts, with failures on demand."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, Batch] = {}  # in creation order
        self.calls: list[str] = []
        self.errors: dict[str, int] = {}  # the gateway's error counters (unused by the fake)
        self._failures: dict[str, list[Exception]] = defaultdict(list)
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_767_000_000)

    # -- knobs ------------------------------------------------------------------------

    def fail(self, method: str, *errors: Exception) -> None:
        """Raise these errors, in order, on the next calls of `method` (then succeed again)."""
        self._failures[method].extend(errors)

    def finish(
        self,
        openai_batch_id: str,
        status: Status = "completed",
        *,
        output: Sequence[bytes] = (),
        errors: Sequence[bytes] = (),
        batch_errors: Sequence[tuple[str, str]] = (),
    ) -> None:
        """OpenAI moves a batch to `status`, with these output/error lines and batch errors."""
        update: dict[str, Any] = {"status": status}
        if output:
            update["output_file_id"] = self._store_file(b"\n".join(output) + b"\n")
        if errors:
            update["error_file_id"] = self._store_file(b"\n".join(errors) + b"\n")
        if batch_errors:
            update["errors"] = Errors(
                object="list",
                data=[BatchError(code=code, message=message) for code, message in batch_errors],
            )
        self.batches[openai_batch_id] = self.batches[openai_batch_id].model_copy(update=update)

    def created_for(self, batch_id: str) -> list[Batch]:
        """The OpenAI batches created for one of our batches."""
        return [
            b for b in self.batches.values() if (b.metadata or {}).get(METADATA_KEY) == batch_id
        ]

    # -- the gateway's interface -------------------------------------------------------

    async def upload(self, filename: str, content: bytes) -> str:
        """Store a batch input file; its id."""
        self._enter("upload")
        return self._store_file(content)

    async def create_batch(self, input_file_id: str, batch_id: str) -> Batch:
        """Create a validating batch for an uploaded file, tagged with our batch id."""
        self._enter("create_batch")
        if input_file_id not in self.files:
            raise PermanentError("invalid_request_error", f"no file {input_file_id}")
        total = len(self.files[input_file_id].splitlines())
        batch = Batch(
            id=f"batch_{next(self._ids)}",
            object="batch",
            endpoint=ENDPOINT,
            completion_window="24h",
            created_at=next(self._clock),
            input_file_id=input_file_id,
            status="validating",
            metadata={METADATA_KEY: batch_id},
            request_counts=BatchRequestCounts(total=total, completed=0, failed=0),
        )
        self.batches[batch.id] = batch
        return batch

    async def find_batch(self, batch_id: str, *, max_pages: int = 20) -> Batch | None:
        """The newest OpenAI batch created for our batch, if any."""
        self._enter("find_batch")
        found = self.created_for(batch_id)
        return found[-1] if found else None

    async def check(self, seconds: float) -> None:
        """OpenAI answers (or the error queued for `check`)."""
        self._enter("check")

    async def retrieve(self, openai_batch_id: str) -> Batch:
        """The batch as the fake OpenAI sees it now."""
        self._enter("retrieve")
        return self._batch(openai_batch_id)

    async def cancel(self, openai_batch_id: str) -> Batch:
        """Start cancelling a batch."""
        self._enter("cancel")
        batch = self._batch(openai_batch_id).model_copy(update={"status": "cancelling"})
        self.batches[openai_batch_id] = batch
        return batch

    async def lines(self, file_id: str) -> AsyncIterator[bytes]:
        """The non-blank lines of a stored file."""
        self._enter("lines")
        for line in self.files[file_id].split(b"\n"):
            if line.strip():
                yield line

    # -- internals ---------------------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if self._failures[method]:
            raise self._failures[method].pop(0)

    def _store_file(self, content: bytes) -> str:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = content
        return file_id

    def _batch(self, openai_batch_id: str) -> Batch:
        if openai_batch_id not in self.batches:
            raise PermanentError("not_found", f"no batch {openai_batch_id}")
        return self.batches[openai_batch_id]


def as_gateway(fake: FakeOpenAI) -> OpenAIGateway:
    """The fake where the use cases expect our adapter (test_use_cases checks the signatures)."""
    return cast(OpenAIGateway, fake)
