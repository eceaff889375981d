"""Playwright's test API for the console's browser tests: importing it without Playwright
skips the importing module, except on CI, where these tests must run and the import fails."""

from __future__ import annotations

import os

import pytest

try:
    from playwright.async_api import Dialog, expect
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "Playwright is not installed: run `.venv/bin/pip install -e '.[dev]'`",
        allow_module_level=True,
    )

__all__ = ["Dialog", "expect"]
