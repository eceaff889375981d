"""Real processes for end-to-end tests: the emulator and `batchledger serve` on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from service.net import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered at {url}")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "service.entrypoints.cli", *args],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    zero = ["--validating-seconds", "0", "--in-progress-seconds", "0", "--finalizing-seconds", "0"]
    proc = start(["emulator", "--port", str(port), *zero])
    wait_http(f"http://127.0.0.1:{port}/_emulator/knobs")
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
