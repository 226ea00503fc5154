"""The scheduled-rotation workflow: OIDC without stored secrets, a schedule, and rotate.

The workflow file is parsed and checked for what makes it safe to run unattended; its
rotate step's script is run with a stand-in ``field-encrypt`` to check how it treats each
exit code (waiting and halted pass; a blocked stage fails the run).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.rotation import load_policy
from tests.cli.test_docs import commands

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "mek-rotation.yml"


def _workflow() -> dict[Any, Any]:
    return dict(yaml.safe_load(WORKFLOW.read_text()))


def _steps() -> list[dict[str, Any]]:
    (job,) = _workflow()["jobs"].values()
    return list(job["steps"])


def test_credentials_are_federated_never_stored() -> None:
    """id-token: write; azure/login takes ids from repository variables; no secrets at all."""
    text = WORKFLOW.read_text()
    assert not re.search(r"secrets\.\w", text), "a stored secret is referenced"
    assert "client-secret" not in text and "creds:" not in text
    assert _workflow()["permissions"]["id-token"] == "write"
    (login,) = [s for s in _steps() if str(s.get("uses", "")).startswith("azure/login@")]
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
    for value in login["with"].values():
        assert re.fullmatch(r"\$\{\{ vars\.[A-Z_]+ \}\}", value), value


def test_scheduled_monthly_and_dispatchable() -> None:
    """A monthly cron starts rotations; follow-up days advance them; manual dispatch works."""
    triggers = _workflow()[True]  # YAML 1.1 reads the key `on` as true
    crons = [entry["cron"] for entry in triggers["schedule"]]
    assert any(c.split()[2:] == ["1", "*", "*"] for c in crons), crons
    assert "workflow_dispatch" in triggers
    assert _workflow()["concurrency"]["cancel-in-progress"] is False


def test_it_calls_rotate_for_notelett_with_real_flags_and_a_valid_policy() -> None:
    """Every field-encrypt line names a real command and flags; the policy file loads."""
    known = dict(commands())
    scripts = "\n".join(str(s.get("run", "")) for s in _steps())
    assert "field-encrypt rotate --product notelett" in scripts
    seen = 0
    for line in scripts.replace("\\\n", " ").splitlines():
        words = shlex.split(line.split(";;")[0], comments=True)
        if "field-encrypt" not in words:
            continue
        words = words[words.index("field-encrypt") :]
        seen += 1
        name = words[1] if words[1] not in ("keys", "audit") else " ".join(words[1:3])
        assert name in known, line
        flags = {o for p in known[name].params for o in p.opts}
        for word in words:
            if word.startswith("--"):
                assert word in flags, f"{word} is not a flag of {name}: {line}"
    assert seen >= 5
    (job,) = _workflow()["jobs"].values()
    policy = load_policy(ROOT / job["env"]["POLICY"])
    assert policy.max_age_days < 28 and not policy.stop


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ExitCode.OK, 0),
        (ExitCode.WAITING, 0),
        (ExitCode.HALTED, 0),
        (ExitCode.NOT_VERIFIED, ExitCode.NOT_VERIFIED),
        (ExitCode.REFUSED, ExitCode.REFUSED),
    ],
)
def test_the_rotate_step_passes_waiting_and_halted_and_fails_the_rest(
    tmp_path: Path, code: int, expected: int
) -> None:
    """Run the step's script against a stand-in field-encrypt that exits with ``code``."""
    (step,) = [s for s in _steps() if s.get("name") == "Rotate"]
    fake = tmp_path / "field-encrypt"
    log = tmp_path / "calls"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\ncase "$*" in *--status*) exit 0;; esac\nexit {code}\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "ACTION": "advance",
        "POLICY": "policy.toml",
    }
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == expected, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "rotate --product notelett --policy policy.toml"
    if expected == 0:
        assert calls[-1].endswith("--status")
