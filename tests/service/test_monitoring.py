"""The alert rules and the dashboard, against the real promtool and a real Prometheus.

``promtool test rules`` runs the rules' unit tests (deploy/prometheus/alerts_test.yml).
Then a real Prometheus (Debian's binary, its config in tmp_path, a one-second scrape
interval) scrapes a real NoteLett process and a real Pushgateway that a real
``field-encrypt rotate`` pushed to; every rule must evaluate without error, every metric
a rule names must exist, and every dashboard query must return data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from field_encrypt.config import load_settings
from notelett import NoteLettSettings
from notelett.backend import Backend
from tests.cli.helpers import PRODUCT, cli_process
from tests.support.sample_product import product
from tests.support.seed import seed

from .conftest import auth
from .server import free_port, start_server
from .test_uvicorn import server_env

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "field-encrypt.json"
METRIC = re.compile(r"\b((?:field_encrypt|notelett)[a-zA-Z0-9_:]*)")


def tool(name: str) -> str:
    """The path of a Debian binary that scripts/install-system-deps installs."""
    path = shutil.which(name)
    assert path is not None, f"{name} is missing: run scripts/install-system-deps"
    return path


def rules() -> list[dict[str, Any]]:
    """Every rule (alerting and recording) in alerts.yml."""
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every query of the dashboard, with ``$product`` meaning all products."""
    doc = json.loads(DASHBOARD.read_text())
    return [
        target["expr"].replace("$product", ".*")
        for panel in doc["panels"]
        for target in panel["targets"]
    ]


def test_alert_rules_pass_promtool_and_every_alert_has_a_firing_case() -> None:
    """``promtool check rules`` and ``promtool test rules`` pass, and each alert is shown
    firing at least once in the rule tests."""
    promtool = tool("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in cases
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts <= firing, f"alerts without a firing test: {sorted(alerts - firing)}"


class Process:
    """A server binary started for the test, stopped at the end."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def wait_ready(url: str, process: Process, deadline: float) -> None:
    """Poll a starting server's readiness endpoint until it answers 200."""
    while time.monotonic() < deadline:
        assert process.process.poll() is None, process.log.read_text(errors="replace")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a starting process
    raise AssertionError(f"{url} not ready:\n{process.log.read_text(errors='replace')}")


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def rotation_pushed_to(gateway: str, tmp_path: Path) -> None:
    """A real ``field-encrypt rotate`` on the sample product that pushes to ``gateway``:
    it rewraps 20 DEKs onto a new version and stops at the soak (exit 8)."""
    home = tmp_path / "rotation"
    home.mkdir()
    env = {
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(home / "keyring.json"),
        "FIELD_ENCRYPT_DATABASE": str(home / "fe.db"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }
    runtime = product.open(load_settings(env))
    seed(runtime, 20)
    runtime.close()
    backup = cli_process("backup", "--product", PRODUCT, "--out", str(home / "backup"), env=env)
    assert backup.returncode == 0, backup.stderr
    rotate = cli_process(
        "rotate", "--product", PRODUCT, "--max-age-days", "0", "--metrics-pushgateway", gateway,
        env=env,
    )  # fmt: skip
    assert rotate.returncode == 8, rotate.stdout + rotate.stderr


@pytest.mark.slow
def test_prometheus_evaluates_every_rule_and_dashboard_query_against_real_targets(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path, processes: list[Process]
) -> None:
    """Every rule evaluates without error and finds each metric it names; every dashboard
    query returns data, from NoteLett's /metrics and a rotation's pushed metrics."""
    deadline = time.monotonic() + 60
    gateway_port, prometheus_port = free_port(), free_port()
    gateway = Process(
        [tool("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{gateway_port}"],
        tmp_path / "pushgateway.log",
    )
    processes.append(gateway)
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    wait_ready(gateway_url + "/-/ready", gateway, deadline)
    rotation_pushed_to(gateway_url, tmp_path)

    server = start_server(server_env(settings, backend), workdir=tmp_path)
    try:
        with httpx.Client(base_url=server.base_url, headers=auth("alice"), timeout=10) as http:
            created = http.post(
                "/api/notes", json={"workspaceId": "ws-a", "title": "t", "body": "b"}
            )
            assert created.status_code == 201, created.text
            assert http.get(f"/api/notes/{created.json()['id']}").status_code == 200

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "notelett",
                    "static_configs": [{"targets": [server.base_url.removeprefix("http://")]}],
                },
                {
                    "job_name": "pushgateway",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}],
                },
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = Process(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            tmp_path / "prometheus.log",
        )
        processes.append(prometheus)
        api = f"http://127.0.0.1:{prometheus_port}/api/v1"
        wait_ready(f"http://127.0.0.1:{prometheus_port}/-/ready", prometheus, deadline)

        def query(expr: str) -> list[Any]:
            answer = httpx.get(api + "/query", params={"query": expr}, timeout=10).json()
            assert answer["status"] == "success", (expr, answer)
            return list(answer["data"]["result"])

        names = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
        pending = set(dashboard_queries()) | {f"count({{__name__={n!r}}})" for n in names}
        while pending and time.monotonic() < deadline:  # rates need two scrapes, rules a cycle
            pending = {expr for expr in pending if not query(expr)}
            if pending:
                time.sleep(0.5)  # polling Prometheus until its scrapes and rules come in
        assert not pending, f"no data for: {sorted(pending)}"
        for rule in rules():
            query(rule["expr"])  # parses and evaluates
        groups = httpx.get(api + "/rules", timeout=10).json()["data"]["groups"]
        unhealthy = [
            (r["name"], r.get("lastError"))
            for g in groups
            for r in g["rules"]
            if r["health"] != "ok"
        ]
        assert not unhealthy and len([r for g in groups for r in g["rules"]]) == len(rules())
    finally:
        server.stop()
