"""The composition root of the pipeline: store, OpenAI gateway, schedulers, projection runners."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import openai

from eventstore import EventStore
from projections import queries
from projections.registry import all_projections
from projections.runner import ProjectionRunner
from service import actors
from service.adapters.openai_gateway import OpenAIGateway, make_client
from service.application.app import Application
from service.application.batching import Batching
from service.application.ingestion import Ingestion
from service.application.ledger import Actor, Ledger
from service.application.polling import Polling
from service.config import Settings
from service.entrypoints.isolation import Backoff, Isolation
from service.entrypoints.jobs import CreatorPass, PollerPass
from service.entrypoints.relay import Relay, RelayConfig
from service.entrypoints.scheduler import Scheduler
from service.ids import uuid7
from service.logs import get_logger
from service.metrics import Metrics
from statemachine.states import UNFINISHED

CREATOR = Actor(actors.BATCH_CREATOR)
POLLER = Actor(actors.BATCH_POLLER)


def utc_now() -> datetime:
    """The clock of the running service."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Everything the schedulers need, wired once."""

    settings: Settings
    store: EventStore
    client: openai.AsyncOpenAI
    app: Application = field(init=False)
    gateway: OpenAIGateway = field(init=False)
    creator: CreatorPass = field(init=False)
    poller: PollerPass = field(init=False)
    runners: list[ProjectionRunner] = field(init=False)
    metrics: Metrics = field(init=False)
    relay: Relay | None = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        log = get_logger("pipeline")
        self.metrics = Metrics()
        ledger = Ledger(self.store, clock=utc_now, new_id=uuid7)
        self.gateway = OpenAIGateway(self.client)
        self.metrics.error_source = self.gateway.errors
        ingestion = Ingestion(
            ledger,
            self.gateway,
            max_attempts=s.request_max_attempts,
            prices=s.model_prices,
            actor=POLLER,
        )
        self.app = Application(
            ledger=ledger,
            batching=Batching(
                ledger,
                self.gateway,
                max_requests=s.batch_max_requests,
                max_bytes=s.batch_max_bytes,
                page_size=s.creator_page_size,
                actor=CREATOR,
                log=log.bind(scheduler="batch-creator"),
            ),
            ingestion=ingestion,
            polling=Polling(
                ledger,
                self.gateway,
                ingestion,
                actor=POLLER,
                log=log.bind(scheduler="batch-poller"),
                metrics=self.metrics,
            ),
        )
        self.creator = CreatorPass(
            self.store.pool, self.app.batching, self._isolation(log.bind(scheduler="batch-creator"))
        )
        self.poller = PollerPass(
            self.store.pool, self.app.polling, self._isolation(log.bind(scheduler="batch-poller"))
        )
        self.runners = [ProjectionRunner(self.store, p) for p in all_projections().values()]
        relay = RelayConfig.from_settings(s)
        self.relay = None if relay is None else Relay(self.store, relay)

    def _isolation(self, log: Any) -> Isolation:
        """Backoff and failure accounting for one scheduler's items."""
        s, failures = self.settings, self.metrics.item_failures
        return Isolation(
            Backoff(s.scheduler_backoff_seconds, s.scheduler_backoff_max_seconds),
            log,
            on_failure=lambda step: failures.labels(step=step).inc(),
        )

    @classmethod
    async def open(
        cls, settings: Settings, dsn: str, client: openai.AsyncOpenAI | None = None
    ) -> Runtime:
        """Open the store and the OpenAI client from settings."""
        store = await EventStore.open(
            dsn, max_size=10, writer_lock_timeout=settings.writer_lock_timeout_seconds
        )
        client = client or make_client(
            settings.openai_api_key,
            settings.openai_base_url,
            settings.openai_timeout_seconds,
            settings.openai_max_retries,
        )
        return cls(settings, store, client)

    async def close(self) -> None:
        """Close the client and the store."""
        await self.client.close()
        await self.store.close()

    async def catch_up(self) -> None:
        """Bring every projection to the head."""
        for runner in self.runners:
            await runner.catch_up()

    def schedulers(self) -> list[Scheduler]:
        """The enabled schedulers."""
        s, log = self.settings, get_logger("scheduler")
        out = []
        if s.batch_creation_enabled:
            out.append(
                Scheduler(
                    "batch-creator",
                    self.creator.run_once,
                    s.batch_creation_interval_seconds,
                    self.store.dsn,
                    log,
                )
            )
        if s.batch_polling_enabled:
            out.append(
                Scheduler(
                    "batch-poller",
                    self.poller.run_once,
                    s.batch_polling_interval_seconds,
                    self.store.dsn,
                    log,
                )
            )
        return out

    async def idle(self) -> bool:
        """No request waits and no batch is unfinished (projections caught up first)."""
        await self.catch_up()
        counts = await queries.summary(self.store.pool)
        if counts.pending_batching or counts.batching_in_progress:
            return False
        return not await queries.batches_in(self.store.pool, UNFINISHED)

    async def run_until_idle(self, pause: float = 0.02) -> None:
        """Run creator and poller in turns until everything has an outcome (tests, demo, bench).

        Callers bound it with `asyncio.timeout`.
        """
        while not await self.idle():
            did = await self.creator.run_once()
            await self.catch_up()
            did += await self.poller.run_once()
            if not did:
                await asyncio.sleep(pause)
