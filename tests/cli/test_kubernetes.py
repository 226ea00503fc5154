"""deploy/kubernetes: valid against the Kubernetes API schemas, hardened, and calling the CLI
the way docs/cli.md says (exit codes of the CronJob, worker numbering of the Indexed Job)."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.cli.main import _worker
from field_encrypt.rotation import load_policy
from notelett.routes import diagnostics
from tests.cli.test_docs import commands

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.30.0", "1.33.0")
"""The oldest Kubernetes these manifests support (backoffLimitPerIndex, podFailurePolicy)
and a current one."""


def documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(MANIFESTS.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind]
    return doc


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod template, by the kind that owns it."""
    return {
        "Deployment": by_kind("Deployment")["spec"]["template"],
        "CronJob": by_kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"],
        "Job": by_kind("Job")["spec"]["template"],
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_api_schema(version: str) -> None:
    """kubernetes-validate, strict (unknown fields refused), for each supported version."""
    docs = documents()
    assert {d["kind"] for d in docs} >= {
        "Deployment", "Service", "CronJob", "Job", "ServiceAccount", "ConfigMap",
    }  # fmt: skip
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {list(exc.path)} {exc.message}")


def test_pods_are_non_root_read_only_limited_and_use_workload_identity() -> None:
    """Each pod runs as non-root with a read-only root filesystem, no privilege escalation,
    no capabilities and resource limits, under a service account that carries a
    workload-identity client id, labelled to get the federated token; the service and the
    rotation jobs have different identities (the jobs may create key versions)."""
    accounts = {
        d["metadata"]["name"]: d["metadata"]["annotations"]["azure.workload.identity/client-id"]
        for d in documents()
        if d["kind"] == "ServiceAccount"
    }
    used = {owner: t["spec"]["serviceAccountName"] for owner, t in pod_specs().items()}
    assert used["Deployment"] != used["CronJob"] == used["Job"]
    assert len(set(accounts.values())) == len(accounts)
    for owner, template in pod_specs().items():
        spec = template["spec"]
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true", owner
        assert accounts[spec["serviceAccountName"]], owner
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (owner, container["name"])
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def test_notelett_probes_point_at_real_routes() -> None:
    """Liveness is /health and readiness the readiness check, both routes of the app."""
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/diagnostics/readiness"
    service = by_kind("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert container["ports"][0]["containerPort"] == 4016
    app_routes = {getattr(r, "path", None) for r in diagnostics.router.routes}
    assert {"/health", "/api/diagnostics/readiness", "/metrics"} <= app_routes


def _script(container: dict[str, Any]) -> str:
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    return str(script)


def _run(script: str, tmp_path: Path, code: int, **env: str) -> tuple[int, list[str]]:
    """Run ``script`` with a stand-in ``field-encrypt`` that logs its args and exits ``code``."""
    fake = tmp_path / "field-encrypt"
    log = tmp_path / "calls"
    log.unlink(missing_ok=True)
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {code}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, log.read_text().splitlines()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ExitCode.OK, 0),
        (ExitCode.WAITING, 0),
        (ExitCode.HALTED, 0),
        (ExitCode.ITEMS_FAILED, ExitCode.ITEMS_FAILED),
        (ExitCode.NOT_VERIFIED, ExitCode.NOT_VERIFIED),
        (ExitCode.UNAVAILABLE, ExitCode.UNAVAILABLE),
    ],
)
def test_the_cronjob_treats_waiting_and_halted_as_success(
    tmp_path: Path, code: int, expected: int
) -> None:
    """rotate's "nothing to do now" codes (8, 9) end the Job successfully; failures keep
    their code, and only 7 (unavailable, cursor saved) is left to the Job's retries."""
    (container,) = by_kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ]
    returned, calls = _run(_script(container), tmp_path, code)
    assert returned == expected
    assert calls[0].startswith("rotate --product notelett --policy ")
    rules = by_kind("CronJob")["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail_now = set(rules[0]["onExitCodes"]["values"])
    assert rules[0]["action"] == "FailJob" and ExitCode.UNAVAILABLE not in fail_now
    assert {ExitCode.WAITING, ExitCode.HALTED}.isdisjoint(fail_now)


def test_the_cronjob_policy_loads(tmp_path: Path) -> None:
    """The policy the CronJob mounts is a valid rotation policy."""
    path = tmp_path / "rotation-policy.toml"
    path.write_text(by_kind("ConfigMap")["data"]["rotation-policy.toml"])
    policy = load_policy(path)
    assert policy.max_age_days < 28 and not policy.stop


def test_each_index_of_the_job_runs_its_own_1_based_worker(tmp_path: Path) -> None:
    """JOB_COMPLETION_INDEX 0..N-1 becomes --worker 1/N..N/N, which the CLI accepts, with
    N equal to the Job's completions and parallelism."""
    job = by_kind("Job")["spec"]
    assert job["completionMode"] == "Indexed"
    count = job["completions"]
    assert job["parallelism"] == count
    (container,) = job["template"]["spec"]["containers"]
    workers = []
    for index in range(count):
        code, calls = _run(_script(container), tmp_path, 0, JOB_COMPLETION_INDEX=str(index))
        assert code == 0
        words = shlex.split(calls[0])
        workers.append(_worker(words[words.index("--worker") + 1]))
    assert workers == [(i, count) for i in range(count)]  # 0-based shards, each once


def test_every_cli_line_uses_real_commands_and_flags() -> None:
    """Each ``field-encrypt`` line of the manifests names a real command and its flags."""
    known = dict(commands())
    seen = 0
    for owner, template in pod_specs().items():
        if owner == "Deployment":  # notelett serve, no shell script
            continue
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for line in _script(container).replace("\\\n", " ").splitlines():
                if not line.strip().startswith(("field-encrypt ", "exec field-encrypt ")):
                    continue
                words = shlex.split(line.split("field-encrypt ", 1)[1].split(";")[0])
                seen += 1
                flags = {o for p in known[words[0]].params for o in p.opts}
                for word in words:
                    if word.startswith("--"):
                        assert word in flags, f"{word} is not a flag of {words[0]}"
    assert seen == 3  # backup, rotate, migrate
