"""docs/runbooks/mek-rotation.md, run end to end on the embedded default.

The blocks fenced as ``bash rehearsal`` are run in order, as one bash script with
``set -euo pipefail``, against a local keyring and a SQLite file in a temporary
directory: seed, backup, keys create, preflight, migrate rewrap-deks, verify, keys
retire (refused during the soak, then retired), read every document. The blocks fenced
as ``bash rehearsal-automated`` are the automated path and the compromise procedure, run
the same way on a fresh product: rotate to the soak, rotate to retired, the stop switch,
keys compromised --dek-exposed. Every other ``field-encrypt`` line in the runbook is
checked to name a real command with real flags.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from field_encrypt.backends.sqlite.lifecycle import SqliteLifecycleStore
from field_encrypt.config import load_settings
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import verify
from tests.cli.test_docs import commands
from tests.support.sample_product import product
from tests.support.seed import document, read_all

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbooks" / "mek-rotation.md"
FENCE = re.compile(r"^ *(?:> )?```([^\n]*)\n(.*?)^ *(?:> )?```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    """``(info string, body)`` of each fenced block, blockquote markers removed."""
    out = []
    for info, body in FENCE.findall(RUNBOOK.read_text()):
        lines = [re.sub(r"^ *> ?", "", line) for line in body.splitlines()]
        out.append((info.strip(), "\n".join(lines)))
    return out


def _rehearse(info: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """The blocks fenced ``bash INFO``, in order, as one script in ``directory``."""
    script = "\n".join(body for i, body in blocks() if i == f"bash {info}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELD_ENCRYPT_")} | {
        "REHEARSAL": str(directory),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _open(directory: Path) -> ProductRuntime:
    settings = load_settings(
        {
            "FIELD_ENCRYPT_KEY_PROVIDER": "local",
            "FIELD_ENCRYPT_KEYRING": str(directory / "keyring.json"),
            "FIELD_ENCRYPT_DATABASE": str(directory / "field-encrypt.db"),
        }
    )
    return product.open(settings)


def test_the_runbook_rehearsal_runs_end_to_end(tmp_path: Path) -> None:
    """Seed, create v2, preflight, rewrap, verify 0 off v2, retire v1: every document reads."""
    script = "\n".join(body for info, body in blocks() if info == "bash rehearsal")
    assert "migrate" in script and "keys retire 1" in script
    result = _rehearse("rehearsal", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak period passed" in result.stderr  # the gate refused first, naming why
    assert "200 documents read, 0 different" in result.stdout
    report = json.loads((tmp_path / "rewrap-report.json").read_text())
    assert (report["rewrapped"], report["failed"], report["remaining"]) == (200, 0, 0)
    runtime = _open(tmp_path)
    try:
        assert runtime.dek_store.count_by_version() == {"2": 200}
        assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
            ("1", False),
            ("2", True),
        ]
        assert verify(runtime, mek_version="2", sample=200).clean
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(200)}
    finally:
        runtime.close()


def test_the_automated_rehearsal_runs_end_to_end(tmp_path: Path) -> None:
    """rotate to the soak, rotate to retired, stop and resume, then compromise --dek-exposed."""
    result = _rehearse("rehearsal-automated", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for soak" in result.stdout and "rotation 1→2 complete" in result.stdout
    assert "halted at idle" in result.stdout
    assert "200 documents read, 0 different" in result.stdout
    runtime = _open(tmp_path)
    try:
        assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
            ("1", False),
            ("2", False),
            ("3", True),
        ]
        assert runtime.dek_store.count_by_version() == {"3": 200}
        notes = SqliteLifecycleStore(runtime.database).notes("sample")
        assert notes["1"].retired_at and not notes["1"].compromised
        assert notes["2"].compromised and notes["2"].dek_exposed and notes["2"].retired_at
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(200)}
        assert runtime.audit is not None and runtime.audit.verify().intact
        sunk = (tmp_path / "audit-events.jsonl").read_text().splitlines()
        assert [json.loads(line)["hash"] for line in sunk] == [
            e.hash for e in runtime.audit.events()
        ]
    finally:
        runtime.close()


def test_every_command_in_the_runbook_is_real() -> None:
    """Each field-encrypt / encrypt-migrate line names a real command and real flags."""
    known = dict(commands())
    migrate_flags = {o for p in known["migrate"].params for o in p.opts}
    seen = 0
    for _, body in blocks():
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[0] not in ("field-encrypt", "encrypt-migrate"):
                continue
            seen += 1
            if words[0] == "encrypt-migrate":
                name, flags = "migrate", migrate_flags
            else:
                group = " ".join(words[1:3])  # keys disable, audit list, index-keys create
                name = group if group in known else words[1]
                assert name in known, line
                flags = {o for p in known[name].params for o in p.opts}
            for word in words:
                if word.startswith("--"):
                    assert word in flags, f"{word} is not a flag of {name}: {line}"
    assert seen >= 15
