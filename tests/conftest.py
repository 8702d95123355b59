"""Shared pytest setup: command-line options used by the test modules."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files under tests/golden/ instead of comparing")


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed pseudonym key, so reports (and their golden files) are the same in every run."""
    monkeypatch.setenv("PROTOCOL_AUDIT_KEY", "test-key-not-a-secret-0123456789")
