"""Settings from the environment, validated at start; an error names the variable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from service.pricing import DEFAULT_PRICES, parse_prices

T = TypeVar("T")

OPENAI_MAX_BATCH_REQUESTS = 50_000
OPENAI_MAX_FILE_BYTES = 200 * 1024 * 1024


class ConfigError(ValueError):
    """A variable is set to a value the service cannot run with."""


class StartupError(RuntimeError):
    """A command could not start something it needs (a port, a process)."""


EMULATOR_KEY = "sk-emulator"  # the default key: what `batchledger emulator` accepts


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable, with the defaults documented in .env.example."""

    database_url: str | None = None
    writer_lock_timeout_seconds: float = 5.0
    data_dir: str | None = None
    openai_api_key: str = EMULATOR_KEY
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: float = 60.0
    openai_max_retries: int = 2
    batch_creation_enabled: bool = True
    batch_polling_enabled: bool = True
    batch_creation_interval_seconds: float = 600.0
    batch_polling_interval_seconds: float = 120.0
    batch_max_requests: int = OPENAI_MAX_BATCH_REQUESTS
    batch_max_bytes: int = 190_000_000
    request_max_attempts: int = 3
    creator_page_size: int = 5_000
    scheduler_backoff_seconds: float = 5.0
    scheduler_backoff_max_seconds: float = 600.0
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    log_format: str = "json"
    api_rate_limit_per_minute: int = 600
    api_auth_failures_per_minute: int = 20
    api_trusted_proxies: str = ""
    sse_heartbeat_seconds: float = 15.0
    api_header_timeout_seconds: float = 10.0
    api_body_timeout_seconds: float = 30.0
    api_idle_timeout_seconds: float = 75.0
    api_max_connections_per_address: int = 64
    console_enabled: bool = True
    console_session_idle_minutes: int = 30
    console_session_max_hours: int = 12
    console_secure_cookies: bool = False
    nats_url: str | None = None
    nats_creds_file: str | None = None
    nats_inbox_prefix: str = "_INBOX"
    nats_stream: str = "BATCHLEDGER"
    nats_subject_prefix: str = "batchledger"
    nats_stream_retention: str = "limits"
    nats_stream_max_age_seconds: int = 7 * 86_400
    nats_stream_max_bytes: int = -1
    nats_stream_replicas: int = 1
    nats_duplicate_window_seconds: int = 120
    relay_window: int = 1024
    relay_ack_timeout_seconds: float = 10.0
    relay_retry_seconds: float = 2.0
    model_prices: dict[str, tuple[float, float]] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_PRICES)
    )

    def __repr__(self) -> str:  # never print the API key
        fields = {f: getattr(self, f) for f in self.__struct_fields__}
        fields["openai_api_key"] = "***"
        if self.nats_url is not None:  # it may carry a user and password
            fields["nats_url"] = "***"
        return f"Settings({fields})"


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 86_400:
        raise ValueError("must be between 0 and 86400 seconds")
    return value


def _timeout(raw: str) -> float:
    value = float(raw)
    if not 0.1 <= value <= 3600:  # a timeout of 0 would close every connection at once
        raise ValueError("must be between 0.1 and 3600 seconds")
    return value


def _wait(raw: str) -> float:
    value = float(raw)
    # 0 would make every OpenAI call time out at once, or send heartbeats in a busy loop.
    if not 0.1 <= value <= 86_400:
        raise ValueError("must be between 0.1 and 86400 seconds")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw.lower()

    return parse


def _upper_choice(*options: str) -> Callable[[str], str]:
    lower = _choice(*(o.lower() for o in options))
    return lambda raw: lower(raw).upper()


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _url(raw: str) -> str:
    if "://" not in raw:
        raise ValueError("must be a URL like scheme://host/...")
    return raw


def _prices(raw: str) -> dict[str, tuple[float, float]]:
    try:
        return parse_prices(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f'must be JSON like {{"gpt-4o-mini": [0.15, 0.6]}} ({exc})') from None


def _networks(raw: str) -> str:
    import ipaddress

    for part in raw.split(","):
        if part.strip():
            ipaddress.ip_network(part.strip(), strict=False)
    return raw


def _nats_urls(raw: str) -> str:
    for part in raw.split(","):
        if not part.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError("must be nats://host:port (or tls://, ws://, wss://), comma-separated")
    return raw.strip()


def _subject_tokens(raw: str) -> str:
    # The prefix is the first tokens of every subject: wildcards or empty tokens in it
    # would make the relay publish to subjects no consumer can name.
    tokens = raw.strip().split(".")
    if not all(t and not set(t) & set("*> \t") for t in tokens):
        raise ValueError("must be dot-separated tokens without spaces, * or >")
    return raw.strip()


def _stream_name(raw: str) -> str:
    if not raw or set(raw) & set(".*>/\\ \t") or len(raw) > 255:
        raise ValueError("must be 1-255 characters without . * > / \\ or spaces")
    return raw


def _lock_wait(raw: str) -> float:
    value = float(raw)
    # 0 cannot mean "no wait" here: PostgreSQL reads a lock_timeout of 0 as "wait forever".
    if not 0 < value <= 3600:
        raise ValueError("must be above 0 and at most 3600 seconds")
    return value


