"""Parsing LiveDash transcripts: `[DD.MM.YYYY HH:MM:SS] Role: text`, continuation lines included."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

_LINE = re.compile(r"^\[(\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2})\]\s*([^:]{1,40}):\s?(.*)$")
TIME_FORMAT = "%d.%m.%Y %H:%M:%S"


class Message(msgspec.Struct, frozen=True):
    """One message of a session."""

    at: datetime
    role: str
    text: str


class TranscriptError(ValueError):
    """The text is not a transcript in the LiveDash format."""


def parse_time(value: str) -> datetime:
    """A LiveDash `DD.MM.YYYY HH:MM:SS` time."""
    return datetime.strptime(value.strip(), TIME_FORMAT)


def parse_transcript(text: str) -> list[Message]:
    """The messages of a transcript; lines without a header continue the previous message."""
    messages: list[Message] = []
    # A byte-order mark (Windows editors save one) is not text; NUL characters carry
    # nothing and PostgreSQL cannot store them: drop both.
    clean = text.removeprefix("\ufeff").replace("\x00", "").replace("\r\n", "\n")
    for raw in clean.split("\n"):
        match = _LINE.match(raw)
        if match:
            try:
                at = parse_time(match.group(1))
            except ValueError as exc:
                raise TranscriptError(f"bad time {match.group(1)!r}: {exc}") from None
            messages.append(Message(at, match.group(2).strip(), match.group(3).rstrip()))
        elif messages:
            last = messages[-1]
            messages[-1] = Message(last.at, last.role, f"{last.text}\n{raw.rstrip()}".rstrip())
        elif raw.strip():
            raise TranscriptError(f"text before the first message: {raw[:60]!r}")
    if not messages:
        raise TranscriptError("no messages")
    return messages


def render(messages: list[Message]) -> str:
    """The canonical transcript text sent to the model."""
    return "\n".join(f"[{m.at.strftime(TIME_FORMAT)}] {m.role}: {m.text}" for m in messages)
