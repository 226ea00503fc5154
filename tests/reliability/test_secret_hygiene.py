"""Secret hygiene: a broad slice of the suite, at DEBUG, leaks no key, token or plaintext.

The slice (the NoteLett service tests, the rotation, CLI and console tests, the unit tests
and the provider contract and integration tests against the real servers) runs on SQLite
(``FIELD_ENCRYPT_TEST_STORES=sqlite``: the code above the store is the same on every store,
and the full run covers the other stores' variants; this halves the slice) in a separate
pytest with the scanning plugin ``tests/reliability/secret_scan.py`` and
``--log-level=DEBUG``: every MEK, DEK, bearer token and note plaintext canary the tests
make is recorded, and every log line, captured output, HTTP error body, subprocess output
and server log, and every OpenTelemetry span (tracing on for the whole slice), is searched
for each of them in hex, base64 and repr forms. Zero hits.

A run that holds this test and the slice's own tests (the full run) runs them once: this
test goes first, and each of the slice's tests then reports the outcome it had in the slice
(``share_with_the_slice``, called by the root conftest); their PostgreSQL and Cosmos DB
variants, and the rest of the suite, run as usual.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import figures

ROOT = Path(__file__).resolve().parents[2]
SLICE = [
    "tests/service",
    "tests/cli",
    "tests/console",
    "tests/rotation",
    "tests/unit",
    "tests/contract/test_key_provider.py",
    "tests/integration/test_akv_provider.py",
    "tests/integration/test_aws_kms_provider.py",
    "tests/integration/test_pkcs11_provider.py",
]
SLOW = ["tests/rotation/test_kill_resume.py", "tests/service/test_schemathesis.py"]
OTHER_STORES = {"postgres", "cosmos"}
HYGIENE = "tests/reliability/test_secret_hygiene.py::test_a_debug_run_of_the_suite_leaks_no_secret"
OUTCOMES = pytest.StashKey[dict[str, dict[str, str]]]()


def run_by_the_slice(item: pytest.Item) -> bool:
    """Whether the slice runs ``item`` too: a test of its paths (not :data:`SLOW`) that is not
    a PostgreSQL or Cosmos DB variant (the slice runs on SQLite only)."""
    path = item.path.relative_to(ROOT).as_posix()
    if path in SLOW or not any(path == p or path.startswith(p + "/") for p in SLICE):
        return False
    callspec = getattr(item, "callspec", None)
    values = callspec.params.values() if callspec is not None else ()
    return not any(isinstance(v, str) and v in OTHER_STORES for v in values)


def share_with_the_slice(config: pytest.Config, items: list[pytest.Item]) -> None:
    """When this run runs the slice too, its tests run once, in the slice, under the scan.

    The slice goes first; each of its tests in this run then reports the outcome it had
    there (passed, skipped with its reason, or failed with its traceback), without setting
    up or running anything again. So every test still runs and is reported here under its
    own id (the pass count and ``-x`` are unchanged), at the slice's DEBUG log level with
    tracing on, and the run pays for the slice once. A test this run expected the slice to
    run but the slice did not fails, naming why.
    """
    first = [item for item in items if item.nodeid == HYGIENE]
    if not first or os.environ.get("SECRET_SCAN_REPORT"):  # not here, or this is the slice
        return
    shared = [i for i in items if isinstance(i, pytest.Function) and run_by_the_slice(i)]
    items[:] = first + [item for item in items if item is not first[0]]
    for item in shared:
        item.setup = lambda: None  # type: ignore[method-assign]  # no fixture: it ran there
        item.runtest = functools.partial(_as_in_the_slice, item)  # type: ignore[method-assign]


def _as_in_the_slice(item: pytest.Item) -> None:
    outcomes = item.config.stash.get(OUTCOMES, {})
    there = outcomes.get(item.nodeid)
    if there is None:
        pytest.fail(
            f"the secret-hygiene slice ({HYGIENE}) did not run this test "
            f"(it ran {len(outcomes)}): see that test's failure",
            pytrace=False,
        )
    if there["outcome"] == "skipped":
        pytest.skip(there["detail"])
    if there["outcome"] != "passed":
        pytest.fail(f"failed in the secret-hygiene slice:\n{there['detail']}", pytrace=False)


def test_a_debug_run_of_the_suite_leaks_no_secret(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    """Zero appearances of any recorded secret in anything the slice printed or logged."""
    report_path = tmp_path / "secret-scan.json"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-p", "tests.reliability.secret_scan", "--log-level=DEBUG",
        "--basetemp", str(tmp_path / "run"), *SLICE,
        *[arg for path in SLOW for arg in ("--ignore", path)],
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={
            **os.environ,
            "SECRET_SCAN_REPORT": str(report_path),
            "FIELD_ENCRYPT_TEST_STORES": "sqlite",
            "FIELD_ENCRYPT_FIGURES": str(tmp_path / "figures.json"),
        },
        capture_output=True,
        text=True,
        timeout=1800,  # 13 min at load 6-7 (2026-12-07); a hang, not a slow machine, should trip it
    )
    assert report_path.exists(), result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(report_path.read_text())
    pytestconfig.stash[OUTCOMES] = report["outcomes"]
    _record_the_slice_figures(tmp_path / "figures.json")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert report["hit_count"] == 0, json.dumps(report["hits"], indent=2)
    secrets = report["secrets"]
    assert secrets["meks"] > 0 and secrets["deks"] > 100 and secrets["bearer_tokens"] > 10
    assert secrets["plaintext_canaries"] > 0
    assert report["spans_scanned"] > 100  # HTTP, provider, store and rotation spans
    figures.record(
        "secret hygiene",
        **{f"{k}_recorded": v for k, v in secrets.items()},
        texts_scanned=report["texts_scanned"],
        spans_scanned=report["spans_scanned"],
        characters_scanned=report["characters_scanned"],
        hits=report["hit_count"],
    )
    print(f"secret scan: {secrets}, {report['characters_scanned']} characters, 0 hits")


def _record_the_slice_figures(path: Path) -> None:
    """The figures the slice's tests recorded, as if they had run in this process (they do
    not run here again: :func:`share_with_the_slice`)."""
    if path.exists():
        for suite, counts in json.loads(path.read_text()).items():
            figures.record(suite, **counts)


def test_the_scan_finds_a_planted_secret() -> None:
    """The scanner itself: a DEK in hex, base64, URL-safe base64 or a bytes repr, a token
    and a canary, each planted in a log line, are all found."""
    import base64

    from tests.reliability import secret_scan

    dek = bytes(range(32))
    secret_scan.SECRETS["dek"].add(dek)
    secret_scan.TOKENS.add("eyJ.planted.token")
    secret_scan.CANARIES.add("CANARY-" + "ab" * 16)
    try:
        lines = [
            ("hex", f"key={dek.hex()}"),
            ("base64", f'{{"Plaintext": "{base64.b64encode(dek).decode()}"}}'),
            ("url", f"k {base64.urlsafe_b64encode(dek).decode().rstrip('=')} end"),
            ("repr", f"value {dek!r}"),
            ("token", "Authorization: Bearer eyJ.planted.token"),
            ("canary", "title=CANARY-" + "ab" * 16),
        ]
        found = {hit["where"] for hit in secret_scan.scan(lines)}
        assert found == {where for where, _ in lines}
    finally:
        secret_scan.SECRETS["dek"].discard(dek)
        secret_scan.TOKENS.discard("eyJ.planted.token")
        secret_scan.CANARIES.clear()


def test_the_full_run_takes_the_slices_own_tests_from_the_slice() -> None:
    """The slice's tests are its paths' SQLite and store-less tests (not its PostgreSQL or
    Cosmos DB variants, not the slow files it leaves out, not other suites); each reports the
    slice's outcome, and one the slice did not run fails."""
    from types import SimpleNamespace

    here = Path(__file__).relative_to(ROOT).as_posix()
    assert f"{here}::{test_a_debug_run_of_the_suite_leaks_no_secret.__name__}" == HYGIENE

    def item(path: str, **params: object) -> Any:
        callspec = SimpleNamespace(params=params) if params else None
        return SimpleNamespace(path=ROOT / path, callspec=callspec, nodeid=f"{path}::t")

    assert run_by_the_slice(item("tests/rotation/test_ledger.py", ledger="sqlite"))
    assert run_by_the_slice(item("tests/cli/test_operator_errors.py", case=object()))
    assert run_by_the_slice(item("tests/unit/test_config.py"))
    assert not run_by_the_slice(item("tests/rotation/test_ledger.py", ledger="cosmos"))
    assert not run_by_the_slice(item("tests/console/test_console_api.py", seeded="postgres"))
    assert not run_by_the_slice(item("tests/rotation/test_kill_resume.py"))
    assert not run_by_the_slice(item("tests/reliability/test_races.py"))
    assert not run_by_the_slice(item("tests/contract/test_dek_store.py", store="sqlite"))

    shared = item("tests/unit/test_config.py")
    shared.config = SimpleNamespace(stash=pytest.Stash())
    with pytest.raises(pytest.fail.Exception, match="did not run this test"):
        _as_in_the_slice(shared)
    outcomes = shared.config.stash[OUTCOMES] = {}
    outcomes[shared.nodeid] = {"outcome": "passed", "detail": ""}
    _as_in_the_slice(shared)
    outcomes[shared.nodeid] = {"outcome": "skipped", "detail": "needs chromium"}
    with pytest.raises(pytest.skip.Exception, match="needs chromium"):
        _as_in_the_slice(shared)
    outcomes[shared.nodeid] = {"outcome": "failed", "detail": "[call] AssertionError: 1 == 2"}
    with pytest.raises(pytest.fail.Exception, match="AssertionError: 1 == 2"):
        _as_in_the_slice(shared)
