"""Fixtures and rules shared by every suite.

In CI (``CI`` set) nothing may skip: a suite whose service or package is missing must
fail, so a green run means every suite ran. ``require`` fails at once there; any other
skip turns the session red at the end, with the reasons listed.
"""

from __future__ import annotations

import multiprocessing.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.backends"]

IN_CI = bool(os.environ.get("CI"))
_skipped: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_in_the_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's own temporary files (tempfile, and TMPDIR for the processes it starts) go
    to one directory, which must be empty at the end: a run leaves nothing in the system's
    temporary directory. (pytest's tmp_path directories stay where pytest keeps them.)"""
    tmp_path_factory.getbasetemp()  # fixed before the redirection
    # multiprocessing's own directory stays in the system's: the stdlib removes it at exit,
    # after this fixture has checked and removed the suite's directory.
    multiprocessing.util.get_temp_dir()
    # Short names: a nested run (the secret scan runs the suite again) puts PostgreSQL's unix
    # socket two suite directories deep, and a socket path may not exceed 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="fe-suite-"))
    root.chmod(0o755)  # servers that run as another user (PostgreSQL) make their dirs in it
    saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
    tempfile.tempdir, os.environ["TMPDIR"] = str(root), str(root)
    try:
        yield
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        left = sorted(p.name for p in root.iterdir())
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"the test run left these in the temporary directory: {left}"


def require(condition: bool, reason: str) -> None:
    """Skip on a developer's machine when a service cannot run; fail in CI, never skip there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required test service unavailable in CI: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(trylast=True)  # after -k, -m and the other selections
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.reliability.test_secret_hygiene import share_with_the_slice

    share_with_the_slice(config, items)


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
    from tests import figures

    if figures.FIGURES:
        terminalreporter.section("reliability figures")
        for line in figures.lines():
            terminalreporter.line(line)
        terminalreporter.line(f"written to {figures.write()}")
    if IN_CI and _skipped:
        terminalreporter.section("skips are failures in CI")
        for line in _skipped:
            terminalreporter.line(line)
