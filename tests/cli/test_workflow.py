"""The scheduled-rotation workflow: OIDC without stored secrets, a schedule, and rotate.

The workflow file is parsed and checked for what makes it safe to run unattended; its
rotate step's script is run with a stand-in ``field-encrypt`` to check how it treats each
exit code (waiting and halted pass; a blocked stage fails the run).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
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
    """id-token: write for the job only; azure/login takes ids from repository variables;
    no secrets at all."""
    text = WORKFLOW.read_text()
    assert not re.search(r"secrets\.\w", text), "a stored secret is referenced"
    assert "client-secret" not in text and "creds:" not in text
    assert _workflow()["permissions"] == {}  # nothing at the workflow level
    (job,) = _workflow()["jobs"].values()
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    (login,) = [s for s in _steps() if str(s.get("uses", "")).startswith("azure/login@")]
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
    for value in login["with"].values():
        assert re.fullmatch(r"\$\{\{ vars\.[A-Z_]+ \}\}", value), value


def test_actions_are_pinned_by_commit_sha_and_checkout_keeps_no_credentials() -> None:
    """Each ``uses:`` names a full 40-hex commit with its tag in a comment; the checkout
    does not leave the token in .git/config."""
    lines = [line for line in WORKFLOW.read_text().splitlines() if "uses:" in line]
    assert len(lines) == 4
    for line in lines:
        assert re.search(r"uses: [\w-]+/[\w-]+@[0-9a-f]{40}\s+# v\d+\.\d+\.\d+$", line), line
    (checkout,) = [s for s in _steps() if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"]["persist-credentials"] is False


def test_long_rotations_authenticate_with_a_token_file_kept_fresh() -> None:
    """field-encrypt gets workload identity (client, tenant, token file) and the token file
    is started before any field-encrypt call, refreshed well within the SDK's 10-minute
    re-read and the token's life."""
    (job,) = _workflow()["jobs"].values()
    env = job["env"]
    assert env["AZURE_CLIENT_ID"] == "${{ vars.AZURE_CLIENT_ID }}"
    assert env["AZURE_TENANT_ID"] == "${{ vars.AZURE_TENANT_ID }}"
    assert env["AZURE_FEDERATED_TOKEN_FILE"]
    runs = [str(s.get("run", "")) for s in _steps()]
    first_token = next(i for i, r in enumerate(runs) if "scripts/github-oidc-token-file" in r)
    first_cli = next(i for i, r in enumerate(runs) if "field-encrypt " in r)
    assert first_token < first_cli
    interval = int(shlex.split(runs[first_token])[-1])
    assert 0 < interval <= 300


def test_the_token_file_script_fetches_then_refreshes_atomically(tmp_path: Path) -> None:
    """Against a local stand-in of GitHub's token endpoint: the first token is written
    before the script returns (mode 600), then replaced by newer ones in the background."""
    import http.server
    import threading
    import time

    served: list[str] = []

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert self.headers["Authorization"] == "bearer request-token"
            assert "audience=api://AzureADTokenExchange" in self.path
            served.append(f"jwt-{len(served) + 1}")
            body = json.dumps({"value": served[-1]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    env = {
        **os.environ,
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{server.server_port}/t?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
    }
    script = ROOT / "scripts" / "github-oidc-token-file"
    started = subprocess.run(
        [str(script), str(token), "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )
    try:
        assert started.returncode == 0, started.stderr
        assert token.read_text().strip() == "jwt-1"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        deadline = time.monotonic() + 20
        while token.read_text().strip() in ("", "jwt-1") and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the background refresher (interval 1 s)
        assert token.read_text().strip().startswith("jwt-") and len(served) >= 2
    finally:
        pid = int(started.stdout.rsplit("pid ", 1)[1].rstrip(")\n"))
        os.killpg(os.getpgid(pid), signal.SIGTERM)
        server.shutdown()
        server.server_close()


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
        name = words[1] if words[1] not in ("keys", "audit", "oncall") else " ".join(words[1:3])
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


@pytest.mark.parametrize(("second", "expected"), [(ExitCode.WAITING, 0), (ExitCode.UNAVAILABLE, 7)])
def test_a_rotate_that_stops_with_7_is_resumed_once_in_the_same_step(
    tmp_path: Path, second: int, expected: int
) -> None:
    """Exit 7 (cursor saved) runs rotate once more; that call's code decides the step."""
    (step,) = [s for s in _steps() if s.get("name") == "Rotate"]
    fake = tmp_path / "field-encrypt"
    log = tmp_path / "calls"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\ncase "$*" in *--status*) exit 0;; esac\n'
        f'[ "$(grep -c rotate {log})" -gt 1 ] && exit {second}\nexit 7\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "POLICY": "p.toml"}
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == expected, result.stdout + result.stderr
    calls = [c for c in log.read_text().splitlines() if "--status" not in c]
    assert calls == ["rotate --product notelett --policy p.toml"] * 2
