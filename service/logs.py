"""Structured logging with structlog: one JSON object a line, or a console format."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Set up structlog and the standard library logging it writes through."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_current_stderr,
        cache_logger_on_first_use=False,
    )


def _current_stderr(*_: object) -> structlog.PrintLogger:
    # sys.stderr as it is when a line is logged, not when logging was configured: a
    # command run in-process (tests, the bench) may configure while stderr is redirected.
    return structlog.PrintLogger(file=sys.stderr)


def get_logger(name: str) -> Any:
    """A logger bound to a component name."""
    return structlog.get_logger(component=name)
