"""The relay's window of messages sent and not yet acknowledged, settled in log order."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from nats.js import api

from service.adapters.jetstream import describe
from service.adapters.relay_state import Checkpoint


class PublishFailed(Exception):
    """A message was not acknowledged: the session ends and resumes from the checkpoint."""

    def __init__(self, position: int, reason: str, detail: str) -> None:
        super().__init__(f"event {position} was not stored ({reason}): {detail}")
        self.position, self.reason = position, reason


class AckWindow:
    """Messages sent and not yet settled, oldest first; `acked` ends the contiguous prefix
    JetStream stored, the only position the checkpoint may move to."""

    def __init__(self, at: Checkpoint, size: int) -> None:
        self.acked = at
        self.size = size
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
                raise PublishFailed(position, "rejected", describe(exc))
            else:
                sequence = ack.result().seq
            self._pending.popleft()
            self.acked = Checkpoint(position, sequence)
        return self.acked

    async def wait_oldest(self, within: float, lost: asyncio.Future[Any]) -> None:
        """Wait until the oldest message is settled; PublishFailed if it is not in time."""
        position, ack = self._pending[0]
        if isinstance(ack, int) or ack.done():
            return
        done, _ = await asyncio.wait({ack, lost}, timeout=within, return_when="FIRST_COMPLETED")
        if ack not in done:
            reason = "connection" if lost.done() else "timeout"
            raise PublishFailed(position, reason, f"no acknowledgement within {within:g}s")

    def abandon(self) -> None:
        """Forget what is in flight (it is sent again from the checkpoint)."""
        for _, ack in self._pending:
            if not isinstance(ack, int):
                ack.cancel()
        self._pending.clear()
