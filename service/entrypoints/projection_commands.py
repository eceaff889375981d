"""The `projections rebuild|status` commands, with a progress bar on a terminal."""

from __future__ import annotations

import sys
import time

from eventstore import EventStore
from projections.rebuild import MAX_ROWS, rebuild
from projections.registry import all_projections, status
from service.adapters.database import migrate


async def status_command(dsn: str) -> int:
    """Print each projection's checkpoint, lag and rows."""
    await migrate(dsn)  # a fresh database has no tables to report on yet
    store = await EventStore.open(dsn, max_size=2)
    try:
        for row in await status(store):
            rows = ", ".join(f"{t}={n}" for t, n in row.rows.items())
            print(f"{row.name:<12} checkpoint={row.checkpoint:<10} lag={row.lag:<8} {rows}")
    finally:
        await store.close()
    return 0


async def rebuild_command(dsn: str, names: list[str], *, max_rows: int | None = None) -> int:
    """Rebuild the named projections (all when none named)."""
    from tqdm import tqdm

    known = all_projections()
    unknown = [n for n in names if n not in known]
    if unknown:
        print(
            f"unknown projection(s): {', '.join(unknown)}; known: {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    await migrate(dsn)
    store = await EventStore.open(dsn, max_size=2)
    try:
        chosen = [known[n] for n in names or list(known)]
        label = ", ".join(p.name for p in chosen)
        bar = tqdm(total=0, desc=f"rebuild {label}", unit="ev", disable=not sys.stderr.isatty())

        def progress(position: int, head: int) -> None:
            bar.total = head
            bar.update(position - bar.n)

        t = time.perf_counter()
        seen = await rebuild(store, chosen, max_rows=max_rows or MAX_ROWS, progress=progress)
        bar.close()
        elapsed = max(time.perf_counter() - t, 1e-9)
        print(f"rebuilt {label}: {seen} events in {elapsed:.1f}s ({seen / elapsed:,.0f} events/s)")
    finally:
        await store.close()
    return 0
