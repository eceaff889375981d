"""`batchledger demo`: the whole system on one machine, end to end, then serving."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from projections import queries
from service import actors
from service.adapters.database import migrate
from service.adapters.tokens import Role, create_token
from service.application.ledger import Actor
from service.config import Settings
from service.entrypoints.api.server import run_api
from service.entrypoints.intake import Importer
from service.entrypoints.runtime import Runtime
from service.logs import configure
from service.net import free_port
from service.tools.emulator.app import create_emulator_app
from service.tools.emulator.knobs import Knobs
from statemachine.states import UNFINISHED

SAMPLE = Path(__file__).resolve().parent / "samples" / "sessions.csv"


async def _start_emulator() -> tuple[web.AppRunner, str]:
    knobs = Knobs(validating_seconds=0.2, in_progress_seconds=0.5, finalizing_seconds=0.2)
    runner = web.AppRunner(create_emulator_app(knobs), access_log=None)
    await runner.setup()
    port = free_port(8089)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _wait_until_done(runtime: Runtime, stop: asyncio.Event) -> None:
    pool = runtime.store.pool
    while not stop.is_set():
        counts = await queries.summary(pool)
        busy = counts.pending_batching + counts.batching_in_progress
        finished = counts.processing_complete + counts.processing_failed
        if finished and not busy and not await queries.batches_in(pool, UNFINISHED):
            return
        await asyncio.sleep(0.2)


def _print_summary(counts: queries.StatusCounts, batches: int, seconds: float) -> None:
    done = counts.processing_complete + counts.processing_failed
    print(f"\npipeline: {done} requests finished in {seconds:.1f} s across {batches} batch(es)\n")
    print(f"  {'status':<24}{'requests':>9}")
    for status, n in msgspec.structs.asdict(counts).items():
        print(f"  {status:<24}{n:>9}")


def _print_try(token: str, base: str, *, console: bool = True) -> None:
    auth = f'-H "Authorization: Bearer {token}"'
    print(f"\nadmin token (shown once): {token}\n\ntry:")
    print(f"  curl {auth} {base}/api/admin/legacy/summary")
    print(f'  curl {auth} "{base}/api/admin/legacy/requests?status=processing_complete&limit=3"')
    print(f"  curl {auth} {base}/api/admin/legacy/batches")
    print(f'  curl -N {auth} "{base}/api/admin/legacy/events/stream?category=batch"')
    print(f"  open {base}/api/admin/legacy/openapi.json (with the token) for every route")
    if console:  # CONSOLE_ENABLED
        print(f"\nadmin console: open {base}/admin/ and sign in with the admin token above")


async def demo(settings: Settings, dsn: str, *, exit_when_done: bool, sample: Path = SAMPLE) -> int:
    """Import the sample, run it through the emulator, print the result, keep serving."""
    configure(settings.log_level if settings.log_level != "INFO" else "WARNING", "console")
    await migrate(dsn)
    emulator, emulator_url = await _start_emulator()
    port = free_port(settings.port)
    settings = msgspec.structs.replace(
        settings,
        openai_base_url=f"{emulator_url}/v1",
        openai_api_key="sk-demo",
        port=port,
        batch_creation_interval_seconds=0.5,
        batch_polling_interval_seconds=0.5,
    )
    runtime = await Runtime.open(settings, dsn)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"emulator: {emulator_url}/v1   admin API: http://127.0.0.1:{port}")
    report = await Importer(runtime.app.ledger, Actor(actors.DEMO_IMPORT)).run(
        str(sample), "demo", settings.openai_model
    )
    print(
        f"imported {report.queued} sessions from {sample} ({report.already_queued} already there, "
        f"{len(report.problems)} failed)"
    )
    jobs: list[Coroutine[Any, Any, None]] = [r.run(stop) for r in runtime.runners]
    jobs += [s.run(stop) for s in runtime.schedulers()]
    jobs.append(run_api(runtime.store, runtime.app, runtime.metrics, settings, stop))
    if runtime.relay is not None:
        jobs.append(runtime.relay.run(stop))
        runtime.metrics.relay = runtime.relay.health
        print(f"JetStream relay: stream {settings.nats_stream} at {runtime.relay.health.where}")
    else:
        print("JetStream relay: off (NATS_URL is not set; see docs/integrations.md)")
    tasks = [asyncio.ensure_future(j) for j in jobs]
    started = time.monotonic()
    try:
        await _wait_until_done(runtime, stop)
        counts = await queries.summary(runtime.store.pool)
        batches = int(await runtime.store.pool.fetchval("SELECT count(*) FROM batches"))
        _print_summary(counts, batches, time.monotonic() - started)
        token = await create_token(
            runtime.store.pool, f"demo-admin-{secrets.token_hex(3)}", Role.admin
        )
        _print_try(token, f"http://127.0.0.1:{port}", console=settings.console_enabled)
        if not exit_when_done:
            print("\nserving until Ctrl-C", flush=True)
            await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.close()
        await emulator.cleanup()
    return 0 if counts.processing_failed == 0 else 1
