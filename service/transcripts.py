"""Parsing LiveDash transcripts: `[DD.MM.YYYY HH:MM:SS] Role: text`, continuation lines included.

Messages submitted one by one are rendered into the same format. `to_message` decides which
can be, so that a message can never become two turns (its text may hold no line the parser
reads as a turn header) and `parse_transcript(render(messages)) == messages` for every
message it returns.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta

import msgspec

# A turn header: the one definition. The parser splits turns with it, and `is_turn_header`
# refuses message text with a line it matches, so the two cannot drift apart.
_LINE = re.compile(r"^\[(\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2})\]\s*([^:]{1,40}):\s?(.*)$")
TIME_FORMAT = "%d.%m.%Y %H:%M:%S"
ROLE_MAX_LENGTH = 40  # what the header's `[^:]{1,40}` reads as a role
EARLIEST = datetime(2000, 1, 1)  # UTC, like every time `to_message` returns
AHEAD = timedelta(days=1)  # how far past `now` a time may lie (clock skew, offsets)


class Message(msgspec.Struct, frozen=True):
    """One message of a session."""

    at: datetime
    role: str
    text: str


class TranscriptError(ValueError):
    """The text is not a transcript in the LiveDash format."""


class MessageError(TranscriptError):
    """A submitted message that a transcript cannot hold as it is; `field` names the part:
    `role`, `content` or `at`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def parse_time(value: str) -> datetime:
    """A LiveDash `DD.MM.YYYY HH:MM:SS` time."""
    return datetime.strptime(value.strip(), TIME_FORMAT)


def format_time(at: datetime) -> str:
    """`DD.MM.YYYY HH:MM:SS` with a four-digit year (strftime writes year 1 as `1`)."""
    return (
        f"{at.day:02d}.{at.month:02d}.{at.year:04d} {at.hour:02d}:{at.minute:02d}:{at.second:02d}"
    )


def canonical_text(text: str) -> str:
    """A message's text as a transcript holds it: LF line ends, no blanks at a line's end or
    after the last line. Blank lines inside and leading indentation are kept."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip()


def parse_transcript(text: str) -> list[Message]:
    """The messages of a transcript; lines without a header continue the previous message."""
    turns: list[tuple[datetime, str, list[str]]] = []
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
            turns.append((at, match.group(2).strip(), [match.group(3)]))
        elif turns:
            turns[-1][2].append(raw)
        elif raw.strip():
            raise TranscriptError(f"text before the first message: {raw[:60]!r}")
    if not turns:
        raise TranscriptError("no messages")
    return [Message(at, role, canonical_text("\n".join(lines))) for at, role, lines in turns]


def render(messages: list[Message]) -> str:
    """The canonical transcript text sent to the model."""
    return "\n".join(f"[{format_time(m.at)}] {m.role}: {m.text}" for m in messages)


def is_turn_header(line: str) -> bool:
    """Whether a line reads as a turn header: the parser's own rule, applied after any leading
    whitespace and invisible format characters (a reader sees none of them)."""
    start = 0
    while start < len(line) and (
        line[start].isspace() or unicodedata.category(line[start]) == "Cf"
    ):
        start += 1
    return _LINE.match(line[start:]) is not None


def _role_problem(role: str) -> str | None:
    if not role:
        return "the role is empty"
    if len(role) > ROLE_MAX_LENGTH:
        return f"the role is longer than {ROLE_MAX_LENGTH} characters"
    if role != role.strip():
        return "the role starts or ends with a space"
    if ":" in role:
        return "the role contains ':', which ends the role in a turn header"
    if not role.isprintable():
        return "the role contains a control, line-break or invisible character"
    return None


def _content_problem(content: str) -> str | None:
    if "\x00" in content:
        return "the content contains a NUL character"
    # Every line break Python knows counts (CR, U+2028 ...): a terminal or a model reading
    # the transcript starts a new line at each of them, even where the parser does not.
    for number, line in enumerate(content.splitlines(), 1):
        if is_turn_header(line):
            return (
                f"line {number} of the content reads as a transcript turn header"
                " `[DD.MM.YYYY HH:MM:SS] Role:`; send each turn as its own message"
            )
    return None


def utc_time(at: datetime, now: datetime) -> datetime:
    """`at` in UTC, without a zone, in whole seconds (a time without an offset is taken as
    UTC); refused before 2000-01-01 or more than a day after `now`."""
    utc = _utc(at)
    if utc < EARLIEST:
        raise MessageError("at", f"{at.isoformat()} is before 2000-01-01T00:00:00Z")
    if utc > _utc(now) + AHEAD:
        raise MessageError("at", f"{at.isoformat()} is more than a day in the future")
    return utc


def _utc(at: datetime) -> datetime:
    if at.utcoffset() is not None:
        try:
            at = at.astimezone(UTC)
        except OverflowError:  # year 1 east of UTC, or year 9999 west of it
            return datetime.min if at.year == 1 else datetime.max
    return at.replace(tzinfo=None, microsecond=0)


def to_message(role: str, content: str, at: datetime | None, now: datetime) -> Message:
    """A submitted message as a transcript holds it (`at` defaults to `now`), or a
    `MessageError`: a role or content that would break or forge a turn header, a NUL,
    a time out of bounds. Only line ends and trailing blanks change (`canonical_text`)."""
    problem = _role_problem(role)
    if problem:
        raise MessageError("role", problem)
    problem = _content_problem(content)
    if problem:
        raise MessageError("content", problem)
    return Message(utc_time(now if at is None else at, now), role, canonical_text(content))
