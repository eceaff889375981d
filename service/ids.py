"""Identifiers: time-ordered event and batch ids, deterministic request ids."""

from __future__ import annotations

import os
import time
import uuid

_REQUEST_NAMESPACE = uuid.UUID("6f1c2a7e-3b5d-4e8f-9a10-b2c3d4e5f607")


def uuid7() -> uuid.UUID:
    """A UUIDv7: millisecond time prefix, so ids sort by creation and index inserts stay local."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80  # unix_ts_ms
    value |= 0x7 << 76  # version
    value |= ((rand >> 64) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)


def request_id(company_id: str, session_id: str) -> str:
    """The id of a company's session analysis: the same session always gets the same id."""
    return uuid.uuid5(_REQUEST_NAMESPACE, f"{company_id}\x1f{session_id}").hex


def batch_id() -> str:
    """A new batch id, time-ordered."""
    return uuid7().hex
