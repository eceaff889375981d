"""Every projection by name."""

from __future__ import annotations

from eventstore import EventStore
from projections.base import Projection
from projections.batches import BatchesProjection
from projections.requests import RequestsProjection
from projections.runner import checkpoint


def all_projections() -> dict[str, Projection]:
    """Fresh instances of every projection, by name."""
    return {p.name: p for p in (RequestsProjection(), BatchesProjection())}


async def status(store: EventStore) -> list[dict[str, object]]:
    """Each projection's checkpoint, lag behind the head, and row count per table."""
    head = await store.head()
    out: list[dict[str, object]] = []
    for name, projection in all_projections().items():
        position = await checkpoint(store.pool, name)
        rows = {
            t: int(await store.pool.fetchval(f"SELECT count(*) FROM {t}"))
            for t in projection.tables
        }
        out.append({"name": name, "checkpoint": position, "lag": head - position, "rows": rows})
    return out
