"""Secrets and the files that hold them: weak secrets refused at start-up (unless in
development mode), private files only, a database created 0600, NumericDate claims."""

from __future__ import annotations

import datetime as dt
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

import field_encrypt
from notelett import NoteLettSettings, create_app
from notelett.backend import Backend, open_backend
from notelett.secret_checks import is_weak

from .conftest import auth, make_token
from .server import clean_environ

WEAK = [" " * 32, "changeme" * 4, "a" * 32, "secret" * 6, "0123" * 10, "aAbB" * 10]


@pytest.mark.parametrize("weak", WEAK, ids=["spaces", "changeme", "a", "secret", "0123", "aAbB"])
def test_a_weak_jwt_secret_is_refused_at_start_up(
    settings: NoteLettSettings, backend: Backend, weak: str
) -> None:
    """A known default, a repeated pattern or a low-variety secret fails start-up, and the
    message names the setting and the fix, never the secret."""
    bad = settings.model_copy(update={"jwt_secret": SecretStr(weak)})
    with pytest.raises(field_encrypt.ConfigurationError) as caught:
        create_app(bad, backend=backend)
    message = str(caught.value)
    assert "NOTELETT_JWT_SECRET" in message and "token_urlsafe" in message
    assert weak not in message


def test_development_mode_accepts_a_weak_secret(
    settings: NoteLettSettings, backend: Backend
) -> None:
    """NOTELETT_DEV_MODE=true lets a throwaway setup start with a weak (>= 32 byte) secret."""
    dev = settings.model_copy(update={"jwt_secret": SecretStr("changeme" * 4), "dev_mode": True})
    with TestClient(create_app(dev, backend=backend)) as client:
        token = make_token(key="changeme" * 4)
        listing = client.get(
            "/api/notes?workspaceId=ws-a", headers={"Authorization": f"Bearer {token}"}
        )
        assert listing.status_code == 200
    short = dev.model_copy(update={"jwt_secret": SecretStr("changeme")})
    with pytest.raises(field_encrypt.ConfigurationError):
        create_app(short, backend=backend)


def test_random_secrets_pass_the_check() -> None:
    """Secrets generated the documented way (and 32 hex digits) are never called weak."""
    import secrets

    for _ in range(200):
        assert not is_weak(secrets.token_urlsafe(32).encode())
        assert not is_weak(secrets.token_hex(16).encode())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_weak_secret_stops_notelett_serve_with_a_message(tmp_path: Path) -> None:
    """`notelett serve` with 32 spaces as its secret exits non-zero, naming the setting."""
    env = {
        **clean_environ(),
        "NOTELETT_JWT_SECRET": " " * 32,
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
        "NOTELETT_DATABASE": str(tmp_path / "n.db"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "notelett", "serve", "--port", str(_free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode != 0
    assert "NOTELETT_JWT_SECRET is too weak" in output
    assert "Traceback" not in output


def test_a_secret_file_others_can_read_is_refused(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path
) -> None:
    """A 0644 HS256 secret file fails start-up with the chmod that fixes it; 0600 starts."""
    path = tmp_path / "jwt-secret"
    path.write_text("9f3c1a7e5b2d4f608e1c3a5b7d9f0e2c4a6b8d0f1e3c5a7b\n")
    from_file = settings.model_copy(update={"jwt_secret": None, "jwt_secret_file": path})
    path.chmod(0o644)
    with pytest.raises(field_encrypt.ConfigurationError, match=r"chmod 600 .*jwt-secret"):
        create_app(from_file, backend=backend)
    path.chmod(0o600)
    create_app(from_file, backend=backend)


def test_a_keyring_others_can_read_is_refused(
    settings: NoteLettSettings, encryption: field_encrypt.Settings
) -> None:
    """A world-readable local keyring stops NoteLett from opening; 0600 opens."""
    open_backend(encryption, settings).close()  # creates the keyring
    encryption.keyring.chmod(0o644)
    with pytest.raises(
        field_encrypt.ConfigurationError, match=r"FIELD_ENCRYPT_KEYRING .*chmod 600"
    ):
        open_backend(encryption, settings)
    encryption.keyring.chmod(0o600)
    open_backend(encryption, settings).close()


def test_the_database_and_its_wal_and_shm_are_created_0600(
    settings: NoteLettSettings, encryption: field_encrypt.Settings, tmp_path: Path
) -> None:
    """notelett.db, -wal and -shm hold wrapped DEKs and ids: only their owner may read them."""
    old = os.umask(0o022)
    try:
        opened = open_backend(encryption, settings)
        opened.directory.add_workspace("ws-x", name="X")
        paths = [Path(str(settings.database) + suffix) for suffix in ("", "-wal", "-shm")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}
        opened.close()
    finally:
        os.umask(old)
    assert modes == {p.name: 0o600 for p in paths}


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_numeric_string_date_claim_is_refused(client: TestClient, claim: str) -> None:
    """exp, nbf and iat must be JSON numbers: the same value as a string answers 401."""
    now = dt.datetime.now(dt.UTC).timestamp()
    value = {"exp": now + 300, "nbf": now - 5, "iat": now}[claim]
    as_number = {"Authorization": f"Bearer {make_token(**{claim: int(value)})}"}
    as_string = {"Authorization": f"Bearer {make_token(**{claim: str(int(value))})}"}
    path = "/api/notes?workspaceId=ws-a"
    assert client.get(path, headers=as_number).status_code == 200
    refused = client.get(path, headers=as_string)
    assert refused.status_code == 401
    assert client.get(path, headers=auth()).status_code == 200
