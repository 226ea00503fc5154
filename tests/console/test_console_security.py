"""How the console is secured: loopback by default, a token otherwise, read-only, strict headers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from field_encrypt.cli.console import is_loopback, read_token
from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.console.app import COOKIE, create_app
from field_encrypt.console.panels import Panels
from field_encrypt.errors import ConfigurationError
from field_encrypt.products import ProductRuntime
from tests.cli.helpers import PRODUCT, ROOT, cli
from tests.support.seed import seed

TOKEN = "t0ken-for-the-console-tests-0123456789"
ROUTES = ["/", "/api/versions", "/api/runs", "/api/gate", "/api/audit", "/api/rotation"]
STATIC = Path(__file__).resolve().parents[2] / "src/field_encrypt/console/static"


def test_without_a_token_only_loopback_host_names_are_answered(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """Host 127.0.0.1, localhost or [::1]: 200; any other Host header (DNS rebinding): 400."""
    app = create_app(Panels(runtime))
    assert TestClient(app, base_url="http://127.0.0.1:4017").get("/api/versions").status_code == 200
    assert TestClient(app, base_url="http://localhost:4017").get("/").status_code == 200
    assert TestClient(app, base_url="http://[::1]:4017").get("/").status_code == 200
    for evil in ("http://evil.example", "http://127.0.0.1.evil.example:4017"):
        refused = TestClient(app, base_url=evil).get("/api/versions")
        assert refused.status_code == 400 and "only requests addressed to" in refused.text


def test_with_a_token_every_request_must_present_it(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """401 without it or with a wrong one; Bearer works; /?token= sets a strict cookie."""
    client = TestClient(create_app(Panels(runtime), token=TOKEN), base_url="http://10.0.0.5")
    for path in [*ROUTES, "/static/console.js"]:
        assert client.get(path).status_code == 401, path
        wrong = client.get(path, headers={"authorization": "Bearer " + TOKEN[:-1] + "x"})
        assert wrong.status_code == 401, path
        right = client.get(path, headers={"authorization": "Bearer " + TOKEN})
        assert right.status_code == 200, path
    assert "401" in client.get("/").text and TOKEN not in client.get("/").text
    assert client.get("/?token=" + TOKEN[:-1]).status_code == 401
    first = client.get("/?token=" + TOKEN, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/runs").status_code == 200  # the cookie the redirect set
    fresh = TestClient(create_app(Panels(runtime), token=TOKEN), base_url="http://10.0.0.5")
    assert fresh.get("/api/runs", headers={"cookie": f"{COOKIE}={TOKEN}"}).status_code == 200
    assert fresh.get("/api/runs", headers={"cookie": f"{COOKIE}=nope"}).status_code == 401


def test_there_is_no_mutating_route(env: dict[str, str], runtime: ProductRuntime) -> None:
    """POST, PUT, PATCH and DELETE on every route and asset: 405, and nothing changed."""
    seed(runtime, 3)
    client = TestClient(create_app(Panels(runtime)), base_url="http://127.0.0.1")
    before = runtime.dek_store.count_by_version()
    for path in [*ROUTES, "/static/console.js"]:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert client.request(method, path).status_code == 405, (method, path)
    assert runtime.dek_store.count_by_version() == before


def test_security_headers_on_every_answer(env: dict[str, str], runtime: ProductRuntime) -> None:
    """A CSP with no inline script or style and no other origin; nosniff, no framing, no store."""
    client = TestClient(create_app(Panels(runtime)), base_url="http://127.0.0.1")
    for path in [*ROUTES, "/static/console.css", "/static/missing.js"]:
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp, path
        assert "unsafe-inline" not in csp and "http" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in csp
        assert headers["cache-control"] == "no-store"


def test_assets_are_the_package_s_own_with_no_inline_script(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """The page loads only /static/ assets (no CDN), has no inline script or style attribute,
    labels its filter controls, and the JS never assigns innerHTML."""
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/console.js" defer>']
    assert " style=" not in html and "<style" not in html
    for text in (html, (STATIC / "console.js").read_text(), (STATIC / "console.css").read_text()):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    for control in re.findall(r'<select id="([^"]+)"', html):
        assert f'<label for="{control}">' in html
    assert "innerHTML" not in (STATIC / "console.js").read_text()
    client = TestClient(create_app(Panels(runtime)), base_url="http://127.0.0.1")
    assert client.get("/static/console.js").headers["content-type"].startswith("text/javascript")


def test_loopback_names() -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; 0.0.0.0, a LAN address or a name are not."""
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "console.example"))


def test_a_token_is_read_from_its_file_or_the_environment(tmp_path: Path) -> None:
    """The file's first line, else FIELD_ENCRYPT_CONSOLE_TOKEN; a short one is refused."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token(path, {}) == TOKEN
    assert read_token(None, {"FIELD_ENCRYPT_CONSOLE_TOKEN": TOKEN}) == TOKEN
    assert read_token(None, {}) is None
    path.write_text("short")
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        read_token(path, {})
    with pytest.raises(ConfigurationError, match="cannot read --token-file"):
        read_token(tmp_path / "missing", {})


def test_a_non_loopback_bind_without_a_token_is_refused(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 3 naming the flag and the variable, before anything is opened or bound."""
    monkeypatch.delenv("FIELD_ENCRYPT_CONSOLE_TOKEN", raising=False)
    result = cli("console", "--product", PRODUCT, "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == ExitCode.CONFIG
    assert "needs a token (--token-file FILE or FIELD_ENCRYPT_CONSOLE_TOKEN)" in result.stderr
    assert not Path(env["FIELD_ENCRYPT_DATABASE"]).exists()


def test_a_port_in_use_is_a_configuration_error(env: dict[str, str]) -> None:
    """Exit 3 naming the address and what to do, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("console", "--product", PRODUCT, "--port", str(port))
    assert result.exit_code == ExitCode.CONFIG
    assert f"cannot bind 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


def test_the_command_serves_the_console_and_checks_the_token(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """``field-encrypt console --port 0 --token-file F`` prints its URL (never the token) and
    answers with the token only; Ctrl-C (SIGINT) stops it cleanly, exiting 130 as any
    process Ctrl-C stops."""
    seed(runtime, 2)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "field_encrypt.cli", "console", "--product", PRODUCT,
         "--port", "0", "--token-file", str(token_file)],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+/) \(read-only; token required", line)
        assert match, line
        url = match.group(1)
        assert httpx.get(url + "api/versions").status_code == 401
        answer = httpx.get(url + "api/versions", headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and answer.json()["total_deks"] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert TOKEN not in line + rest and "Traceback" not in rest
