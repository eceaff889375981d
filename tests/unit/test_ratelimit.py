"""The in-memory token buckets: a fake clock, no sleeps; LRU eviction under a flood of keys."""

from __future__ import annotations

from service.entrypoints.api.ratelimit import AuthLog, RateLimiter, RefusedCredentials


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_empties_answers_how_long_to_wait_and_refills_with_time() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock)
    assert [limiter.take("a"), limiter.take("a")] == [0, 0]
    assert limiter.take("a") == 30, "one token every 30 s at 2 a minute"
    assert limiter.blocked("a") == 30
    assert limiter.take("b") == 0, "another key has its own bucket"
    clock.now += 30
    assert limiter.blocked("a") == 0
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0


def test_blocked_counts_nothing_and_remembers_no_unknown_key() -> None:
    limiter = RateLimiter(1, Clock())
    assert limiter.blocked("a") == 0
    assert limiter.blocked("a") == 0
    assert len(limiter.buckets) == 0
    assert limiter.take("a") == 0


def test_a_locked_key_in_use_survives_a_flood_of_new_keys_and_memory_stays_bounded() -> None:
    limiter = RateLimiter(1, Clock(), max_keys=3)
    limiter.take("A")
    assert limiter.blocked("A") > 0
    for i in range(10):
        assert limiter.take(f"new-{i}") == 0, "new keys pass"
        assert limiter.blocked("A") > 0, f"A unlocked by a flood of {i + 1} new keys"
        assert len(limiter.buckets) <= 3
    limiter.take("idle")
    for i in range(3):
        limiter.take(f"later-{i}")
    assert "idle" not in limiter.buckets, "the least recently used key is the one evicted"


def test_the_default_bound_keeps_a_lockout_through_more_new_keys_than_it_holds() -> None:
    # The old limiter cleared its whole table at 100,000 keys: a flood of new addresses
    # unlocked every locked one.
    limiter = RateLimiter(1, Clock())
    limiter.take("attacker")
    for i in range(150_000):
        limiter.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
        if i % 10_000 == 0:
            assert limiter.blocked("attacker") > 0  # the attacker keeps trying, so stays recent
    assert limiter.blocked("attacker") > 0
    assert len(limiter.buckets) <= 100_000


def test_refused_credentials_are_remembered_bounded_and_forgotten_after_their_ttl() -> None:
    clock = Clock()
    refused = RefusedCredentials(max_keys=2, ttl_seconds=600, clock=clock)
    refused.add("bl_0123456789abcdef_wrong")
    assert "bl_0123456789abcdef_wrong" in refused
    assert "bl_0123456789abcdef_other" not in refused
    refused.add("b")
    assert "bl_0123456789abcdef_wrong" in refused  # used: now the most recent
    refused.add("c")
    assert "b" not in refused, "the least recently used is evicted"
    assert len(refused) == 2
    clock.now += 600
    assert "c" not in refused
    assert len(refused) == 1


def test_auth_log_caps_lines_per_event_and_address_and_summarises_the_rest() -> None:
    class Log:
        def __init__(self) -> None:
            self.lines: list[tuple[str, dict[str, object]]] = []

        def warning(self, event: str, **fields: object) -> None:
            self.lines.append((event, fields))

    clock, log = Clock(), Log()
    auth_log = AuthLog(log, per_key_per_minute=2, total_per_minute=3, clock=clock)
    for _ in range(4):
        auth_log.emit("api.auth_failed", "192.0.2.1", token_id=None)
    auth_log.emit("api.forbidden", "192.0.2.1", token_id="0123456789abcdef")
    auth_log.emit("api.auth_failed", "192.0.2.2", token_id=None)  # over the total cap
    assert [e for e, _ in log.lines] == ["api.auth_failed"] * 2 + ["api.forbidden"]
    clock.now += 30
    auth_log.emit("api.auth_failed", "192.0.2.3", token_id=None)
    assert len(log.lines) == 4, "the caps refill continuously; no summary before a minute"
    clock.now += 30
    auth_log.emit("api.auth_failed", "192.0.2.3", token_id=None)
    event, summary = log.lines[4]
    assert event == "api.auth_failures_suppressed"
    assert summary == {
        "count": 3,
        "by_event": {"api.auth_failed": 3},
        "addresses": 2,
        "top_addresses": {"192.0.2.1": 2, "192.0.2.2": 1},
    }
    assert log.lines[5][0] == "api.auth_failed"
    auth_log.summarise()
    assert len(log.lines) == 6, "nothing suppressed since: no summary"
