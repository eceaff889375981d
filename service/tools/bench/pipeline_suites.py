"""The pipeline suite: 100,000 requests from pending to PROCESSED through the emulator."""

from __future__ import annotations

import time

from service.tools.bench.core import Bench, Result, suite
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
