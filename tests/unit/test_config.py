"""Settings from the environment: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import PARSERS, ConfigError, load_settings
from service.entrypoints.api.server import console_settings

ROOT = Path(__file__).resolve().parents[2]


def test_empty_environment_gives_the_documented_defaults() -> None:
    s = load_settings({})
    assert s.batch_max_requests == 50_000
    assert s.batch_creation_interval_seconds == 600
    assert s.batch_polling_interval_seconds == 120
    assert s.request_max_attempts == 3
    assert s.log_format == "json"


def test_values_are_parsed_to_their_types() -> None:
    s = load_settings(
        {"BATCH_CREATION_ENABLED": "false", "BATCH_MAX_REQUESTS": "10", "LOG_LEVEL": "debug"}
    )
    assert s.batch_creation_enabled is False
    assert s.batch_max_requests == 10
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BATCH_MAX_REQUESTS", "50001"),
        ("BATCH_MAX_REQUESTS", "many"),
        ("BATCH_MAX_BYTES", "300000000"),
        ("BATCH_POLLING_ENABLED", "maybe"),
        ("REQUEST_MAX_ATTEMPTS", "0"),
        ("PORT", "70000"),
        ("LOG_FORMAT", "xml"),
        ("BATCH_CREATION_INTERVAL_SECONDS", "-1"),
        ("DATABASE_URL", "localhost"),
        ("OPENAI_TIMEOUT_SECONDS", "0"),  # every OpenAI call would time out at once
        ("SSE_HEARTBEAT_SECONDS", "0"),  # event streams would send keep-alives in a busy loop
    ],
)
def test_invalid_value_fails_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_secrets_are_not_echoed_in_errors_or_repr() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"DATABASE_URL": "secret-pw-no-scheme"})
    assert "secret-pw" not in str(info.value)
    assert "sk-real-key" not in repr(load_settings({"OPENAI_API_KEY": "sk-real-key"}))


def test_every_variable_is_documented_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert documented == set(PARSERS)


def test_every_variable_is_explained_in_docs_configuration() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in PARSERS if f"`{name}`" not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("base_url", "linked"),
    [
        (None, True),
        ("https://api.openai.com/v1/", True),
        ("https://api.openai.com/v1", True),
        ("https://API.OpenAI.com/v1", True),  # a host name in any case
        ("https://api.openai.com:443/v1", True),
        ("https://eu.api.openai.com/v1", True),  # a regional endpoint of OpenAI's own
        ("https://us.API.openai.com", True),
        ("http://127.0.0.1:8089/v1", False),  # the emulator's batches are not on the dashboard
        ("https://proxy.example.com/openai/v1", False),
        ("http://api.openai.com/v1", False),  # not https
        ("https://api.openai.com.example.com/v1", False),
        ("https://evilapi.openai.com/v1", False),
        ("https://api.openai.com:8443/v1", False),
    ],
)
def test_the_console_links_to_openais_dashboard_only_for_openais_own_batches(
    base_url: str | None, linked: bool
) -> None:
    env = {"OPENAI_BASE_URL": base_url} if base_url else {}
    chosen = console_settings(load_settings(env))
    assert chosen is not None
    assert chosen.openai_dashboard is linked


def test_nats_settings_are_checked_and_the_url_never_shown() -> None:
    s = load_settings({"NATS_URL": "nats://relay:s3cret@nats:4222", "NATS_SUBJECT_PREFIX": "a.b"})
    assert s.nats_subject_prefix == "a.b"
    assert "s3cret" not in repr(s)
    for name, value in [
        ("NATS_URL", "http://nats:4222"),
        ("NATS_SUBJECT_PREFIX", "a..b"),
        ("NATS_SUBJECT_PREFIX", "a.*"),
        ("NATS_STREAM", "A.B"),
        ("NATS_STREAM_RETENTION", "workqueue"),
        ("RELAY_WINDOW", "0"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_settings({name: value})
        assert name in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings({"NATS_URL": "http://u:s3cret@nats"})
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="must not exceed NATS_STREAM_MAX_AGE_SECONDS=60"):
        load_settings({"NATS_STREAM_MAX_AGE_SECONDS": "60", "NATS_DUPLICATE_WINDOW_SECONDS": "120"})
