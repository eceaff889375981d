"""Token buckets per token, per client address and per presented token id; the rate-limited
log of failed authentications; and the client address itself."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from service.logs import get_logger


class RateLimiter:
    """`per_minute` events per key, refilled continuously; answers how long to wait.

    At most `max_keys` buckets are kept: beyond that the least recently used one is
    forgotten (a forgotten bucket starts full again). Every take or check of a key makes it
    the most recent, so a key that keeps being tried stays locked however many new keys
    (addresses, token ids) a flood brings; memory stays bounded.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = 100_000,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, now: float) -> float:
        entry = self.buckets.get(key)
        if entry is None:
            return self.capacity
        self.buckets.move_to_end(key)
        tokens, at = entry
        return min(self.capacity, tokens + (now - at) * self.rate)

    def _wait(self, tokens: float) -> int:
        return max(1, math.ceil((1 - tokens) / self.rate))

    def take(self, key: str) -> int:
        """0 when allowed (and counted); else the seconds to wait before the next try."""
        now = self.clock()
        tokens = self._level(key, now)
        allowed = tokens >= 1
        self.buckets[key] = (tokens - 1 if allowed else tokens, now)  # a new key goes last
        while len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        return 0 if allowed else self._wait(tokens)

    def blocked(self, key: str) -> int:
        """Seconds to wait if the bucket is empty, without counting anything."""
        tokens = self._level(key, self.clock())
        return 0 if tokens >= 1 else self._wait(tokens)


class RefusedCredentials:
    """Credentials that failed verification, as SHA-256 digests (LRU, bounded, expiring).

    A credential that failed once can never become valid: token ids and secrets are random
    and never reused, and revocation and expiry are final. So answering a remembered one
    without asking the database never refuses a valid token. Entries still expire after
    `ttl_seconds`, so that a database restored to before a revocation is believed again.
    """

    def __init__(
        self,
        max_keys: int = 100_000,
        ttl_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_keys = max_keys
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._refused_at: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def add(self, token: str) -> None:
        digest = self._digest(token)
        self._refused_at[digest] = self.clock()
        self._refused_at.move_to_end(digest)
        while len(self._refused_at) > self.max_keys:
            self._refused_at.popitem(last=False)

    def __contains__(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        digest = self._digest(token)
        at = self._refused_at.get(digest)
        if at is None:
            return False
        if self.clock() - at >= self.ttl_seconds:
            del self._refused_at[digest]
            return False
        self._refused_at.move_to_end(digest)
        return True

    def __len__(self) -> int:
        return len(self._refused_at)


class AuthLog:
    """401s, 403s and lockouts, logged so that a flood cannot fill the disk.

    At most `per_key_per_minute` lines per (event, address) and `total_per_minute` in all;
    what is left out is counted and reported as one `api.auth_failures_suppressed` line
    (count, per event, the busiest addresses) at the first authentication event at least
    `summary_seconds` after the previous summary, or when `summarise` is called.
    The caller passes only safe fields: address, token id (public), route, method.
    """

    TOP = 5

    def __init__(
        self,
        log: Any = None,
        *,
        per_key_per_minute: int = 10,
        total_per_minute: int = 300,
        summary_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.log = log if log is not None else get_logger("api")
        self.clock = clock
        self.summary_seconds = summary_seconds
        self.max_keys = max_keys
        self._per_key = RateLimiter(per_key_per_minute, clock, max_keys=max_keys)
        self._total = RateLimiter(total_per_minute, clock, max_keys=1)
        self._since = clock()
        self._by_event: Counter[str] = Counter()
        self._by_address: Counter[str] = Counter()

    def emit(self, event: str, address: str, **fields: Any) -> None:
        """Log `event` unless over the caps, in which case it is only counted."""
        if self.clock() - self._since >= self.summary_seconds:
            self.summarise()
        if self._total.blocked("all") == 0 and self._per_key.take(f"{event} {address}") == 0:
            self._total.take("all")
            self.log.warning(event, address=address, **fields)
            return
        self._by_event[event] += 1
        if address in self._by_address or len(self._by_address) < self.max_keys:
            self._by_address[address] += 1
        else:
            self._by_address["(other)"] += 1

    def summarise(self) -> None:
        """Report what was left out since the last summary, if anything."""
        self._since = self.clock()
        if not self._by_event:
            return
        self.log.warning(
            "api.auth_failures_suppressed",
            count=sum(self._by_event.values()),
            by_event=dict(self._by_event),
            addresses=len(self._by_address),
            top_addresses=dict(self._by_address.most_common(self.TOP)),
        )
        self._by_event.clear()
        self._by_address.clear()


def parse_networks(raw: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """API_TRUSTED_PROXIES: comma-separated addresses or CIDR blocks."""
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()
    ]


def client_address(
    request: web.Request, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The direct peer, or behind trusted proxies the nearest untrusted X-Forwarded-For hop."""
    peer = request.remote or "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return peer


def _trusted(address: str, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
