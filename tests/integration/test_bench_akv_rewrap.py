"""bench/akv_rewrap.py still runs, and its rewrap stays under the vault's throttle limit."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.keyvault.keys")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "akv_rewrap.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[Any]:
    """bench/akv_rewrap.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("akv_rewrap", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_bench_rewrap_runs_at_the_limit_without_failures(bench: Any) -> None:
    """A small run (60 DEKs, 40 requests/s, 20 ms latency) rewraps every DEK with one vault
    call each, no DEK failed, close to the throttle limit."""

    result = bench.run(
        deks=60, limit=40, window=1.0, latency=0.02, key_size=2048, workers=4, headroom=0.98
    )

    assert result.failed == 0
    assert result.unwrap_calls == 60
    assert result.fraction > 0.8


def test_token_bucket_spaces_acquisitions_at_its_rate(bench: Any) -> None:
    """The bench's limiter lets one call through per 1/rate seconds (an injected clock)."""
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = bench.TokenBucket(rate=10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        bucket.acquire()
    assert slept == pytest.approx([0.1, 0.1, 0.1])