PARSERS: dict[str, Callable[[str], Any]] = {
    "DATABASE_URL": _url,
    "WRITER_LOCK_TIMEOUT_SECONDS": _lock_wait,
    "BATCHLEDGER_DATA_DIR": _nonempty,
    "OPENAI_API_KEY": _nonempty,
    "OPENAI_BASE_URL": _url,
    "OPENAI_MODEL": _nonempty,
    "OPENAI_TIMEOUT_SECONDS": _wait,
    "OPENAI_MAX_RETRIES": _int(0, 10),
    "BATCH_CREATION_ENABLED": _bool,
    "BATCH_POLLING_ENABLED": _bool,
    "BATCH_CREATION_INTERVAL_SECONDS": _seconds,
    "BATCH_POLLING_INTERVAL_SECONDS": _seconds,
    "BATCH_MAX_REQUESTS": _int(1, OPENAI_MAX_BATCH_REQUESTS),
    "BATCH_MAX_BYTES": _int(1024, OPENAI_MAX_FILE_BYTES),
    "REQUEST_MAX_ATTEMPTS": _int(1, 100),
    "CREATOR_PAGE_SIZE": _int(1, 100_000),
    "SCHEDULER_BACKOFF_SECONDS": _wait,
    "SCHEDULER_BACKOFF_MAX_SECONDS": _wait,
    "HOST": _nonempty,
    "PORT": _int(0, 65_535),
    "LOG_LEVEL": _upper_choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "LOG_FORMAT": _choice("json", "console"),
    "MODEL_PRICES": _prices,
    "API_RATE_LIMIT_PER_MINUTE": _int(1, 1_000_000),
    "API_AUTH_FAILURES_PER_MINUTE": _int(1, 1_000_000),
    "API_TRUSTED_PROXIES": _networks,
    "SSE_HEARTBEAT_SECONDS": _wait,
    "API_HEADER_TIMEOUT_SECONDS": _timeout,
    "API_BODY_TIMEOUT_SECONDS": _timeout,
    "API_IDLE_TIMEOUT_SECONDS": _timeout,
    "API_MAX_CONNECTIONS_PER_ADDRESS": _int(0, 1_000_000),
    "CONSOLE_ENABLED": _bool,
    "CONSOLE_SESSION_IDLE_MINUTES": _int(1, 1440),
    "CONSOLE_SESSION_MAX_HOURS": _int(1, 168),
    "CONSOLE_SECURE_COOKIES": _bool,
    "NATS_URL": _nats_urls,
    "NATS_CREDS_FILE": _nonempty,
    "NATS_INBOX_PREFIX": _subject_tokens,
    "NATS_STREAM": _stream_name,
    "NATS_SUBJECT_PREFIX": _subject_tokens,
    # workqueue is refused: it deletes a message once one consumer acks it, and every
    # integrator needs every event.
    "NATS_STREAM_RETENTION": _choice("limits", "interest"),
    "NATS_STREAM_MAX_AGE_SECONDS": _int(0, 10 * 365 * 86_400),
    "NATS_STREAM_MAX_BYTES": _int(-1, 2**62),
    "NATS_STREAM_REPLICAS": _int(1, 5),
    "NATS_DUPLICATE_WINDOW_SECONDS": _int(1, 7 * 86_400),
    "RELAY_WINDOW": _int(1, 65_536),
    "RELAY_ACK_TIMEOUT_SECONDS": _wait,
    "RELAY_RETRY_SECONDS": _wait,
}


_FIELD = {"BATCHLEDGER_DATA_DIR": "data_dir"}
_SECRETS = {"OPENAI_API_KEY", "DATABASE_URL", "NATS_URL"}  # URLs may carry a password


def require_openai_key(settings: Settings) -> None:
    """Refuse to send the emulator's placeholder key to the real OpenAI."""
    if settings.openai_base_url is None and settings.openai_api_key == EMULATOR_KEY:
        raise ConfigError(
            "OPENAI_API_KEY is not set: the schedulers would call api.openai.com with the"
            " emulator's placeholder key. Set your key, or point OPENAI_BASE_URL at"
            " `batchledger emulator` (e.g. http://127.0.0.1:8089/v1)."
        )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Settings from `env`; unset or empty variables keep their defaults."""
    values: dict[str, Any] = {}
    for name, parse in PARSERS.items():
        raw = env.get(name, "")
        if raw == "":
            continue
        try:
            values[_FIELD.get(name, name.lower())] = parse(raw)
        except ValueError as exc:
            shown = "***" if name in _SECRETS else repr(raw)
            raise ConfigError(f"{name}={shown} is invalid: {exc}") from None
    settings = Settings(**values)
    age, window = settings.nats_stream_max_age_seconds, settings.nats_duplicate_window_seconds
    if age and window > age:  # JetStream refuses such a stream
        raise ConfigError(
            f"NATS_DUPLICATE_WINDOW_SECONDS={window} is invalid: it must not exceed"
            f" NATS_STREAM_MAX_AGE_SECONDS={age}"
        )
    return settings
