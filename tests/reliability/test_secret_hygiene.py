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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_a_debug_run_of_the_suite_leaks_no_secret(tmp_path: Path) -> None:
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
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(report_path.read_text())
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
