"""Use cases of the poller: observe a batch at OpenAI, then ingest or release it when done."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from service import faults
from service.adapters.openai_gateway import OpenAIGateway, PermanentError, TransientError
from service.application.batching import send_cancel
from service.application.ingestion import Failure, Ingestion
from service.application.ledger import Actor, Ledger
from service.metrics import Metrics
from statemachine.batch import BATCHES, Batch
from statemachine.commands import ObserveStatus
from statemachine.errors import InvalidTransition
from statemachine.events import BatchError, BatchEvent, BatchStatusUnrecognized, RequestCounts
from statemachine.states import IN_FLIGHT, BatchState

FAILURE_LOG_SAMPLE = 100  # failed requests logged one by one per batch; a summary beyond
RUNNING_AT_OPENAI = frozenset({"validating", "in_progress", "finalizing"})


async def observe_status(
    ledger: Ledger, batch_id: str, observed: ObserveStatus, actor: Actor
) -> list[BatchEvent]:
    """Record what OpenAI reports about a batch; nothing when it shows nothing new.

    Retried on a conflict: an observation is a read at OpenAI, deciding it again is safe.
    """
    return await ledger.execute(BATCHES, batch_id, observed, actor)


class Polling:
    """Observes one batch at OpenAI and finishes it once OpenAI is done with it."""

    def __init__(
        self,
        ledger: Ledger,
        gateway: OpenAIGateway,
        ingestion: Ingestion,
        *,
        actor: Actor,
        log: Any,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.ledger = ledger
        self.gateway = gateway
        self.ingestion = ingestion
        self.actor = actor
        self.log = log
        self.last_poll_seconds = 0.0

    async def poll(self, bid: str) -> int:
        """Retrieve one batch; record a change; finish it when OpenAI is done with it."""
        batch = await self.ledger.load(BATCHES, bid)
        if batch is None or batch.state not in IN_FLIGHT or batch.openai_batch_id is None:
            return 0
        log = self.log.bind(
            batch_id=bid, company_id=batch.company_id, openai_batch_id=batch.openai_batch_id
        )
        started = time.perf_counter()
        try:
            seen = await self.gateway.retrieve(batch.openai_batch_id)
        except (TransientError, PermanentError) as exc:
            log.warning("batch.poll_failed", reason=str(exc)[:300])
            return 0
        self.last_poll_seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.poll_seconds.observe(self.last_poll_seconds)
        counts = seen.request_counts
        errors = (
            [
                BatchError(
                    code=e.code or "unknown", message=e.message or "", line=e.line, param=e.param
                )
                for e in (seen.errors.data or [])
            ]
            if seen.errors
            else []
        )
        observe = ObserveStatus(
            openai_status=seen.status,
            request_counts=RequestCounts(
                total=counts.total, completed=counts.completed, failed=counts.failed
            )
            if counts
            else RequestCounts(),
            output_file_id=seen.output_file_id,
            error_file_id=seen.error_file_id,
            errors=errors,
        )
        try:
            events = await observe_status(self.ledger, bid, observe, self.actor)
        except InvalidTransition as exc:
            log.warning("batch.observation_refused", status=seen.status, reason=str(exc))
            return 0
        if events:
            self._observed(log, batch, observe, events)
        if batch.state is BatchState.CANCELLING and seen.status in RUNNING_AT_OPENAI:
            # The cancel is recorded but OpenAI has not taken it (a crash or an outage
            # came in between): send it again; OpenAI treats a repeated cancel as one.
            await send_cancel(self.gateway, log, bid, batch.openai_batch_id)
        faults.point("poller.after_observe")
        return len(events) + await self.finish(bid)

    def _observed(
        self, log: Any, batch: Batch, observe: ObserveStatus, events: list[BatchEvent]
    ) -> None:
        """Log an observation at the level an operator needs: failures and oddities stand out."""
        counts = observe.request_counts
        fields = {
            "status": observe.openai_status,
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
            "seconds": round(self.last_poll_seconds, 3),
        }
        if isinstance(events[-1], BatchStatusUnrecognized):
            if self.metrics is not None:
                self.metrics.unrecognized_statuses.labels(status=observe.openai_status).inc()
            log.warning("batch.status_unrecognized", state=batch.state.value, **fields)
        elif observe.openai_status == "failed":
            errors = [e.describe() for e in observe.errors[:5]]
            log.error("batch.failed_at_openai", errors=errors, **fields)
        elif observe.openai_status == "expired":
            log.warning("batch.expired", **fields)
        else:
            log.info("batch.observed", **fields)

    async def finish(self, bid: str) -> int:
        """Ingest a completed, expired or cancelled batch; release a failed one."""
        batch = await self.ledger.load(BATCHES, bid)
        company = batch.company_id if batch is not None else None
        log = self.log.bind(batch_id=bid, company_id=company)
        try:
            result = await self.ingestion.ingest(bid)
            if result is not None:
                if self.metrics is not None:
                    self.metrics.ingest_seconds.observe(result.seconds)
                log.info(
                    "batch.ingested",
                    completed=result.completed,
                    failed=result.failed,
                    missing=result.missing,
                    rejected_lines=len(result.rejected),
                    seconds=round(result.seconds, 3),
                )
                log_failures(log, result.failures)
                return 1
            released = await self.ingestion.release(bid)
        except (TransientError, PermanentError) as exc:
            log.warning("batch.ingest_deferred", reason=str(exc)[:300])
            return 0
        if released is not None:
            requeued = sum(f.requeued for f in released)
            log.warning("batch.released", requeued=requeued, failed=len(released) - requeued)
            log_failures(log, released)
            return 1
        return 0


def log_failures(log: Any, failures: list[Failure], sample: int = FAILURE_LOG_SAMPLE) -> None:
    """One line per failed request (the first `sample`), and a summary line beyond them."""
    for f in failures[:sample]:
        line = log.warning if f.requeued else log.error
        line(
            "request.failed",
            request_id=f.request_id,
            code=f.code,
            message=f.message[:300],
            requeued=f.requeued,
        )
    if len(failures) > sample:
        codes = Counter(f.code for f in failures)
        final = any(not f.requeued for f in failures)
        (log.error if final else log.warning)(
            "batch.failures_summarized",
            failed=len(failures),
            logged=sample,
            requeued=sum(f.requeued for f in failures),
            codes=dict(codes.most_common(10)),
        )
