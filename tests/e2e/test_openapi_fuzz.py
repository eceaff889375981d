"""schemathesis against a live `batchledger serve` with its default limits: every check of
the installed schemathesis, the stateless phases (examples, coverage, fuzzing) on every
operation, and the stateful phase following the document's OpenAPI links.

What the run may not call a failure is listed in `_documented`, each with the reason the
document gives; anything else a check reports fails the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import CHECKS, load_all_checks, max_response_time
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure
from schemathesis.openapi.checks import (
    IgnoredAuth,
    MissingHeaderNotRejected,
    RejectedPositiveData,
)

from service.adapters.dsn import with_database
from service.adapters.tokens import Role, create_token
from service.entrypoints.api.app import MAX_BODY_BYTES
from service.entrypoints.api.openapi import document
from service.entrypoints.api.schemas import EnqueueBody
from service.net import free_port
from service.transcripts import TranscriptError, parse_transcript, to_message, utc_time
from tests.e2e.live import start, start_emulator, stop, wait_http
from tests.pgharness import Server

BASE = "/api/admin/legacy"
STATEFUL_SCENARIOS = 60
STREAM = f"{BASE}/events/stream"

load_all_checks()
ALL_CHECKS = [*CHECKS.get_all(), max_response_time]
"""Every check schemathesis has: the registered ones (from not_a_server_error to
object_level_authorization) and max_response_time (10 s)."""

CONFIG = SchemathesisConfig.from_dict(
    {
        "request-timeout": 5,
        "checks": {
            # 413 refuses a body over the documented 1 MiB before reading it: a rejection.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "413",
                    "415",
                    "422",
                    "428",
                    "429",
                    "5xx",
                ]
            },
        },
        "phases": {
            "stateful": {
                # Only the document's own links: inferred ones could chain GET /tokens into
                # a revocation of the run's own token.
                "inference": {"algorithms": []},
                "max-steps": 8,
            },
        },
        "operations": [
            {
                # A stream never ends: read a few events, or stop after a quiet second.
                "include-path": STREAM,
                "request-timeout": 1,
                "max-stream-events": 3,
            }
        ],
    }
)
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)

DROPPED: Counter[str] = Counter()
"""Check failures `_documented` dropped, by reason (printed at the end of the module)."""


def _error_code(response: Any) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except Exception:
        return None


def _refused_by_turn_rules(body: object) -> bool:
    """Whether the service's transcript rules (service/transcripts.py, stated in the
    descriptions of `transcript` and MessageIn) refuse a schema-valid enqueue body."""
    if not isinstance(body, dict):
        return False
    try:
        msgspec.json.decode(json.dumps(body).encode(), type=EnqueueBody)
    except msgspec.DecodeError:
        return False  # refused by its shape, which the schema allows: a real failure
    now = datetime.now(UTC)
    try:
        if isinstance(body.get("transcript"), str):
            for message in parse_transcript(body["transcript"]):
                utc_time(message.at, now)
        for m in body.get("messages") or []:
            at = None if m.get("at") is None else msgspec.convert(m["at"], datetime)
            to_message(m["role"], m["content"], at, now)
    except TranscriptError:
        return True
    return False


LIVE_DSN: list[str] = []
"""The live serve's database, set by the fixture: the filter asks it for the log's head."""


def _head() -> int:
    async def ask() -> int:
        conn = await asyncpg.connect(LIVE_DSN[0])
        try:
            return int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(ask())


def _position_sent(case: Any) -> int | None:
    """The position a feed or stream request resumes after (Last-Event-ID wins)."""
    for value in ((case.headers or {}).get("Last-Event-ID"), (case.query or {}).get("after")):
        if value is not None and str(value).isascii() and str(value).isdigit():
            return int(value)
    return None


def _documented(failure: Failure, case: Any, response: Any) -> str | None:
    """Why a check's failure is an answer the document gives, or None for a real failure."""
    if isinstance(failure, IgnoredAuth) and "got `429 " in failure.message:
        # The probe without (or with a wrong) credential came after this address spent its
        # failed-auth budget (API_AUTH_FAILURES_PER_MINUTE, 20): refused with the documented
        # 429 instead of 401. Refused all the same: auth is enforced.
        return "lockout of probes without a valid token (429)"
    if isinstance(failure, MissingHeaderNotRejected) and failure.status_code == 429:
        return "lockout of probes without a valid token (429)"
    if isinstance(failure, RejectedPositiveData):
        code = _error_code(response)
        if code == "invalid_cursor":
            # A cursor is valid only as this API issued it, for the filters it was issued
            # for (it is signed): the stateless phases invent them, the links carry real ones.
            return "cursor not issued by the API for these filters (400 invalid_cursor)"
        if response.status_code == 413 and len(response.request.body or b"") > MAX_BODY_BYTES:
            return "schema-valid body over the documented whole-body limit (413)"
        if case.operation.path in (f"{BASE}/events", STREAM) and code in (
            "invalid_parameter",
            "invalid_last_event_id",
        ):
            # Positions past the newest event were never given out: a 400, so that a client
            # does not wait forever. JSON Schema cannot bound a value by the log's head.
            sent = _position_sent(case)
            if sent is not None and sent > _head():
                return "position past the newest event (400)"
        if (
            case.operation.method.upper() == "POST"
            and case.operation.path == f"{BASE}/requests"
            and code in ("invalid_body", "invalid_transcript")
            and _refused_by_turn_rules(case.body)
        ):
            return "transcript or message breaking the documented turn rules (400)"
    return None


