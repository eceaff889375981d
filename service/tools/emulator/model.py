"""The emulator's "model": deterministic answers and token counts derived from the text."""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec

from service.application.analysis import Category, Sentiment

_WORD = re.compile(r"[\w']+", re.UNICODE)
_POSITIVE = {
    "thanks",
    "thank",
    "great",
    "perfect",
    "happy",
    "helpful",
    "excellent",
    "love",
    "awesome",
    "bedankt",
    "dank",
    "super",
    "fijn",
    "danke",
    "prima",
    "merci",
    "parfait",
    "gracias",
    "genial",
}
_NEGATIVE = {
    "angry",
    "terrible",
    "bad",
    "frustrated",
    "unacceptable",
    "complaint",
    "annoyed",
    "worst",
    "wrong",
    "broken",
    "boos",
    "slecht",
    "klacht",
    "ärgerlich",
    "schlecht",
    "nul",
    "furieux",
    "mal",
    "queja",
    "enfadado",
}
_CATEGORIES: list[tuple[Category, set[str]]] = [
    (Category.SICK_LEAVE_RECOVERY, {"sick", "ill", "ziek", "krank", "malade", "enfermo", "doctor"}),
    (
        Category.LEAVE_VACATION,
        {"vacation", "holiday", "leave", "verlof", "vakantie", "urlaub", "congé", "vacaciones"},
    ),
    (
        Category.SALARY_COMPENSATION,
        {
            "salary",
            "pay",
            "payslip",
            "wage",
            "salaris",
            "loon",
            "gehalt",
            "salaire",
            "sueldo",
            "bonus",
        },
    ),
    (
        Category.SCHEDULE_HOURS,
        {"schedule", "shift", "rooster", "dienst", "schicht", "horaire", "turno", "roster"},
    ),
    (Category.CONTRACT_HOURS, {"contract", "vertrag", "contrat", "contrato", "overtime"}),
    (Category.ONBOARDING, {"onboarding", "first", "new", "welcome", "eerste", "nieuw"}),
    (Category.OFFBOARDING, {"resign", "quit", "resignation", "ontslag", "kündigung", "démission"}),
    (
        Category.WORKWEAR_STAFF_PASS,
        {"uniform", "workwear", "badge", "pass", "werkkleding", "pasje"},
    ),
    (
        Category.ACCESS_LOGIN,
        {"password", "login", "log", "access", "wachtwoord", "passwort", "account"},
    ),
    (Category.TEAM_CONTACTS, {"contact", "phone", "email", "colleague", "team", "telefoon"}),
    (Category.PERSONAL_QUESTIONS, {"address", "personal", "bank", "adres", "name"}),
    (Category.SOCIAL_QUESTIONS, {"party", "event", "lunch", "borrel", "feier", "fête"}),
]
_LANGUAGES: list[tuple[str, set[str]]] = [
    ("nl", {"ik", "het", "een", "niet", "mijn", "voor", "wat", "hoe", "bedankt", "graag"}),
    ("de", {"ich", "nicht", "und", "mein", "meine", "ist", "wie", "danke", "bitte", "der"}),
    ("fr", {"je", "pas", "est", "mon", "merci", "les", "pour", "une", "bonjour", "vous"}),
    ("es", {"yo", "no", "es", "mi", "gracias", "por", "una", "hola", "para", "que"}),
    ("en", {"i", "the", "is", "my", "not", "to", "and", "you", "thanks", "please"}),
]


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, (len(text) + 3) // 4)


def _chat_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(
        count_tokens(_content(m.get("content"))) + 4 for m in messages if isinstance(m, dict)
    )


def _content(content: Any) -> str:
    """A message's text: a string, or the text parts of a content array."""
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return "" if content is None else str(content)


def texts(value: Any) -> list[str]:
    """The texts of a prompt or input: a string, strings, or token arrays (shown as numbers)."""
    items = value if isinstance(value, list) else [value]
    return [
        " ".join(map(str, x)) if isinstance(x, list) else str(x) for x in items if x is not None
    ]


def _texts_tokens(value: Any) -> int:
    items = value if isinstance(value, list) else [value]
    return sum(len(x) if isinstance(x, list) else count_tokens(str(x)) for x in items)


def _responses_text(body: dict[str, Any]) -> str:
    value = body.get("input")
    if isinstance(value, list):
        return "\n".join(_content(i.get("content")) for i in value if isinstance(i, dict))
    return "" if value is None else str(value)


def input_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """Tokens a request's input costs at `endpoint`."""
    if endpoint == "/v1/chat/completions":
        return _chat_tokens(body)
    if endpoint == "/v1/completions":
        return _texts_tokens(body.get("prompt"))
    if endpoint == "/v1/embeddings":
        return _texts_tokens(body.get("input"))
    instructions = count_tokens(str(body["instructions"])) if body.get("instructions") else 0
    return instructions + count_tokens(_responses_text(body))


def prompt_text(endpoint: str, body: dict[str, Any]) -> str:
    """The text an answer is derived from: the user's messages, the prompt or the input."""
    if endpoint == "/v1/chat/completions":
        return _user_text(body)
    if endpoint == "/v1/responses":
        return _responses_text(body)
    return "\n".join(texts(body.get("prompt")))


def _user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return "\n".join(
        _content(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user"
    )


def _customer_lines(transcript: str) -> list[str]:
    lines = []
    for raw in transcript.splitlines():
        text = re.sub(r"^\[[^\]]*\]\s*", "", raw).strip()
        role, sep, rest = text.partition(":")
        if sep and role.strip().lower() in {"user", "customer", "employee", "gebruiker", "kunde"}:
            lines.append(rest.strip())
        elif not sep and lines:
            lines[-1] += " " + text
    return lines or [re.sub(r"^\[[^\]]*\]\s*", "", transcript).strip()]


@functools.lru_cache(maxsize=4096)
def _analysis_json(transcript: str) -> str:
    return msgspec.json.encode(analyse(transcript)).decode()


def analyse(transcript: str) -> dict[str, Any]:
    """A schema-valid analysis derived from the transcript by keyword rules."""
    customer = _customer_lines(transcript)
    words = [w.lower() for w in _WORD.findall(" ".join(customer))]
    bag = set(words)
    score = len(bag & _POSITIVE) - len(bag & _NEGATIVE)
    sentiment = (
        Sentiment.POSITIVE if score > 0 else Sentiment.NEGATIVE if score < 0 else Sentiment.NEUTRAL
    )
    category = next((c for c, keys in _CATEGORIES if bag & keys), Category.UNRECOGNIZED_OTHER)
    language = max(_LANGUAGES, key=lambda lang: len(bag & lang[1]))[0] if words else "en"
    lowered = transcript.lower()
    summary = " ".join(" ".join(customer).split()[:30]) or "The customer started a session."
    if len(summary) < 10:
        summary = f"Customer wrote: {summary}".ljust(10, ".")
    return {
        "language": language,
        "sentiment": sentiment.value,
        "escalated": any(k in lowered for k in ("escalat", "supervisor", "manager", "human agent")),
        "forwarded_hr": " hr " in f" {lowered} "
        or "human resources" in lowered
        or "personeelszaken" in lowered,
        "category": category.value,
        "questions": [q for q in customer if q.endswith("?")][:5],
        "summary": summary[:300],
    }


def analysis_json(text: str) -> str:
    """The pipeline's analysis of a transcript, as the JSON its schema asks for."""
    return _analysis_json(text)


def plain_reply(text: str) -> str:
    """A reply when no format is asked for."""
    return f"Emulated reply to: {text[:80]}" if text else "Emulated reply."
