"""The performance bench scripts still run, with tiny sizes (their figures are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("cli_startup.py", ("--rounds", "1"), "field-encrypt status"),
        (
            "field_throughput.py",
            ("--seconds", "0.01", "--repeat", "1", "--page", "5"),
            "decrypt_documents (batch)",
        ),
        ("rewrap_sqlite.py", ("--sizes", "300", "--batch-size", "100", "--repeat", "1"), "300"),
        (
            "rewrap_sqlite.py",
            ("--cli", "--sizes", "300", "--batch-size", "100", "--repeat", "1"),
            "CLI DEKs/s",
        ),
        (
            "reencrypt_sqlite.py",
            ("--documents", "200", "--batch-size", "50", "--repeat", "1"),
            "engine / floor",
        ),
    ],
    ids=["cli_startup", "field_throughput", "rewrap_sqlite", "rewrap_cli", "reencrypt_sqlite"],
)
def test_bench_script_runs(script: str, args: tuple[str, ...], expected: str) -> None:
    """Each bench script completes on a tiny size (its own asserts check the work was done)."""
    assert expected in _bench(script, *args)
