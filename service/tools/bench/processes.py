"""Subprocesses of our own CLI for suites that need a server or an emulator."""

from __future__ import annotations

import asyncio
import os
import sys

from service.net import free_port


async def start_cli(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """A `batchledger` subprocess, returned once it accepts connections on `port`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.entrypoints.cli",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(400):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        except OSError:
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"batchledger {args[0]} did not start")


async def start_emulator() -> tuple[asyncio.subprocess.Process, str]:
    """A zero-latency emulator in its own process (it gets the second core)."""
    port = free_port()
    zero = ["--validating-seconds", "0", "--in-progress-seconds", "0", "--finalizing-seconds", "0"]
    proc = await start_cli(["emulator", "--port", str(port), *zero], port)
    return proc, f"http://127.0.0.1:{port}"
