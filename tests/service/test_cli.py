"""The ``notelett`` command: token, seed and purge, on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from notelett import create_app
from notelett.cli import app

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory with no NoteLett or field-encrypt settings in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith(("NOTELETT_", "FIELD_ENCRYPT_")):
            monkeypatch.delenv(name)
    return tmp_path


def test_seed_fills_the_default_database_and_prints_a_working_token(workdir: Path) -> None:
    """With no settings at all, seed writes var/, and its token reads its sample note."""
    result = runner.invoke(app, ["seed", "--notes", "12", "--workspaces", "2"])
    assert result.exit_code == 0, result.output
    assert (workdir / "var" / "notelett.db").exists()
    assert (workdir / "var" / "keyring.json").exists()
    lines = result.output.splitlines()
    token = next(x for x in lines if x.startswith("token: ")).removeprefix("token: ")
    curl = next(x for x in lines if x.startswith("curl ") and "/api/notes/?" not in x)
    note_path = "/api/notes/" + curl.rsplit("/api/notes/", 1)[1]
    with TestClient(create_app()) as client:
        response = client.get(note_path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        listing = client.get(
            "/api/notes/",
            params={"workspaceId": "ws-2"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert len(listing.json()["items"]) == 6
    again = runner.invoke(app, ["seed", "--notes", "12", "--if-empty"])
    assert "seeded 0 notes" in again.output


def test_token_is_hs256_with_the_required_claims(workdir: Path) -> None:
    """``notelett token`` signs with the development secret, narrowing to --workspace."""
    result = runner.invoke(app, ["token", "--user", "u1", "--workspace", "ws-1", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "u1" and claims["workspaces"] == ["ws-1"]
    assert {"exp", "nbf", "iss", "aud", "iat"} <= set(claims)
    assert claims["exp"] - claims["nbf"] == 60
    assert (workdir / "var" / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_token_refuses_rs256_mode(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Development tokens cannot be minted when the service trusts an external IdP."""
    monkeypatch.setenv("NOTELETT_JWT_ALGORITHM", "RS256")
    result = runner.invoke(app, ["token", "--user", "u1"])
    assert result.exit_code != 0


def test_purge_reports_completed_deletes(workdir: Path) -> None:
    """``notelett purge`` runs on an empty database and says what it did."""
    result = runner.invoke(app, ["purge"])
    assert result.exit_code == 0, result.output
    assert "completed 0 interrupted deletes" in result.output


def test_rebind_reports_what_it_did(workdir: Path) -> None:
    """``notelett rebind`` on seeded notes (already bound) re-seals nothing and says so."""
    assert runner.invoke(app, ["seed", "--notes", "3", "--workspaces", "1"]).exit_code == 0
    result = runner.invoke(app, ["rebind", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "scanned 3 notes: would re-seal 0, already bound 3" in result.output
    result = runner.invoke(app, ["rebind"])
    assert result.exit_code == 0, result.output
    assert "re-sealed 0, already bound 3, plaintext 0, failed 0" in result.output


def test_every_command_is_documented() -> None:
    """docs/notelett.md names every CLI command (as sqlite-utils checks its own)."""
    doc = (Path(__file__).parents[2] / "docs" / "notelett.md").read_text()
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        assert f"notelett {name}" in doc, name
    for group in app.registered_groups:
        for command in group.typer_instance.registered_commands:
            assert f"notelett {group.name} {command.name}" in doc, (group.name, command.name)


def test_seed_with_the_kek_tier_on_a_fresh_database(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FIELD_ENCRYPT_KEY_LAYOUT=kek notelett seed`` on a fresh SQLite file creates its KEKs
    inside the seed's batch transaction (it failed with "cannot start a transaction within a
    transaction", 0 KEKs and 0 notes)."""
    monkeypatch.setenv("FIELD_ENCRYPT_KEY_LAYOUT", "kek")
    result = runner.invoke(app, ["seed", "--notes", "6", "--workspaces", "2"])
    assert result.exit_code == 0, result.output
    assert "seeded 6 notes" in result.output
    from field_encrypt.backends.sqlite.db import SqliteDatabase

    database = SqliteDatabase(workdir / "var" / "notelett.db", create=False)
    try:
        assert database.query("SELECT COUNT(*) FROM kek_store")[0][0] >= 1
    finally:
        database.close()
