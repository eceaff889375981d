"""Structured logs: one JSON object a line, on whatever stderr is when a line is logged."""

from __future__ import annotations

import io
import json

import pytest

from service.logs import configure, get_logger


def test_logs_go_to_the_current_stderr_even_after_the_one_at_configure_time_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    early = io.StringIO()
    monkeypatch.setattr("sys.stderr", early)
    configure("INFO", "json")
    early.close()
    later = io.StringIO()
    monkeypatch.setattr("sys.stderr", later)
    get_logger("test").info("batch.polled", batch_id="b1")
    line = json.loads(later.getvalue())
    assert (line["event"], line["batch_id"], line["component"]) == ("batch.polled", "b1", "test")
    assert line["level"] == "info"
