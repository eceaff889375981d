"""The pipeline suites: 100,000 requests from pending to PROCESSED through the emulator, and
the memory of one batch creator pass over 200,000 pending requests."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from eventstore import EventStore
from service.tools.bench.core import Bench, Result, suite, with_baseline
from service.tools.bench.processes import start_emulator


@suite("pipeline")
async def pipeline(b: Bench) -> list[Result]:
    """Seconds for 100,000 pending requests to reach PROCESSED through the emulator."""
    from projections import queries
    from service.config import Settings
    from service.entrypoints.runtime import Runtime
    from service.tools.synthetic import TRANSCRIPT, ledger, queue_many

    n = b.size(100_000, 10_000)
    proc, url = await start_emulator()
    try:
        settings = Settings(
            openai_base_url=f"{url}/v1",
            openai_api_key="sk-bench",
            batch_creation_interval_seconds=0,
            batch_polling_interval_seconds=0,
        )
        rt = await Runtime.open(settings, b.store.dsn)
        agg = ledger(b.store)
        for start in range(0, n, 10_000):
            await queue_many(
                agg, min(10_000, n - start), prefix=f"p{start}-", transcript=TRANSCRIPT
            )
        await rt.catch_up()
        t = time.perf_counter()
        await rt.run_until_idle()
        seconds = time.perf_counter() - t
        done = (await queries.summary(b.store.pool)).processing_complete
        await rt.close()
    finally:
        proc.terminate()
        await proc.wait()
    if done != n:
        raise RuntimeError(f"only {done} of {n} requests completed")
    return [
        Result("pipeline_seconds", seconds, "s"),
        Result("pipeline_rate", n / seconds, "requests/s"),
    ]


# The child imports only what every version of the code has (Settings, Runtime, configure),
# so BATCHLEDGER_BENCH_TREE can point it at another checkout: the figure before a change.
_CREATOR_CHILD = """
import asyncio, json, resource, sys, time
from service.config import Settings
from service.entrypoints.runtime import Runtime
from service.logs import configure

async def main(dsn, url):
    configure("WARNING", "console")
    rt = await Runtime.open(Settings(openai_base_url=url, openai_api_key="sk-bench"), dsn)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    await rt.creator.run_once()
    seconds = time.perf_counter() - started
    await rt.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds}))

asyncio.run(main(*sys.argv[1:]))
"""


@suite("creator")
async def creator(b: Bench) -> list[Result]:
    """Peak RSS of one creator pass over 200,000 pending requests, in a process of its own."""
    n = b.size(200_000, 2_000)
    await _queue_pending(b.store, n)
    proc, url = await start_emulator()
    try:
        figures = await _creator_child(b.store.dsn, f"{url}/v1")
    finally:
        proc.terminate()
        await proc.wait()
    batches, requests = await _planned(b.store)
    if requests != n:
        raise RuntimeError(f"the creator planned {requests} of {n} requests")
    return [
        with_baseline(
            "creator_peak_rss",
            figures["peak_kib"] / 1024,
            "MB",
            "before_pass",
            figures["before_kib"] / 1024,
        ),
        Result("creator_seconds", figures["seconds"], "s"),
        Result("creator_batches", batches, "batches"),
        Result("creator_requests", requests, "requests"),
    ]


async def _queue_pending(store: EventStore, n: int) -> None:
    """n pending requests with three-message transcripts, the projections caught up."""
    from projections.registry import all_projections
    from projections.runner import ProjectionRunner
    from service.tools.synthetic import TRANSCRIPT, ledger, queue_many

    agg = ledger(store)
    for start in range(0, n, 10_000):
        await queue_many(agg, min(10_000, n - start), prefix=f"c{start}-", transcript=TRANSCRIPT)
    for projection in all_projections().values():
        await ProjectionRunner(store, projection).catch_up()


async def _creator_child(dsn: str, openai_url: str) -> dict[str, float]:
    """Run one creator pass in a child process; what it measured of itself."""
    tree = os.environ.get("BATCHLEDGER_BENCH_TREE")
    env = {**os.environ, "PYTHONPATH": tree} if tree else None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CREATOR_CHILD,
        dsn,
        openai_url,
        env=env,
        cwd=tree,  # `-c` puts the working directory first on sys.path
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the creator pass exited with {proc.returncode}")
    figures: dict[str, float] = json.loads(out.splitlines()[-1])
    return figures


async def _planned(store: EventStore) -> tuple[int, int]:
    """Batches planned and requests batched, from the log (whichever code wrote it)."""
    row = await store.pool.fetchrow(
        "SELECT count(*) FILTER (WHERE event_type = 'BatchPlanned') AS batches,"
        " count(*) FILTER (WHERE event_type = 'RequestBatched') AS requests FROM events"
    )
    return int(row["batches"]), int(row["requests"])
