"""Emulator tests use the shared `emulator` and `client` fixtures of tests/conftest.py."""
