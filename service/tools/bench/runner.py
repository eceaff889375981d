"""Running suites in scratch databases, printing the table, writing the JSON."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import msgspec

from eventstore import EventStore
from service.adapters.database import migrate
from service.tools.bench import (
    console_suites,
    domain_suites,
    eventstore_suites,
    pipeline_suites,
    read_suites,
    relay_suites,
)
from service.tools.bench.core import SUITES, Bench, Result

# Importing the suite modules registers their suites.
LOADED = (
    eventstore_suites,
    domain_suites,
    read_suites,
    pipeline_suites,
    console_suites,
    relay_suites,
)


async def _scratch_database(admin_dsn: str, name: str) -> str:
    from service.adapters.dsn import with_database

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, name)
    await migrate(dsn)
    return dsn


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def run(admin_dsn: str, names: list[str], *, quick: bool) -> list[Result]:
    """Run each suite in a scratch database of its own on the server at `admin_dsn`."""
    results: list[Result] = []
    for name in names:
        db = f"batchledger_bench_{os.getpid()}"
        dsn = await _scratch_database(admin_dsn, db)
        store = await EventStore.open(dsn, max_size=8)
        try:
            print(f"running {name}...", file=sys.stderr, flush=True)
            results += await SUITES[name](Bench(store, quick))
        finally:
            await store.close()
            await _drop_database(admin_dsn, db)
    return results


def table(results: list[Result]) -> str:
    """The results as a fixed-width table."""
    head = (
        f"{'name':<24}{'value':>14} {'unit':<13}{'baseline':<14}{'baseline_value':>16}{'ratio':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        base = f"{r.baseline_value:>16,.1f}" if r.baseline_value is not None else f"{'-':>16}"
        ratio = f"{r.ratio:>8.2f}" if r.ratio is not None else f"{'-':>8}"
        lines.append(
            f"{r.name:<24}{r.value:>14,.1f} {r.unit:<13}{r.baseline or '-':<14}{base}{ratio}"
        )
    return "\n".join(lines)


def main(admin_dsn: str, names: list[str], *, quick: bool, json_path: str | None) -> int:
    """Entry point of the CLI command."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(
            f"unknown suite(s): {', '.join(unknown)}; known: {', '.join(SUITES)}", file=sys.stderr
        )
        return 2
    from service.logs import configure

    configure("WARNING", "console")  # the table goes to stdout; scheduler logs stay quiet
    results = asyncio.run(run(admin_dsn, names or list(SUITES), quick=quick))
    print(table(results))
    if json_path:
        with open(json_path, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode({"results": results})) + b"\n")
    return 0