ANSWERED: Counter[int] = Counter()
"""Statuses of the calls the phases made (not the auth probes), printed at the end."""


@schema.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    ANSWERED[response.status_code] += 1


@schema.hook
def filter_failure(context: Any, failure: Failure, case: Any, response: Any) -> bool:
    reason = _documented(failure, case, response)
    if reason is not None:
        DROPPED[reason] += 1
    return reason is None


@dataclass
class Live:
    url: str
    tokens: dict[str, str]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


async def _prepare(dsn: str, admin_dsn: str, name: str, template: str) -> dict[str, str]:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        # One token per phase, each with the default per-token limit of its own.
        return {
            phase: await create_token(conn, f"fuzzer-{phase}", Role.superadmin)
            for phase in ("stateless", "stateful")
        }
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def live_api(pg_server: Server, template_db: str) -> Iterator[Live]:
    name = f"bl_fuzz_api_{os.getpid()}"  # two runs on one server do not share it
    dsn = with_database(pg_server.dsn, name)
    tokens = asyncio.run(_prepare(dsn, pg_server.dsn, name, template_db))
    LIVE_DSN[:] = [dsn]
    emulator, emulator_url = start_emulator()
    port = free_port()
    serve = start(
        ["serve"],
        {  # the default limits: API_RATE_LIMIT_PER_MINUTE, API_AUTH_FAILURES_PER_MINUTE
            "DATABASE_URL": dsn,
            "OPENAI_BASE_URL": f"{emulator_url}/v1",
            "OPENAI_API_KEY": "sk-test",
            "PORT": str(port),
            "BATCH_CREATION_INTERVAL_SECONDS": "0",
            "BATCH_POLLING_INTERVAL_SECONDS": "0",
            "LOG_LEVEL": "ERROR",
        },
    )
    started = time.monotonic()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield Live(f"http://127.0.0.1:{port}", tokens)
    finally:
        stop(serve)
        stop(emulator)
        asyncio.run(_drop(pg_server.dsn, name))
        print(
            f"\nfuzz: {time.monotonic() - started:.0f} s, statuses {sorted(ANSWERED.items())};"
            f" dropped as documented: {dict(DROPPED)}"
        )


async def _drop(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


def _call(case: Any, live: Live) -> None:
    case.call_and_validate(base_url=live.url, headers=live.headers("stateless"), checks=ALL_CHECKS)


@pytest.mark.slow
@schema.exclude(path=STREAM).parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_live_api_answers_every_case_as_its_document_says(case, live_api: Live) -> None:  # type: ignore[no-untyped-def]
    _call(case, live_api)


@pytest.mark.slow
@schema.exclude(lambda ctx: ctx.operation.path != STREAM).parametrize()  # include() ORs
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_live_event_stream_answers_every_case_as_its_document_says(case, live_api: Live) -> None:  # type: ignore[no-untyped-def]
    # Fewer examples: a valid request opens a stream, read until a quiet second passes.
    _call(case, live_api)


def _seed(live: Live, headers: dict[str, str]) -> None:
    """Requests to find: the document's own examples of POST /requests, a few times over
    (random bodies seldom pass the turn rules, so chains would seldom start from one)."""
    examples = document()["paths"][f"{BASE}/requests"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    for n in range(3):
        for example in examples.values():
            body = {**example["value"], "sessionId": f"{example['value']['sessionId']}-{n}"}
            request = urllib.request.Request(
                f"{live.url}{BASE}/requests",
                data=json.dumps(body).encode(),
                headers={**headers, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 201


@pytest.mark.slow
def test_live_api_follows_its_links_as_its_document_says(live_api: Live) -> None:
    headers = live_api.headers("stateful")
    _seed(live_api, headers)
    scenarios = 0
    answered: Counter[tuple[str, int]] = Counter()

    class Chains(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            nonlocal scenarios
            scenarios += 1

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            answered[case.operation.label, response.status_code] += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": live_api.url, "headers": headers}

        def validate_response(
            self,
            response: Any,
            case: Any,
            additional_checks: Any = None,
            **kwargs: Any,
        ) -> None:
            case.validate_response(
                response,
                checks=ALL_CHECKS,
                headers=headers,
                transport_kwargs=kwargs,
                recorder=self.recorder,
            )

    # Hypothesis replays choice sequences it has seen; against a live API whose data grows
    # as the run goes, a replay can take another branch (FlakyStrategyDefinition). That is
    # the API's state, not a failure (schemathesis' own runner treats it so): start again.
    # A check failure is raised as itself, or as a FlakyFailure holding it, and fails here.
    restarts = 0
    while scenarios < STATEFUL_SCENARIOS and restarts < 5:
        try:
            Chains.run(
                settings=settings(
                    max_examples=STATEFUL_SCENARIOS - scenarios,
                    stateful_step_count=8,
                    phases=[Phase.generate],
                    database=None,
                    # The same chains on every run: CI must not turn red by chance. (A random
                    # run found the missing X-Request-Id on malformed requests; run one by
                    # hand with derandomize=False when changing the edge or the document.)
                    derandomize=True,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
            )
            break
        except FlakyStrategyDefinition:
            restarts += 1
    linked = {k: v for k, v in answered.items() if "{id}" in k[0] and k[1] < 300}
    print(
        f"\nstateful: {scenarios} scenarios, {answered.total()} calls, {restarts} restarts;"
        f" reached through links: {linked}"
    )
    assert scenarios >= STATEFUL_SCENARIOS // 2
    # An existing id is found only through a link (a generated one names nothing): some
    # chain got from a created or listed entity to its own route.
    assert linked, sorted(answered.items())
