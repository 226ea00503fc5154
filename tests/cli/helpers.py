"""Running the CLI in-process (typer's CliRunner) or as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from field_encrypt.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = "tests.support.sample_product:product"


def cli(*args: str) -> Result:
    """``field-encrypt ARGS`` in this process (the env fixture has set FIELD_ENCRYPT_*)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def cli_process(
    *args: str, env: dict[str, str], program: str = "field-encrypt"
) -> subprocess.CompletedProcess[str]:
    """``field-encrypt ARGS`` (or ``encrypt-migrate``) as a separate process, from the repo root."""
    module = "field_encrypt.cli" if program == "field-encrypt" else "field_encrypt.cli.migrate_main"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
