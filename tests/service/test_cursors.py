"""Listing cursors are opaque and authenticated: only cursors this service issued, for
this workspace, are accepted; anything else is a 400 in the service's error shape."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from notelett.cursors import TAG_BYTES, VERSION, CursorCodec
from notelett.errors import InvalidCursorError
from tests.support.fixtures import on_every_store

from .conftest import auth


def _page(client: TestClient, cursor: str | None, workspace: str = "ws-a", user: str = "carol"):
    params: dict[str, Any] = {"workspaceId": workspace, "limit": 1}
    if cursor is not None:
        params["cursor"] = cursor
    return client.get("/api/notes", params=params, headers=auth(user))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _b64(b"n1:99999999999999999999999"),
        _b64(b"n1:1"),
        _b64(VERSION + b"\0" * TAG_BYTES + b"1"),
        _b64(VERSION + b"\0" * TAG_BYTES + b"9" * 23),
        _b64(VERSION),
        "n1:99999999999999999999999",
        "%%%",
        "A" * 500,
    ],
    ids=[
        "old-form overflow",
        "old-form",
        "zero tag",
        "zero tag overflow",
        "empty",
        "raw",
        "junk",
        "long",
    ],
)
def test_forged_malformed_or_overflowing_cursors_answer_400(
    client: TestClient, create_note: Any, cursor: str
) -> None:
    """A cursor the service did not issue is refused with 400 invalid_cursor, never a 500."""
    create_note()
    response = _page(client, cursor)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {"code": "invalid_cursor", "message": "the cursor is not valid"}
    }


@on_every_store
def test_an_issued_cursor_pages_on_and_every_altered_byte_is_refused(
    client: TestClient, create_note: Any
) -> None:
    """The issued cursor continues the listing; flipping any single byte of it is a 400."""
    ids = {create_note(title=str(i))["id"] for i in range(3)}
    first = _page(client, None).json()
    cursor = first["nextCursor"]
    second = _page(client, cursor)
    assert second.status_code == 200
    assert {first["items"][0]["id"], second.json()["items"][0]["id"]} <= ids
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        assert _page(client, _b64(bytes(flipped))).status_code == 400, i


@on_every_store
def test_a_cursor_of_one_workspace_is_refused_for_another(
    client: TestClient, create_note: Any
) -> None:
    """The workspace is bound into the cursor's tag."""
    for workspace in ("ws-a", "ws-b"):
        for i in range(2):
            create_note(user="carol", workspace=workspace, title=str(i))
    cursor = _page(client, None, "ws-a").json()["nextCursor"]
    assert _page(client, cursor, "ws-a").status_code == 200
    refused = _page(client, cursor, "ws-b")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_cursor"


def test_a_cursor_of_another_key_is_refused() -> None:
    """Two codecs under different secrets do not accept each other's cursors."""
    ours = CursorCodec.from_secret(b"k" * 32 + b"1")
    theirs = CursorCodec.from_secret(b"k" * 32 + b"2")
    issued = theirs.encode("ws-a", "12")
    assert theirs.decode("ws-a", issued) == "12"
    with pytest.raises(InvalidCursorError):
        ours.decode("ws-a", issued)
    assert "k" not in repr(ours)
