"""Domain suite: deciding 50,000 request transitions."""

from __future__ import annotations

import time

from service.tools.bench.core import Bench, Result, suite, with_baseline


@suite("decide")
async def decide(b: Bench) -> list[Result]:
    """Milliseconds to decide 50,000 request transitions, and rate vs a Machine per request."""
    from transitions import Machine

    from statemachine.commands import AssignToBatch, FailRequest
    from statemachine.request import REQUEST_MACHINE, Request, decide_many, evolve
    from statemachine.states import RequestState

    n = 50_000
    pending = [
        Request(request_id=f"r{i}", company_id="acme", session_id=f"s{i}", model="m")
        for i in range(n)
    ]
    t = time.perf_counter()
    assigned = decide_many(pending, AssignToBatch(batch_id="b1"))
    assign_ms = (time.perf_counter() - t) * 1000
    in_batch = [evolve(r, ev[0]) for r, ev in zip(pending, assigned, strict=True)]
    fail = FailRequest(batch_id="b1", code="expired", message="m", retryable=True, max_attempts=3)
    t = time.perf_counter()
    decide_many(in_batch, fail)
    fail_ms = (time.perf_counter() - t) * 1000
    sample = 2_000  # a Machine per request is what DESIGN §2 rules out; sampled, it is slow
    t = time.perf_counter()
    for _ in range(sample):
        model = type("M", (), {})()
        Machine(
            model=model,
            states=RequestState,
            transitions=[dict(x) for x in REQUEST_MACHINE.transitions],
            initial=RequestState.PENDING_BATCHING,
            auto_transitions=False,
        )
        model.assign()
    per_machine = sample / (time.perf_counter() - t)
    ours = n / (assign_ms / 1000)
    return [
        Result("decide_assign_50k", assign_ms, "ms"),
        Result("decide_fail_retry_50k", fail_ms, "ms"),
        with_baseline("decide_rate", ours, "decisions/s", "machine_per_request", per_machine),
    ]
