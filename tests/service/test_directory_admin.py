"""Workspace and membership administration: the directory's methods on every backend, the
``notelett workspaces|members`` commands, and revocation on the member's next request."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import field_encrypt
from notelett import NoteLettSettings
from notelett.backend import Backend
from notelett.cli import app as cli
from notelett.repositories.base import Workspace
from tests.backends import BACKEND_KINDS

from .conftest import auth
from .server import clean_environ

runner = CliRunner()


@pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)
def test_the_directory_lists_and_removes_members_on_every_backend(backend: Backend) -> None:
    """list_workspaces, list_members and remove_member agree with add_* on every store."""
    directory = backend.directory
    directory.add_workspace("ws-c", name="C")
    assert Workspace(id="ws-c", name="C") in directory.list_workspaces()
    assert [w.id for w in directory.list_workspaces()] == sorted(
        w.id for w in directory.list_workspaces()
    )
    assert directory.list_members("ws-a") == ["alice", "carol"]
    assert directory.remove_member("alice", "ws-a") is True
    assert directory.remove_member("alice", "ws-a") is False
    assert directory.list_members("ws-a") == ["carol"]
    assert not directory.is_member("alice", "ws-a")
    assert directory.list_members("ws-c") == []


@pytest.fixture
def cli_env(settings: NoteLettSettings, encryption: field_encrypt.Settings) -> dict[str, str]:
    """The environment that points the CLI at the test's database and keyring."""
    return {
        **clean_environ(),
        "NOTELETT_DATABASE": str(settings.database),
        "FIELD_ENCRYPT_KEYRING": str(encryption.keyring),
        "FIELD_ENCRYPT_MEK_NAME": encryption.mek_name,
    }


def _run(env: dict[str, str], *args: str) -> Any:
    return runner.invoke(cli, list(args), env=env)


def test_workspace_and_member_commands(backend: Backend, cli_env: dict[str, str]) -> None:
    """create, list, add, remove: each changes the directory; mistakes exit 1 and say so."""
    assert _run(cli_env, "workspaces", "create", "ws-new", "--name", "New").exit_code == 0
    listed = _run(cli_env, "workspaces", "list")
    assert listed.exit_code == 0 and "ws-new\tNew" in listed.output.splitlines()
    assert _run(cli_env, "members", "add", "dave", "ws-new").exit_code == 0
    assert backend.directory.is_member("dave", "ws-new")
    assert _run(cli_env, "members", "list", "ws-new").output.splitlines() == ["dave"]
    assert _run(cli_env, "members", "remove", "dave", "ws-new").exit_code == 0
    assert not backend.directory.is_member("dave", "ws-new")
    again = _run(cli_env, "members", "remove", "dave", "ws-new")
    assert again.exit_code == 1 and "not a member" in again.output
    missing = _run(cli_env, "members", "add", "dave", "ws-none")
    assert missing.exit_code == 1 and "notelett workspaces create" in missing.output
    assert "Traceback" not in missing.output


def test_removing_a_member_revokes_access_on_the_next_request(
    client: TestClient, create_note: Any, cli_env: dict[str, str]
) -> None:
    """After `notelett members remove`, the same token reads, lists and writes nothing in
    the workspace; `members add` gives access back."""
    note = create_note(user="alice", workspace="ws-a")
    path = f"/api/notes/{note['id']}"
    assert client.get(path, headers=auth("alice")).status_code == 200
    assert _run(cli_env, "members", "remove", "alice", "ws-a").exit_code == 0
    assert client.get(path, headers=auth("alice")).status_code == 404
    listing = client.get("/api/notes", params={"workspaceId": "ws-a"}, headers=auth("alice"))
    assert listing.status_code == 404
    write = client.post(
        "/api/notes",
        json={"workspaceId": "ws-a", "title": "t", "body": "b"},
        headers=auth("alice"),
    )
    assert write.status_code == 404
    assert client.get(path, headers=auth("carol")).status_code == 200
    assert _run(cli_env, "members", "add", "alice", "ws-a").exit_code == 0
    assert client.get(path, headers=auth("alice")).status_code == 200
