"""The command line: every command documents itself; bad configuration stops it by name."""

from __future__ import annotations

import argparse

import pytest

from service.entrypoints.cli import build_parser, main

COMMANDS = [
    "migrate",
    "bench",
    "docs",
    "emulator",
    "tokens",
    "import",
    "serve",
    "projections",
    "demo",
]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_of_design_section_8_exists_with_help_text() -> None:
    parser = build_parser()
    found = subcommands(parser)
    assert set(COMMANDS) <= set(found)
    helps = {a.dest: a.help for a in subcommands_action(parser)._choices_actions}
    for name in found:
        assert helps.get(name), f"{name} has no help line"


def subcommands_action(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command_prints_and_exits_zero(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"batchledger {command}" in out
    assert len(out.splitlines()) >= 3


def test_every_option_has_help() -> None:
    for name, sub in subcommands(build_parser()).items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BATCH_MAX_REQUESTS", "60000"),
        ("LOG_FORMAT", "yaml"),
        ("PORT", "http"),
        ("REQUEST_MAX_ATTEMPTS", "-2"),
    ],
)
def test_invalid_configuration_stops_the_command_naming_the_variable(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert name in err
    assert "configuration error" in err


def test_serve_refuses_to_send_the_placeholder_key_to_the_real_openai(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("BATCH_CREATION_ENABLED", raising=False)
    monkeypatch.delenv("BATCH_POLLING_ENABLED", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: OPENAI_API_KEY is not set" in err
    assert "OPENAI_BASE_URL" in err


def test_emulator_on_a_taken_port_exits_1_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"the emulator cannot listen on 127.0.0.1:{port}" in err


def test_serve_with_every_component_switched_off_refuses_to_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--no-schedulers", "--no-projections", "--no-api"]) == 2
    assert "leave nothing to run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "refusal"),
    [
        (["--line-failure-rate", "2"], "--line-failure-rate: must be a number from 0 to 1"),
        (["--validating-seconds", "-5"], "--validating-seconds: must be a number from 0 to 86400"),
        (["--partial-lines", "-1"], "--partial-lines: must be a whole number from 0 to 1000000"),
        (["--response-delay-seconds", "601"], "must be a number from 0 to 600"),
        (["--outcome", "explode"], '--outcome: must be one of "cancel", "complete"'),
        (["--models", "gpt-4o,,gpt-4.1"], "--models: must be a list of at most 1000 items"),
        (["--line-failure-rate", "nan"], "--line-failure-rate: must be a number from 0 to 1"),
        (["--port", "70000"], "--port: expected a port from 0 to 65535"),
        (["--port", "-1"], "--port: expected a port from 0 to 65535"),
    ],
)
def test_an_emulator_flag_outside_its_knobs_range_exits_2_naming_flag_and_range(
    flags: list[str],
    refusal: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def serve(*args: object, **kwargs: object) -> None:
        raise AssertionError("the emulator started with a value out of range")

    monkeypatch.setattr("aiohttp.web.run_app", serve)  # never serve, even if accepted
    with pytest.raises(SystemExit) as info:
        main(["emulator", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "batchledger emulator: error: argument " in err
    assert refusal in err
    assert "Traceback" not in err


def test_emulator_flags_in_range_become_the_knobs_of_the_emulator() -> None:
    from service.entrypoints.cli import _EMULATOR_FLAGS

    args = build_parser().parse_args(
        ["emulator", "--line-failure-rate", "1", "--models", "a,b", "--response-delay-seconds", "2"]
    )
    assert (args.line_failure_rate, args.models, args.response_delay_seconds) == (
        1.0,
        ["a", "b"],
        2,
    )
    assert args.validating_seconds == 1.0  # the demo's pace unless told otherwise
    assert set(_EMULATOR_FLAGS) <= set(vars(args))


@pytest.mark.parametrize("lifetime", ["0d", "-5d", "90", "1y"])
def test_a_token_lifetime_that_is_no_duration_exits_2_before_any_database_is_touched(
    lifetime: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/unreachable")
    with pytest.raises(SystemExit) as info:
        main(["tokens", "create", "--name", "n", "--role", "admin", f"--expires-in={lifetime}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --expires-in: " in err
    assert "is not a duration" in err
