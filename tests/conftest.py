"""Fixtures and rules shared by every suite.

In CI (``CI`` set) nothing may skip: a suite whose service or package is missing must
fail, so a green run means every suite ran. ``require`` fails at once there; any other
skip turns the session red at the end, with the reasons listed.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.backends"]

IN_CI = bool(os.environ.get("CI"))
_skipped: list[str] = []


def require(condition: bool, reason: str) -> None:
    """Skip on a developer's machine when a service cannot run; fail in CI, never skip there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required test service unavailable in CI: {reason}")
    pytest.skip(reason)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(f"{report.nodeid}: {report.longrepr}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _skipped.append(f"{report.nodeid}: {report.longrepr}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if IN_CI and _skipped:
        terminalreporter.section("skips are failures in CI")
        for line in _skipped:
            terminalreporter.line(line)
