"""Opaque, signed keyset cursors: a tampered or foreign cursor is a 400, never a query."""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec

from service.entrypoints.api.errors import ApiError


class CursorData(msgspec.Struct, array_like=True):
    """Where a page ended and the filters it was for."""

    seq: int
    scope: str


class Cursors:
    """Signs and checks cursors with a key shared by every API instance."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:16]

    def encode(self, seq: int | None, scope: str) -> str | None:
        """A cursor continuing after `seq` for the filters named by `scope` (None: last page)."""
        if seq is None:
            return None
        payload = msgspec.json.encode(CursorData(seq, scope))
        return base64.urlsafe_b64encode(self._mac(payload) + payload).decode().rstrip("=")

    def decode(self, cursor: str | None, scope: str) -> int | None:
        """The seq of a genuine cursor made for the same filters (None: the first page)."""
        if cursor is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            mac, payload = raw[:16], raw[16:]
            if not hmac.compare_digest(mac, self._mac(payload)):
                raise ValueError("signature")
            data = msgspec.json.decode(payload, type=CursorData)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            raise ApiError(400, "invalid_cursor", "the cursor is not one this API issued") from None
        if data.scope != scope:
            raise ApiError(400, "invalid_cursor", "the cursor was issued for other filters")
        return data.seq
