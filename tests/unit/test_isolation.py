"""Per-item isolation of the schedulers' passes: backoff, and which failures stop a pass."""

from __future__ import annotations

import pytest

from eventstore import WriterBusy
from service.entrypoints.isolation import Backoff, Isolation
from tests.unit.test_use_cases import RecordingLog


def test_backoff_doubles_per_failure_in_a_row_up_to_its_maximum_and_forgets_on_success() -> None:
    now = [100.0]
    backoff = Backoff(base_seconds=5, max_seconds=30, clock=lambda: now[0])
    assert [backoff.failed("b1") for _ in range(5)] == [5, 10, 20, 30, 30]
    assert not backoff.ready("b1")
    assert backoff.ready("b2")
    now[0] += 30
    assert backoff.ready("b1")
    backoff.succeeded("b1")
    assert backoff.failures("b1") == 0
    assert backoff.failed("b1") == 5


async def test_an_item_that_raises_is_logged_counted_and_skipped_until_its_backoff_ends() -> None:
    now, counted, log = [0.0], [], RecordingLog()
    isolation = Isolation(Backoff(clock=lambda: now[0]), log, on_failure=counted.append)
    calls = []

    async def odd() -> int:
        calls.append(1)
        raise ValueError("an odd answer")

    assert await isolation.run("batch.poll", "b1", odd, batch_id="b1") == 0
    assert await isolation.run("batch.poll", "b1", odd, batch_id="b1") == 0  # backed off
    assert (len(calls), counted, log.records) == (1, ["batch.poll"], ["batch.poll.crashed"])
    now[0] = 1.0
    assert await isolation.run("batch.poll", "b1", odd, batch_id="b1") == 0
    assert len(calls) == 2


@pytest.mark.parametrize(
    "failure", [WriterBusy(0.2), OSError("connection refused"), ConnectionResetError()]
)
async def test_a_failure_of_the_service_itself_stops_the_pass_instead_of_one_item(
    failure: Exception,
) -> None:
    isolation = Isolation(Backoff(), RecordingLog())

    async def work() -> int:
        raise failure

    with pytest.raises(type(failure)):
        await isolation.run("batch.poll", "b1", work)
    assert isolation.backoff.ready("b1"), "not an item's failure: nothing to back off"


def test_backoff_forgets_items_whose_wait_is_long_over_so_it_stays_bounded() -> None:
    now = [0.0]
    backoff = Backoff(base_seconds=1, max_seconds=10, clock=lambda: now[0])
    for i in range(100):
        backoff.failed(f"ended-elsewhere-{i}")
    now[0] = 100.0
    backoff.failed("b1")
    assert backoff.failures("ended-elsewhere-0") == 0
    assert backoff.failures("b1") == 1
