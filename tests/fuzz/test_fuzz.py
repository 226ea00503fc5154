"""Runs the atheris fuzz targets for a bounded time: no crash, no exception outside the tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("FIELD_ENCRYPT_FUZZ_SECONDS", "20"))


@pytest.mark.parametrize("module", ["tests.fuzz.fuzz_token"])
def test_fuzz_target_finds_no_crash(module: str) -> None:
    """The fuzzer runs for its budget and exits 0 having executed many inputs."""
    result = subprocess.run(
        [sys.executable, "-m", module, f"-max_total_time={SECONDS}", "-print_final_stats=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    executions = int(re.search(r"Done (\d+) runs", output).group(1))  # type: ignore[union-attr]
    assert executions > 1000, output[-2000:]
    print(f"{module}: {executions} executions in {SECONDS}s")
