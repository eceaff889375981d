"""Every projection by name."""

from __future__ import annotations

import msgspec

from eventstore import EventStore
from projections.base import Projection
from projections.batches import BatchesProjection
from projections.requests import RequestsProjection
from projections.runner import checkpoint


def all_projections() -> dict[str, Projection]:
    """Fresh instances of every projection, by name."""
    return {p.name: p for p in (RequestsProjection(), BatchesProjection())}


class ProjectionStatus(msgspec.Struct, frozen=True):
    """Where a projection stands: its checkpoint, its lag behind the head, rows per table."""

    name: str
    checkpoint: int
    lag: int
    rows: dict[str, int]


async def status(store: EventStore) -> list[ProjectionStatus]:
    """Each projection's checkpoint, lag behind the head, and row count per table."""
    head = await store.head()
    out = []
    for name, projection in all_projections().items():
        position = await checkpoint(store.pool, name)
        rows = {
            t: int(await store.pool.fetchval(f"SELECT count(*) FROM {t}"))
            for t in projection.tables
        }
        out.append(ProjectionStatus(name, position, head - position, rows))
    return out
