"""The emulator's files and batches, and the lifecycle each batch runs through."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.tools.emulator.answers import Answer, Context, answer
from service.tools.emulator.knobs import Knobs, Outcome, next_outcome
from service.tools.emulator.validation import Parsed, missing_file, validate

DAY = 24 * 3600
_LINES_PER_TURN = 256  # answers built between two yields to the event loop
_SERVER_ERROR: dict[str, Any] = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
_UNEXECUTED = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


@dataclass
class StoredFile:
    """A file as /v1/files keeps it."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    expires_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The FileObject shape, every key present."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
            "status_details": None,
        }


@dataclass
class EmuBatch:
    """A batch as /v1/batches keeps it."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    outcome: Outcome
    status: str = "validating"
    model: str | None = None
    stamps: dict[str, int | None] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        )
    )
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    tokens: int = 0
    usage: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    output_expires_seconds: int | None = None  # output_expires_after.seconds, if given
    odd_status: str | None = None  # reported instead of `status` by the next retrievals...
    odd_retrievals: int = 0  # ...this many of them

    def to_json(self) -> dict[str, Any]:
        """The Batch shape, every key present, null where unset."""
        i, o = self.usage["input"], self.usage["output"]
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + DAY,
            **self.stamps,
            "request_counts": dict(self.counts),
            "usage": {
                "input_tokens": i,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": o,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": i + o,
            },
            "metadata": self.metadata,
        }


class Emulator:
    """Files, batches and knobs of one emulator process."""

    def __init__(self, knobs: Knobs | None = None, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.reset(knobs or Knobs())

    def reset(self, knobs: Knobs) -> None:
        """Forget every file and batch and start over with `knobs`."""
        self.knobs = knobs
        self.rng = random.Random(knobs.seed)
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, EmuBatch] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def now(self) -> int:
        """Unix seconds."""
        return int(self.clock())

    def new_id(self, prefix: str, hex_chars: int = 24) -> str:
        """An id in OpenAI's style, reproducible under a seed."""
        return f"{prefix}{self.rng.getrandbits(hex_chars * 4):0{hex_chars}x}"

    def add_file(
        self, filename: str, purpose: str, content: bytes, expires_in: int | None = None
    ) -> StoredFile:
        """Store a file; it expires `expires_in` seconds after its creation, if given."""
        now = self.now()
        expires_at = None if expires_in is None else now + expires_in
        f = StoredFile(self.new_id("file-"), filename, purpose, content, now, expires_at)
        self.files[f.id] = f
        return f

    def file(self, file_id: str) -> StoredFile | None:
        """A stored file, or None if there is none or it has expired (then it is gone)."""
        f = self.files.get(file_id)
        if f is not None and f.expires_at is not None and f.expires_at <= self.now():
            del self.files[file_id]
            return None
        return f

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        window: str,
        metadata: dict[str, str] | None,
        output_expires_seconds: int | None = None,
    ) -> EmuBatch:
        """Create a batch and start its lifecycle in the background."""
        batch = EmuBatch(
            id=self.new_id("batch_", 32),
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=window,
            metadata=metadata,
            created_at=self.now(),
            outcome=next_outcome(self.knobs),
            output_expires_seconds=output_expires_seconds,
        )
        if self.knobs.odd_status is not None:  # armed for this one batch: disarm it
            batch.odd_status, batch.odd_retrievals = (
                self.knobs.odd_status,
                self.knobs.odd_status_retrieves,
            )
            self.knobs.odd_status = None
        self.batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return batch

    def retrieve(self, batch: EmuBatch) -> dict[str, Any]:
        """The Batch object as a retrieval answers it: the armed odd status first, if any."""
        body = batch.to_json()
        if batch.odd_retrievals > 0:
            batch.odd_retrievals -= 1
            body["status"] = batch.odd_status
        return body

    def enqueued_tokens(self) -> dict[str, int]:
        """Prompt tokens per model over batches that are not finished."""
        out: dict[str, int] = {}
        for b in self.batches.values():
            if b.status in ("in_progress", "finalizing") and b.model:
                out[b.model] = out.get(b.model, 0) + b.tokens
        return out

    def request_cancel(self, batch: EmuBatch) -> None:
        """Client cancellation: cancelling now, cancelled once the lifecycle notices."""
        batch.status = "cancelling"
        batch.stamps["cancelling_at"] = self.now()
        batch.cancel_requested.set()

    async def close(self) -> None:
        """Stop every running lifecycle."""
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _step(self, batch: EmuBatch, seconds: float) -> bool:
        """Wait out a step; True if a cancellation arrived meanwhile."""
        if not batch.cancel_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch.cancel_requested.wait(), seconds)
        await asyncio.sleep(0)
        return batch.cancel_requested.is_set()

    async def _run(self, batch: EmuBatch) -> None:
        k = self.knobs
        if await self._step(batch, k.validating_seconds):
            await self._finish(batch, [], 0, "cancelled", "batch_cancelled")
            return
        parsed = self._validate(batch)
        if batch.outcome == "fail" and not parsed.errors:
            parsed.errors.append(
                {
                    "code": "invalid_request",
                    "message": "Forced failure.",
                    "param": None,
                    "line": None,
                }
            )
        if parsed.errors:
            batch.status, batch.errors = "failed", parsed.errors
            batch.stamps["failed_at"] = self.now()
            return
        batch.model, batch.tokens = parsed.model, parsed.tokens
        batch.status = "in_progress"
        batch.stamps["in_progress_at"] = self.now()
        batch.counts["total"] = len(parsed.requests)
        if await self._step(batch, k.in_progress_seconds) or batch.outcome == "cancel":
            await self._cancel_with_partial_output(batch, parsed.requests)
        elif batch.outcome == "expire":
            await self._finish(batch, parsed.requests, k.partial_lines, "expired", "batch_expired")
        else:
            batch.status = "finalizing"
            batch.stamps["finalizing_at"] = self.now()
            if batch.outcome == "stuck_finalizing":
                return
            await self._step(batch, k.finalizing_seconds)
            await self._finish(batch, parsed.requests, len(parsed.requests), "completed", None)

    def _validate(self, batch: EmuBatch) -> Parsed:
        source = self.file(batch.input_file_id)
        if source is None:  # never uploaded, deleted or expired: OpenAI fails it here
            return Parsed(errors=[missing_file(batch.input_file_id)])
        try:
            return validate(source.content, batch.endpoint, self.knobs, self.enqueued_tokens())
        except Exception as exc:  # a bug here must fail the batch, not leave it validating
            message = f"The emulator could not validate this batch: {exc!r}"
            return Parsed(
                errors=[{"code": "server_error", "message": message, "param": None, "line": None}]
            )

    async def _cancel_with_partial_output(
        self, batch: EmuBatch, requests: list[dict[str, Any]]
    ) -> None:
        if batch.status != "cancelling":
            batch.status = "cancelling"
            batch.stamps["cancelling_at"] = self.now()
        await asyncio.sleep(self.knobs.cancelling_seconds)
        await self._finish(
            batch, requests, self.knobs.partial_lines, "cancelled", "batch_cancelled"
        )

    async def _finish(
        self,
        batch: EmuBatch,
        requests: list[dict[str, Any]],
        answered: int,
        status: str,
        rest_code: str | None,
    ) -> None:
        out_lines: list[bytes] = []
        err_lines: list[bytes] = []
        omitted = self.knobs.omitted_lines
        for n, req in enumerate(requests):
            if n % _LINES_PER_TURN == 0:
                await asyncio.sleep(0)  # answers take CPU: let other clients in meanwhile
            if n < omitted:
                continue
            if n >= answered:
                code = rest_code or "batch_expired"
                err_lines.append(_encode(self._unexecuted_line(req["custom_id"], code)))
            elif self.rng.random() < self.knobs.line_failure_rate:
                err_lines.append(_encode(self._server_error_line(req["custom_id"])))
            else:
                garbled = n - omitted < self.knobs.invalid_output_lines
                line, ok = self._answer_line(batch, req, garbled=garbled)
                (out_lines if ok else err_lines).append(line)
        for n in range(self.knobs.unknown_custom_id_lines):
            stray = {"custom_id": f"unknown-{n}", "body": {"model": batch.model}}
            out_lines.append(self._answer_line(batch, stray)[0])
        self.rng.shuffle(out_lines)
        self.rng.shuffle(err_lines)
        completed = len(out_lines) - self.knobs.unknown_custom_id_lines
        expires_in = batch.output_expires_seconds
        out_lines += [
            b'{"id": "batch_req_broken", "custom_id": '
            for _ in range(self.knobs.malformed_output_lines)
        ]
        if completed > 0:
            batch.output_file_id = self._write(f"{batch.id}_output.jsonl", out_lines, expires_in)
        if err_lines:
            batch.error_file_id = self._write(f"{batch.id}_error.jsonl", err_lines, expires_in)
        batch.counts.update(completed=completed, failed=len(err_lines))
        batch.status = status
        batch.stamps[f"{status}_at"] = self.now()

    def _write(self, name: str, lines: list[bytes], expires_in: int | None) -> str:
        content = b"\n".join(lines) + b"\n"
        return self.add_file(name, "batch_output", content, expires_in).id

    def _answer(self, batch: EmuBatch, body: dict[str, Any], garbled: bool) -> Answer:
        try:
            return answer(batch.endpoint, body, Context(self.new_id, self.now(), garbled))
        except Exception:  # a bug must cost one line a 500, as at OpenAI, not the batch
            log.exception("emulator.answer_failed", extra={"batch_id": batch.id})
            return Answer(500, _SERVER_ERROR)

    def _answer_line(
        self, batch: EmuBatch, req: dict[str, Any], *, garbled: bool = False
    ) -> tuple[bytes, bool]:
        """The encoded line for a request, and whether it succeeded (else: error file)."""
        result = self._answer(batch, req["body"], garbled)
        batch.usage["input"] += result.input_tokens
        batch.usage["output"] += result.output_tokens
        response = {
            "status_code": result.status,
            "request_id": self.new_id("req_", 32),
            "body": result.body,
        }
        line = {
            "id": self.new_id("batch_req_", 32),
            "custom_id": req["custom_id"],
            "response": response,
            "error": None,
        }
        return _encode(line), result.status == 200

    def _server_error_line(self, custom_id: str) -> dict[str, Any]:
        body = _SERVER_ERROR
        return {
            "id": self.new_id("batch_req_", 32),
            "custom_id": custom_id,
            "response": {"status_code": 500, "request_id": self.new_id("req_", 32), "body": body},
            "error": None,
        }

    def _unexecuted_line(self, custom_id: str, code: str) -> dict[str, Any]:
        message = _UNEXECUTED[code]
        return {
            "id": self.new_id("batch_req_", 32),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
