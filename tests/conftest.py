"""Fixtures shared by every suite."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.backends"]


def require(condition: bool, reason: str) -> None:
    """Skip on a developer's machine when a service cannot run; fail in CI, never skip there."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required test service unavailable in CI: {reason}")
    pytest.skip(reason)
