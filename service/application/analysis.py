"""The LiveDash session analysis: the prompt, its JSON schema, and the typed reply."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import msgspec

SCHEMA_NAME = "livedash_session_analysis"


class Sentiment(StrEnum):
    """The customer's overall mood."""

    POSITIVE = "POSITIVE"
    NEUTRAL = "NEUTRAL"
    NEGATIVE = "NEGATIVE"


class Category(StrEnum):
    """What the session was about."""

    SCHEDULE_HOURS = "SCHEDULE_HOURS"
    LEAVE_VACATION = "LEAVE_VACATION"
    SICK_LEAVE_RECOVERY = "SICK_LEAVE_RECOVERY"
    SALARY_COMPENSATION = "SALARY_COMPENSATION"
    CONTRACT_HOURS = "CONTRACT_HOURS"
    ONBOARDING = "ONBOARDING"
    OFFBOARDING = "OFFBOARDING"
    WORKWEAR_STAFF_PASS = "WORKWEAR_STAFF_PASS"  # noqa: S105 (a category, not a secret)
    TEAM_CONTACTS = "TEAM_CONTACTS"
    PERSONAL_QUESTIONS = "PERSONAL_QUESTIONS"
    ACCESS_LOGIN = "ACCESS_LOGIN"
    SOCIAL_QUESTIONS = "SOCIAL_QUESTIONS"
    UNRECOGNIZED_OTHER = "UNRECOGNIZED_OTHER"


Language = Annotated[str, msgspec.Meta(pattern="^[a-z]{2}$")]
Summary = Annotated[str, msgspec.Meta(min_length=10, max_length=300)]
Questions = Annotated[list[str], msgspec.Meta(max_length=5)]


class SessionAnalysis(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A valid analysis reply; decoding enforces the schema."""

    language: Language
    sentiment: Sentiment
    escalated: bool
    forwarded_hr: bool
    category: Category
    questions: Questions
    summary: Summary


class InvalidAnalysis(ValueError):
    """The model's reply is not a valid analysis."""


_decoder = msgspec.json.Decoder(SessionAnalysis)


def parse_analysis(content: str | None) -> SessionAnalysis:
    """The analysis in a chat completion's content, or InvalidAnalysis saying why not."""
    if not content:
        raise InvalidAnalysis("the reply has no content")
    try:
        return _decoder.decode(content)
    except msgspec.ValidationError as exc:
        raise InvalidAnalysis(f"reply does not match the schema: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidAnalysis(f"reply is not JSON: {exc}") from None


def json_schema() -> dict[str, Any]:
    """The strict JSON schema sent as `response_format` (Structured Outputs)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "language",
            "sentiment",
            "escalated",
            "forwarded_hr",
            "category",
            "questions",
            "summary",
        ],
        "properties": {
            "language": {"type": "string", "description": "ISO 639-1 code, e.g. en, nl, de"},
            "sentiment": {"type": "string", "enum": [s.value for s in Sentiment]},
            "escalated": {"type": "boolean"},
            "forwarded_hr": {"type": "boolean"},
            "category": {"type": "string", "enum": [c.value for c in Category]},
            "questions": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
            "summary": {"type": "string", "minLength": 10, "maxLength": 300},
        },
    }


SYSTEM_PROMPT = (
    "You analyse one customer-support chat session of LiveDash. Reply only with JSON that "
    "matches the schema: the customer's language as an ISO 639-1 code; the overall "
    "sentiment; whether the conversation was escalated to a human; whether the customer was "
    "forwarded to HR; the single best category; at most five questions the customer asked, "
    "verbatim; and a neutral summary of 10 to 300 characters."
)


def chat_body(model: str, transcript: str) -> dict[str, Any]:
    """The Chat Completions request body for one session."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": transcript},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": json_schema()},
        },
        "temperature": 0,
    }
