"""bench/kek_tier_rotation.py still runs: the tier rotates its DEKs in a handful of vault calls."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.keyvault.keys")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kek_tier_rotation.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[Any]:
    """bench/kek_tier_rotation.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("kek_tier_rotation", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_tier_rotation_costs_a_handful_of_vault_calls(bench: Any) -> None:
    """2,000 DEKs behind the tier rotate in under 10 vault requests; 20 direct DEKs need 20+;
    nothing is left off the new version in either layout."""
    tier, direct = bench.run(
        dek_count=2000, direct_deks=20, limit=25, window=1.0, latency=0.005, key_size=2048,
        max_rps=24.5,
    )  # fmt: skip
    assert tier.report.status == direct.report.status == "completed"
    assert tier.off_target == direct.off_target == 0
    assert tier.report.counters.changed == 2000
    assert tier.requests < 10
    assert direct.requests >= 20
