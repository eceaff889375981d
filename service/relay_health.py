"""What the JetStream relay is doing, as /metrics and /readyz show it (plain data: the
relay fills it, the kernel's metrics read it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec


class RelayProgress(msgspec.Struct, frozen=True):
    """A stream's checkpoint against the log: what `relay status`, /metrics and /readyz show."""

    stream: str
    position: int
    stream_sequence: int
    head: int
    lag_events: int
    lag_seconds: float  # age of the oldest event not yet relayed (0 when caught up)
    updated_at: datetime | None


@dataclass
class RelayHealth:
    """What this process's relay is doing, for /readyz and /metrics."""

    stream: str
    where: str  # the NATS servers, without credentials
    # The checkpoint against the head, read from PostgreSQL (shared by every instance).
    progress: Callable[[], Awaitable[RelayProgress]]
    role: str = "starting"  # starting | standby | leader
    nats: str = "not connected"  # connected | not connected | unreachable | refused
    error: str | None = None
    acked: int = 0  # the last position this process saw acknowledged in order
    publish_errors: dict[str, int] = field(default_factory=dict)

    def failed(self, reason: str) -> None:
        """Count one publish that failed (timeout, rejected, connection)."""
        self.publish_errors[reason] = self.publish_errors.get(reason, 0) + 1
