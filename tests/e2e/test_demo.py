"""`batchledger demo --exit-when-done` on a machine with no PostgreSQL it can see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def isolated_network() -> list[str]:
    """A prefix running the command in a network namespace of its own (no server on :5432)."""
    if shutil.which("unshare") and shutil.which("ip") and os.geteuid() == 0:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    return []


@pytest.mark.slow
def test_demo_runs_every_sample_request_to_completion_without_database_url(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "TEST_DATABASE_URL", "PG", "NATS_URL"))
    }
    env["BATCHLEDGER_DATA_DIR"] = str(tmp_path / "pgdata")
    prefix = isolated_network()
    check = "import socket; s = socket.socket(); print(s.connect_ex(('127.0.0.1', 5432)))"
    if prefix:
        seen = subprocess.run(
            [*prefix, sys.executable, "-c", check], capture_output=True, text=True, check=True
        )
        assert seen.stdout.strip() != "0", "the namespace must not see a server on 127.0.0.1:5432"
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "service.entrypoints.cli", "demo", "--exit-when-done"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "using the embedded PostgreSQL" in result.stderr
    lines = {
        line.split()[0]: line.split()[-1]
        for line in result.stdout.splitlines()
        if line.startswith("  processing_")
    }
    assert lines == {"processing_complete": "50", "processing_failed": "0"}
    assert "admin token (shown once): bl_" in result.stdout
    assert "JetStream relay: off (NATS_URL is not set" in result.stdout
