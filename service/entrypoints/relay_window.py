"""The relay's window of messages sent and not yet acknowledged, settled in log order."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import nats.js.errors
from nats.js import api

from service.adapters.jetstream import describe
from service.adapters.relay_state import Checkpoint


class PublishFailed(Exception):
    """A message was not acknowledged: the session ends and resumes from the checkpoint."""

    def __init__(self, position: int, reason: str, detail: str) -> None:
        super().__init__(f"event {position} was not stored ({reason}): {detail}")
        self.position, self.reason = position, reason


class Stopped(Exception):
    """`stop` was set while the relay waited on NATS."""


class AckWindow:
    """Messages sent and not yet settled, oldest first; `acked` ends the stored prefix."""

    def __init__(self, at: Checkpoint, size: int, floor: int = 0) -> None:
        self.acked = at
        self.size = size
        # The stream's last sequence when the session began: a message sent since that
        # JetStream calls a duplicate of a sequence up to here is one it remembers from
        # before a purge, not one it holds (those were found at start and not sent).
        self.floor = floor
        self._pending: deque[tuple[int, asyncio.Future[api.PubAck] | int]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """No more may be sent until the oldest is settled."""
        return len(self._pending) >= self.size

    def sent(self, position: int, ack: asyncio.Future[api.PubAck]) -> None:
        """A message is on its way."""
        self._pending.append((position, ack))

    def stored(self, position: int, sequence: int) -> None:
        """A message the stream already holds (found at start), settled as it is."""
        self._pending.append((position, sequence))

    def settle(self) -> Checkpoint:
        """Move `acked` over every settled message at the front; raise on a refused one."""
        while self._pending:
            position, ack = self._pending[0]
            if isinstance(ack, int):
                sequence = ack
            elif not ack.done():
                break
            elif (exc := ack.exception()) is not None:
                raise PublishFailed(position, _reason(exc), describe(exc))
            else:
                sequence = self._stored_sequence(position, ack.result())
            self._pending.popleft()
            self.acked = Checkpoint(position, sequence)
        return self.acked

    def _stored_sequence(self, position: int, ack: api.PubAck) -> int:
        if ack.duplicate and ack.seq <= self.floor:
            raise PublishFailed(
                position,
                "duplicate",
                f"JetStream took it for a duplicate of sequence {ack.seq}, which the stream no"
                " longer holds (purged within NATS_DUPLICATE_WINDOW_SECONDS): wait that long,"
                " or delete the stream instead of purging it, then `batchledger relay reset`",
            )
        return ack.seq

    async def wait_oldest(
        self, within: float, lost: asyncio.Future[Any], stopping: asyncio.Future[Any] | None
    ) -> None:
        """Wait for the oldest message's acknowledgement: PublishFailed late, Stopped on stop."""
        position, ack = self._pending[0]
        if isinstance(ack, int) or ack.done():
            return
        waits = {ack, lost} if stopping is None else {ack, lost, stopping}
        done, _ = await asyncio.wait(waits, timeout=within, return_when="FIRST_COMPLETED")
        if ack in done:
            return
        if stopping is not None and stopping in done:
            raise Stopped
        reason = "connection" if lost.done() else "timeout"
        raise PublishFailed(position, reason, f"no acknowledgement within {within:g}s")

    def abandon(self) -> None:
        """Forget what is in flight (it is sent again from the checkpoint)."""
        for _, ack in self._pending:
            if not isinstance(ack, int):
                ack.cancel()
        self._pending.clear()


def _reason(exc: BaseException) -> str:
    # No responder is a stream between leaders (or gone): wait and retry, not a refusal.
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return "no_stream"
    return "rejected"
