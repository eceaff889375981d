"""What a benchmark suite is: results with same-run baselines, sizes, and the registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from eventstore import EventStore


class Result(msgspec.Struct, frozen=True):
    """One figure; `ratio` is value / baseline_value when a baseline was measured."""

    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None


def with_baseline(name: str, value: float, unit: str, baseline: str, base_value: float) -> Result:
    """A result compared with its baseline."""
    return Result(
        name, value, unit, baseline, base_value, value / base_value if base_value else None
    )


class Bench:
    """A scratch database for one suite and its sizes."""

    def __init__(self, store: EventStore, quick: bool) -> None:
        self.store = store
        self.quick = quick

    def size(self, full: int, quick: int) -> int:
        """The full or --quick size."""
        return quick if self.quick else full


Suite = Callable[[Bench], Awaitable[list[Result]]]
SUITES: dict[str, Suite] = {}


def suite(name: str) -> Callable[[Suite], Suite]:
    """Register a suite under `name`."""

    def register(fn: Suite) -> Suite:
        SUITES[name] = fn
        return fn

    return register


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
