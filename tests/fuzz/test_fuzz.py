"""Runs the atheris fuzz targets for a bounded time: no crash, no exception outside the tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import figures

ROOT = Path(__file__).resolve().parents[2]
SOAK = os.environ.get("FIELD_ENCRYPT_SOAK", "") not in ("", "0")
SECONDS = int(os.environ.get("FIELD_ENCRYPT_FUZZ_SECONDS", "600" if SOAK else "20"))


@pytest.mark.parametrize("module", ["tests.fuzz.fuzz_token", "tests.fuzz.fuzz_http"])
def test_fuzz_target_finds_no_crash(module: str, tmp_path: Path) -> None:
    """The fuzzer runs for its budget and exits 0 having executed many inputs."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            f"-max_total_time={SECONDS}",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        env={**os.environ, "FUZZ_WORKDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    executions = int(re.search(r"Done (\d+) runs", output).group(1))  # type: ignore[union-attr]
    assert executions > 1000, output[-2000:]
    figures.record("fuzzing", **{f"{module.rpartition('.')[2]}_executions": executions})
    print(f"{module}: {executions} executions in {SECONDS}s")
