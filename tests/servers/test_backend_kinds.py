"""``FIELD_ENCRYPT_TEST_STORES`` narrows the store kinds of ``tests/backends.py``, or is refused.

The secret-hygiene slice runs with ``FIELD_ENCRYPT_TEST_STORES=sqlite``; a typo there must
stop the run with a line naming the unknown kind, not run on no store or on every store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import ALL_BACKEND_KINDS, _backend_kinds

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("chosen", "kinds"),
    [
        (None, ["sqlite", "postgres", "cosmos"]),
        ("", ["sqlite", "postgres", "cosmos"]),
        ("sqlite", ["sqlite"]),
        (" postgres , cosmos ", ["postgres", "cosmos"]),
    ],
)
def test_the_variable_narrows_the_kinds(chosen: str | None, kinds: list[str]) -> None:
    """Unset or empty: every kind; else the kinds it names, in its order."""
    assert _backend_kinds(chosen) == kinds
    assert set(kinds) <= set(ALL_BACKEND_KINDS)


@pytest.mark.parametrize("chosen", ["sqlite,mysql", "SQLite", ",", "mongo"])
def test_an_unknown_kind_is_refused_by_name(chosen: str) -> None:
    """An unknown kind (or none at all) is a usage error naming it and the known kinds."""
    with pytest.raises(pytest.UsageError) as refused:
        _backend_kinds(chosen)
    message = str(refused.value)
    assert f"FIELD_ENCRYPT_TEST_STORES={chosen!r}" in message
    assert "name some of sqlite, postgres, cosmos, comma-separated" in message
    for unknown in {k.strip() for k in chosen.split(",")} - {"sqlite", ""}:
        assert f"unknown: {unknown}" in message


def _collect(stores: str) -> subprocess.CompletedProcess[str]:
    """``pytest --collect-only`` of a store-parametrised module with ``stores`` set."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
         "tests/rotation/test_audit_events.py"],
        cwd=ROOT,
        env={**os.environ, "FIELD_ENCRYPT_TEST_STORES": stores},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_a_run_collects_only_the_chosen_kinds() -> None:
    """A store-parametrised suite is collected on the named kinds only; a typo stops the run
    before any test, with the usage error's line and no traceback."""
    narrowed = _collect("sqlite")
    assert narrowed.returncode == 0, narrowed.stdout + narrowed.stderr
    ids = [line for line in narrowed.stdout.splitlines() if "::" in line]
    assert ids and all(line.endswith("[sqlite]") for line in ids), ids
    refused = _collect("sqlite,postgress")
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout + refused.stderr
    assert "unknown: postgress" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
