"""The library never imports the CLI's frameworks; the CLI draws a progress bar on a terminal."""

from __future__ import annotations

import ast
import os
import pty
import subprocess
import sys

from field_encrypt.products import ProductRuntime
from tests.cli.helpers import PRODUCT, ROOT
from tests.support.seed import seed

LIBRARY = [
    "field_encrypt",
    "field_encrypt.audit",
    "field_encrypt.rotation",
    "field_encrypt.rotation.schedule",
    "field_encrypt.rotation.compromise",
    "field_encrypt.rotation.backup",
    "field_encrypt.rotation.preflight",
    "field_encrypt.rotation.verify",
    "field_encrypt.testing",
    "field_encrypt.runtime",
    "field_encrypt.usage",
    "field_encrypt.rotation.run_status",
    "field_encrypt.console.panels",
]
WEB = ("starlette", "fastapi", "uvicorn")


def _loaded(modules: list[str], frameworks: tuple[str, ...]) -> list[str]:
    """Which of ``frameworks`` a fresh interpreter has loaded after importing ``modules``."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print([m for m in {frameworks!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(ast.literal_eval(out.stdout))


def test_library_imports_no_cli_or_web_framework() -> None:
    """Importing every library module (and the console's panels) loads neither typer, click,
    rich, structlog nor a web framework (starlette, fastapi, uvicorn)."""
    assert _loaded(LIBRARY, ("typer", "click", "rich", "structlog", *WEB)) == []


def test_the_console_app_imports_no_cli_framework() -> None:
    """The console's web app stands on the library alone: no typer, click, rich or structlog."""
    assert _loaded(["field_encrypt.console.app"], ("typer", "click", "rich", "structlog")) == []


def test_progress_bar_on_a_terminal(env: dict[str, str], runtime: ProductRuntime) -> None:
    """With stderr on a pseudo-terminal, migrate draws rich progress, not JSON lines."""
    seed(runtime, 30)
    runtime.provider.create_version()
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "field_encrypt.cli",
            "migrate",
            "--product",
            PRODUCT,
            "--mode",
            "rewrap-deks",
            "--batch-size",
            "10",
        ],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout, _ = proc.communicate(timeout=60)
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "rewrap-deks *→2" in screen and "30/30" in screen and "eta" in screen
    assert '"event"' not in screen
    assert b"completed" in stdout
