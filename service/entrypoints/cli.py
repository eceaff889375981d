"""The `batchledger` command line: the composition root for every command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from service.adapters.embedded import EmbeddedUnavailable
from service.config import (
    ConfigError,
    Settings,
    StartupError,
    load_settings,
    require_openai_key,
)

Handler = Callable[[argparse.Namespace, Settings], int]


def _database_url(args: argparse.Namespace, settings: Settings) -> str:
    url = getattr(args, "database_url", None) or settings.database_url
    if url:
        return str(url)
    from service.adapters.embedded import embedded_dsn

    return embedded_dsn(settings.data_dir)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations."""
    from service.adapters.database import migrate
    from service.adapters.dsn import redact

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
    from service.tools.bench.runner import main as bench_main

    return bench_main(
        _database_url(args, settings), args.suites, quick=args.quick, json_path=args.json
    )


def cmd_console_screenshots(args: argparse.Namespace, settings: Settings) -> int:
    """Save a PNG of every console page on the demo's data."""
    from pathlib import Path

    from service.tools.screenshots import main as screenshots

    return screenshots(_database_url(args, settings), Path(args.out))


def cmd_docs(args: argparse.Namespace, settings: Settings) -> int:
    """Write (or with --check, compare) the documents generated from the declarations."""
    from pathlib import Path

    from statemachine.catalogue import GENERATED

    stale = []
    for rel, render in GENERATED.items():
        path = Path(args.root) / rel
        text = render()
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")
    if stale:
        print(f"out of date (run `batchledger docs`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


def cmd_emulator(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the OpenAI Batch API emulator until interrupted."""
    from aiohttp import web

    from service.tools.emulator.app import create_emulator_app
    from service.tools.emulator.knobs import Knobs, with_knobs

    values = {name: getattr(args, name) for name in _EMULATOR_FLAGS}
    if args.models is not None:
        values["models"] = args.models
    knobs = with_knobs(Knobs(), values)  # each value was checked as its flag was parsed
    print(f"OpenAI Batch API emulator on http://{args.host}:{args.port}/v1", flush=True)
    try:
        web.run_app(create_emulator_app(knobs), host=args.host, port=args.port, print=None)
    except OSError as exc:
        raise StartupError(
            f"the emulator cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            " (choose another --port)"
        ) from None
    return 0


def _positive_int(text: str) -> int:
    """An argparse type: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    if not text.isascii() or not text.isdigit() or int(text) > 65_535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _knob(name: str, parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type for the flag of knob `name`: its text parsed, then checked against
    the knob's range (declared once, on the emulator's Knobs)."""
    from service.tools.emulator.knobs import accepted, check_knob

    def convert(text: str) -> object:
        try:
            return check_knob(name, parse(text))
        except ValueError:  # unparsable, or a KnobError: out of range
            raise argparse.ArgumentTypeError(f"must be {accepted(name)}, got {text!r}") from None

    return convert


# The knobs `batchledger emulator` takes as flags (--validating-seconds, ...), with the
# flag's default where it differs from the knob's own (the demo's pace, not zero).
_EMULATOR_FLAGS: dict[str, tuple[Callable[[str], object], object, str]] = {
    "validating_seconds": (float, 1.0, "time in validating"),
    "in_progress_seconds": (float, 2.0, "time in in_progress"),
    "finalizing_seconds": (float, 1.0, "time in finalizing"),
    "line_failure_rate": (float, 0.0, "share of lines that fail"),
    "outcome": (
        str,
        "complete",
        "forced fate of every batch: complete, fail, expire, cancel or stuck_finalizing",
    ),
    "partial_lines": (int, 0, "lines answered before expiry/cancel"),
    "enqueued_token_limit": (int, None, "per-model token limit"),
    "response_delay_seconds": (float, 0.0, "delay of every /v1 answer"),
    "seed": (int, 0, "seed for ids, shuffling and failures"),
}


def _add_emulator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "emulator",
        help="serve a local OpenAI Batch API (files, batches) for the demo and tests",
        description="Knobs set here can be changed at run time with POST /_emulator/knobs "
        "(see docs/emulator.md, which gives each knob's range; a value outside it is refused).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=_port, default=8089, help="port to listen on (0-65535)")
    for name, (parse, default, help_text) in _EMULATOR_FLAGS.items():
        p.add_argument(
            "--" + name.replace("_", "-"), type=_knob(name, parse), default=default, help=help_text
        )
    p.add_argument(
        "--models",
        type=_knob("models", lambda text: text.split(",")),
        default=None,
        help="comma-separated known models (default: a built-in list)",
    )
    p.set_defaults(handler=cmd_emulator)


def cmd_projections(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild projections or show their status."""
    from service.entrypoints.projection_commands import rebuild_command, status_command

    dsn = _database_url(args, settings)
    if args.action == "status":
        return asyncio.run(status_command(dsn))
    return asyncio.run(rebuild_command(dsn, args.names, max_rows=args.max_rows))


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    """Show or move the JetStream relay's checkpoint."""
    from service.entrypoints.relay_commands import reset_command, status_command

    dsn = _database_url(args, settings)
    if args.action == "status":
        return asyncio.run(status_command(dsn, settings))
    return asyncio.run(reset_command(dsn, settings, args.to))


def _add_relay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "relay",
        help="the JetStream relay: checkpoint against the head, or move the checkpoint",
        description="`serve` runs the relay when NATS_URL is set (docs/integrations.md). "
        "`status` shows its checkpoint, the log's head, the lag and the stream's state; "
        "`reset --to N` makes the leader publish again from position N (messages the stream "
        "still holds are not published twice).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("status", "checkpoint, head, lag, stream"),
        ("reset", "move the checkpoint"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("--database-url", help="PostgreSQL DSN (default: $DATABASE_URL)")
        if name == "reset":
            a.add_argument("--to", type=int, default=0, help="position to resume after (default 0)")
    p.set_defaults(handler=cmd_relay)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """Import a legacy CSV export; exit 1 when any row could not be imported."""
    from service.entrypoints.import_command import run_import

    return asyncio.run(
        run_import(
            _database_url(args, settings),
            args.source,
            args.company,
            args.model or settings.openai_model,
            writer_lock_timeout=settings.writer_lock_timeout_seconds,
        )
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the schedulers, projection runners and admin API until SIGINT or SIGTERM."""
    from service.entrypoints.serve import serve

    relay = settings.nats_url is not None and not args.no_relay
    if args.no_schedulers and args.no_projections and args.no_api and not relay:
        print(
            "batchledger serve: --no-schedulers, --no-projections and --no-api together"
            " leave nothing to run (set NATS_URL to run the relay alone)",
            file=sys.stderr,
        )
        return 2
    if not args.no_schedulers and (
        settings.batch_creation_enabled or settings.batch_polling_enabled
    ):
        require_openai_key(settings)
    return asyncio.run(
        serve(
            settings,
            _database_url(args, settings),
            schedulers=not args.no_schedulers,
            projections=not args.no_projections,
            api=not args.no_api,
            relay=relay,
        )
    )


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    """Create, list or revoke admin API tokens."""
    from service.entrypoints.token_commands import run_tokens

    return asyncio.run(run_tokens(_database_url(args, settings), args))


def _duration(text: str) -> str:
    """An argparse type: a token lifetime like 90d, checked before any database is touched."""
    from service.adapters.tokens import TokenError, parse_duration

    try:
        parse_duration(text)
    except TokenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_tokens_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tokens",
        help="create, list or revoke admin API tokens",
        description="Tokens are 256-bit random secrets, printed once at creation and stored only "
        "as hashes. Roles: support (read) < admin (requeue, enqueue, cancel) < superadmin.",
    )
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = tsub.add_parser("create", help="create a token and print it once")
    c.add_argument(
        "--name",
        required=True,
        help="unique name, recorded as the actor of writes; never reused, even once revoked",
    )
    c.add_argument(
        "--role", required=True, choices=["support", "admin", "superadmin"], help="its role"
    )
    c.add_argument(
        "--company",
        action="append",
        metavar="ID",
        help="limit the token to this company (repeat for several; none: every company)",
    )
    c.add_argument(
        "--expires-in",
        type=_duration,
        metavar="DURATION",
        help="expire after this long: a number and s, m, h or d (e.g. 90d); default: never",
    )
    listing = tsub.add_parser("list", help="list tokens (names, roles, dates; never secrets)")
    r = tsub.add_parser("revoke", help="revoke a token by name, effective at once")
    r.add_argument("name")
    # On each action too, so it may come after the action's own options.
    for parser in (p, c, listing, r):
        parser.add_argument(
            "--database-url",
            default=argparse.SUPPRESS if parser is not p else None,
            help="PostgreSQL DSN (default: $DATABASE_URL)",
        )
    p.set_defaults(handler=cmd_tokens)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the whole system on the shipped sample."""
    from service.tools.demo import demo

    return asyncio.run(
        demo(settings, _database_url(args, settings), exit_when_done=args.exit_when_done)
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
        "after. Suites: append_batched, append_single, read_all, fanout, decide, rebuild,"
        " read_latency, pipeline, api, creator, console, relay (NATS_URL; docs/benchmarks.md says"
        " what each measures).",
    )
    p.add_argument("suites", nargs="*", help="suites to run (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--database-url", help="server DSN to create the scratch database on")
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser(
        "console-screenshots",
        help="save a PNG of every admin console page, on the demo's data",
        description="Runs the demo's sample through the pipeline in a scratch database (created "
        "on the server and dropped after), serves the console, signs in as a superadmin and "
        "saves each page with Debian's Chromium (/usr/bin/chromium) through Playwright: 1280 px "
        "wide, and the overview and requests also 390 px wide.",
    )
    p.add_argument("--out", default="docs/console", help="folder for the PNGs (docs/console)")
    p.add_argument("--database-url", help="server DSN to create the scratch database on")
    p.set_defaults(handler=cmd_console_screenshots)

    _add_emulator_parser(sub)
    _add_tokens_parser(sub)
    _add_relay_parser(sub)

    p = sub.add_parser(
        "demo",
        help="run everything on the shipped sample: emulator, pipeline, admin API",
        description="With no DATABASE_URL, starts an embedded PostgreSQL (BATCHLEDGER_DATA_DIR). "
        "Starts the emulator, imports service/tools/samples/sessions.csv, runs the pipeline to the "
        "end, prints the summary, an admin token and curl lines, and keeps serving until Ctrl-C.",
    )
    p.add_argument("--exit-when-done", action="store_true", help="exit after printing the result")
    p.add_argument("--database-url", help="PostgreSQL DSN (default: $DATABASE_URL, else embedded)")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser(
        "serve",
        help="run the batch creator, poller, projection runners and admin API",
        description="Any number of instances may share one database: each scheduler and each "
        "projection runs in one instance at a time. BATCH_CREATION_ENABLED and "
        "BATCH_POLLING_ENABLED switch the schedulers; the flags below switch whole parts.",
    )
    p.add_argument("--no-schedulers", action="store_true", help="do not run creator and poller")
    p.add_argument("--no-projections", action="store_true", help="do not run projection runners")
    p.add_argument("--no-api", action="store_true", help="do not serve the admin API")
    p.add_argument(
        "--no-relay", action="store_true", help="do not run the JetStream relay (on with NATS_URL)"
    )
    p.add_argument("--database-url", help="PostgreSQL DSN (default: $DATABASE_URL)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser(
        "import",
        help="import a legacy LiveDash CSV export: one analysis request per session",
        description="Reads the 16-column CSV (no header), fetches each transcript from its URL "
        "(http/https, file:// or a path relative to the CSV), and queues one analysis request "
        "per session. Re-importing queues nothing twice. Bad rows are reported with their line "
        "and reason; the exit status is 1 if any row failed.",
    )
    p.add_argument("source", help="CSV path or URL (e.g. service/tools/samples/sessions.csv)")
    p.add_argument("--company", required=True, help="company id the sessions belong to")
    p.add_argument("--model", help="model for these requests (default: $OPENAI_MODEL)")
    p.add_argument("--database-url", help="PostgreSQL DSN (default: $DATABASE_URL)")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser(
        "projections",
        help="rebuild projections from the event log, or show their status",
        description="rebuild: replay from position 0 into new tables while the live ones keep "
        "serving, then swap them in one transaction (safe to interrupt). status: checkpoint, "
        "lag and row counts of each projection.",
    )
    p.add_argument("action", choices=["rebuild", "status"])
    p.add_argument("names", nargs="*", help="projections to rebuild (default: all)")
    p.add_argument(
        "--max-rows",
        type=_positive_int,
        help="rows a projection folds in memory before writing them out"
        " (default 200,000, about 130 MB)",
    )
    p.add_argument("--database-url", help="PostgreSQL DSN (default: $DATABASE_URL)")
    p.set_defaults(handler=cmd_projections)

    p = sub.add_parser(
        "docs",
        help="generate docs/state-machines.md and docs/events.md from the declarations",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(handler=cmd_docs)
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
    try:
        return handler(args, settings)
    except ConfigError as exc:
        print(f"batchledger: configuration error: {exc}", file=sys.stderr)
        return 2
    except EmbeddedUnavailable as exc:
        print(f"batchledger: {exc}", file=sys.stderr)
        return 2
    except ConnectionRefusedError as exc:
        print(f"batchledger: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"batchledger: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
