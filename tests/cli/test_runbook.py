"""docs/runbooks/mek-rotation.md, run end to end on every store.

The blocks fenced as ``bash rehearsal`` are run in order, as one bash script with
``set -euo pipefail``, against a local keyring and a SQLite file in a temporary
directory (the embedded default), and again on a fresh PostgreSQL database and a fresh
Cosmos DB database, chosen the way an operator chooses one: ``FIELD_ENCRYPT_DATABASE`` (and
``FIELD_ENCRYPT_COSMOS_KEY``) in the environment before the verbatim blocks. Seed, backup, keys create, preflight, migrate rewrap-deks, verify, keys
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
from collections.abc import Mapping
from pathlib import Path

import pytest

from field_encrypt.backends.registry import open_lifecycle_store
from field_encrypt.config import load_settings
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import verify
from tests.backends import backend_for
from tests.cli.test_docs import commands
from tests.support.fixtures import on_every_store
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


CLEAN_PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
"""The only thing the test gives the shell: the installed package's ``bin`` on ``PATH``."""


@pytest.fixture
def database(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """What the operator exports before the first block: nothing for the embedded default
    (the runbook's own SQLite file), else ``FIELD_ENCRYPT_DATABASE`` (and, for Cosmos DB,
    ``FIELD_ENCRYPT_COSMOS_KEY``) naming a fresh, empty database of ``store_kind``."""
    if store_kind == "sqlite":
        return {}
    return backend_for(store_kind, request, tmp_path / "server").environ


def _rehearse(
    info: str, directory: Path, database: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """The blocks fenced ``bash INFO``, in order and verbatim, as one script run by a clean
    ``bash`` in ``directory``: no ``PYTHONPATH``, no checkout on the import path, only
    ``PATH`` and the ``database`` variables (the runbook's own ``REHEARSAL`` default
    applies)."""
    script = "\n".join(body for i, body in blocks() if i == f"bash {info}")
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "set -euo pipefail\n" + script],
        cwd=directory,
        env={"PATH": CLEAN_PATH, "HOME": str(directory), "LANG": "C.UTF-8", **database},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _open(directory: Path, database: Mapping[str, str]) -> ProductRuntime:
    """The rehearsal's product as its blocks left it: their keyring, their database."""
    settings = load_settings(
        {
            "FIELD_ENCRYPT_KEY_PROVIDER": "local",
            "FIELD_ENCRYPT_KEYRING": str(directory / "keyring.json"),
            "FIELD_ENCRYPT_DATABASE": str(directory / "field-encrypt.db"),
            **database,
        }
    )
    return product.open(settings)


@on_every_store
def test_the_runbook_rehearsal_runs_end_to_end(tmp_path: Path, database: dict[str, str]) -> None:
    """Seed, create v2, preflight, rewrap, verify 0 off v2, retire v1; then the rollback
    section: garble 3 wraps and delete 2 rows, restore from section 1's backup (refused while
    v1 is retired, then repaired), rewrap, retire again; a rewrap to v3 killed with SIGKILL
    and resumed at once; three orphaned DEKs collected: every document reads."""
    script = "\n".join(body for info, body in blocks() if info == "bash rehearsal")
    assert "migrate" in script and "keys retire 1" in script
    result = _rehearse("rehearsal", tmp_path, database)
    tmp_path = tmp_path / "var" / "rehearsal"  # the runbook's own default for $REHEARSAL
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak period passed" in result.stderr  # the gate refused first, naming why
    # Rollback: 3 garbled wraps and 2 deleted rows, restored from section 1's backup.
    assert "200 documents read, 5 different" in result.stdout
    assert "restored 2 missing DEKs, repaired 0" in result.stdout
    assert "5 DEKs still do not unwrap" in result.stderr  # version 1 retired: exit 4
    assert "restored 0 missing DEKs, repaired 3" in result.stdout
    # A rewrap to version 3 killed after its first batch, resumed at once (same host).
    assert '"event": "lease_reclaimed"' in result.stderr
    # Three orphaned DEKs: a dry run names them, --delete deletes them, verify is clean.
    assert "dry run: 3 orphaned DEKs" in result.stdout
    assert "deleted 3 orphaned DEKs" in result.stdout
    assert "200 documents read, 0 different" in result.stdout
    report = json.loads((tmp_path / "rewrap-report.json").read_text())
    assert (report["rewrapped"], report["failed"], report["remaining"]) == (200, 0, 0)
    runtime = _open(tmp_path, database)
    try:
        assert runtime.dek_store.count_by_version() == {"3": 200}
        assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
            ("1", False),
            ("2", True),
            ("3", True),
        ]
        assert verify(runtime, mek_version="3", sample=200).clean
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(200)}
    finally:
        runtime.close()


@on_every_store
def test_the_automated_rehearsal_runs_end_to_end(tmp_path: Path, database: dict[str, str]) -> None:
    """rotate to the soak, rotate to retired, stop and resume, then compromise --dek-exposed."""
    result = _rehearse("rehearsal-automated", tmp_path, database)
    tmp_path = tmp_path / "var" / "rehearsal-automated"  # the runbook's default
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for soak" in result.stdout and "rotation 1→2 complete" in result.stdout
    assert "halted at idle" in result.stdout
    assert "200 documents read, 0 different" in result.stdout
    runtime = _open(tmp_path, database)
    try:
        assert [(v.version, v.enabled) for v in runtime.provider.versions()] == [
            ("1", False),
            ("2", False),
            ("3", True),
        ]
        assert runtime.dek_store.count_by_version() == {"3": 200}
        notes = open_lifecycle_store(runtime.database).notes("sample")
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
