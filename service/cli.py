"""The `batchledger` command line: the composition root for every command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from service.config import ConfigError, Settings, load_settings

DEFAULT_LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

Handler = Callable[[argparse.Namespace, Settings], int]


def _database_url(args: argparse.Namespace, settings: Settings) -> str:
    url = getattr(args, "database_url", None) or settings.database_url
    return url or DEFAULT_LOCAL_DSN


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations."""
    from service.database import migrate
    from service.dsn import redact

    dsn = _database_url(args, settings)
    applied = asyncio.run(migrate(dsn))
    where = redact(dsn)
    if applied:
        print(f"applied {len(applied)} migration(s) to {where}: {', '.join(applied)}")
    else:
        print(f"{where} is up to date")
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run benchmark suites."""
    from service import bench

    return bench.main(
        _database_url(args, settings), args.suites, quick=args.quick, json_path=args.json
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand and its help."""
    parser = argparse.ArgumentParser(
        prog="batchledger",
        description="Event-sourced pipeline for the OpenAI Batch API. Configuration comes from "
        "the environment (see .env.example).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply pending database migrations (idempotent)")
    p.add_argument("--database-url", help="PostgreSQL DSN (default: $DATABASE_URL)")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser(
        "bench",
        help="run throughput benchmarks against a scratch database",
        description="Each suite runs in a scratch database created on the server and dropped "
        "after. Suites: append_batched, append_single, read_all.",
    )
    p.add_argument("suites", nargs="*", help="suites to run (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--database-url", help="server DSN to create the scratch database on")
    p.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load settings, run the command; exit status 2 on bad config."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"batchledger: configuration error: {exc}", file=sys.stderr)
        return 2
    handler: Handler = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
