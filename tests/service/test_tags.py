"""Encrypted tags with a blind index: ``GET /api/notes/?workspaceId=…&tag=…`` on every store.

Tags are sealed with the note's DEK like its title and body; each distinct tag also has a
blind-index value in the store's tag index, which the filter looks up (exact match after
the library's normalisation, workspace-scoped, paged with the usual cursors). No tag is
ever stored in plaintext; plaintext tags written before are sealed and indexed by the
``encrypt`` backfill.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import unicodedata
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from field_encrypt.index_keys import IndexKeyring
from field_encrypt.rotation import MigrationOptions, migrate, open_ledger
from field_encrypt.rotation.reindex import index_value_counts, retire_index_version
from notelett import NoteLettSettings
from notelett.backend import Backend
from notelett.repositories.base import NoteRecord
from tests.backends import BACKEND_KINDS
from tests.service.server import clean_environ

from .conftest import auth
from .test_uvicorn import server_env

pytestmark = pytest.mark.parametrize("store_kind", BACKEND_KINDS, indirect=True)

CreateNote = Callable[..., dict[str, Any]]
ROOT = Path(__file__).resolve().parents[2]


def tagged(
    client: TestClient, tag: str, *, workspace: str = "ws-a", user: str = "alice", **params: Any
) -> Any:
    return client.get(
        "/api/notes", params={"workspaceId": workspace, "tag": tag, **params}, headers=auth(user)
    )


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [n["id"] for n in response.json()["items"]]


def raw_database(backend: Backend) -> str:
    """Every row of every table (SQLite, PostgreSQL) or item of every container (Cosmos DB)
    of the product's database, as text: what someone reading the database sees."""
    database = backend.runtime.database
    kind = type(database).__name__
    if kind == "SqliteDatabase":
        tables = [t for (t,) in database.query("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(database.query(f'SELECT * FROM "{t}"')) for t in tables)
    if kind == "PostgresDatabase":
        tables = [
            t
            for (t,) in database.query(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        return "\n".join(repr(database.query(f'SELECT t::text FROM "{t}" t')) for t in tables)
    proxy = database.database
    return "\n".join(
        json.dumps(
            list(
                proxy.get_container_client(c["id"]).query_items(
                    "SELECT * FROM c", enable_cross_partition_query=True
                )
            )
        )
        for c in proxy.list_containers()
    )


def assert_nowhere(backend: Backend, needle: str) -> None:
    dump = raw_database(backend)
    assert needle not in dump
    assert needle.encode().hex() not in dump  # nor as the hex of a bytea or BLOB


def test_tag_filter_finds_exactly_the_tagged_notes(
    client: TestClient, create_note: CreateNote
) -> None:
    """Only notes carrying the tag come back, newest first, tags decrypted as written."""
    first = create_note(title="one", tags=["work", "urgent"])
    create_note(title="two", tags=["home"])
    create_note(title="three")
    third = create_note(title="four", tags=["misc", "work"])
    response = tagged(client, "work")
    assert ids(response) == [third["id"], first["id"]]
    body = response.json()
    assert body["nextCursor"] is None and body["errors"] == []
    assert body["items"][0]["tags"] == ["misc", "work"]
    assert set(body["items"][0]) == set(first)  # the same shape as without the filter
    assert ids(tagged(client, "urgent")) == [first["id"]]


def test_no_plaintext_tag_in_the_database(
    client: TestClient, create_note: CreateNote, backend: Backend
) -> None:
    """A tag is stored only as a token and an index value: neither the rows nor (SQLite)
    the database file and its WAL hold it."""
    needle = "needle-" + uuid.uuid4().hex[:12]
    note = create_note(tags=[needle, "other"])
    assert ids(tagged(client, needle)) == [note["id"]]
    assert_nowhere(backend, needle)
    database = backend.runtime.database
    if type(database).__name__ == "SqliteDatabase":
        path = Path(database.path)
        for file in path.parent.glob(path.name + "*"):
            assert needle.encode() not in file.read_bytes(), file


def test_another_workspaces_tag_does_not_leak(client: TestClient, create_note: CreateNote) -> None:
    """A tag used only in ws-b finds nothing in ws-a; ws-b stays hidden from a non-member."""
    theirs = create_note(user="bob", workspace="ws-b", tags=["secret-plan"])
    create_note(user="alice", workspace="ws-a", tags=["public"])
    assert ids(tagged(client, "secret-plan")) == []
    assert tagged(client, "secret-plan", workspace="ws-b").status_code == 404
    assert ids(tagged(client, "secret-plan", workspace="ws-b", user="carol")) == [theirs["id"]]
    assert ids(tagged(client, "public", workspace="ws-b", user="carol")) == []


def test_a_tag_no_note_has(client: TestClient, create_note: CreateNote) -> None:
    """An unknown tag answers an empty page, not an error."""
    create_note(tags=["work"])
    response = tagged(client, "nobody-uses-this")
    assert ids(response) == [] and response.json()["nextCursor"] is None


@pytest.mark.parametrize(
    "tag",
    [
        "' OR 1=1 --",
        "%",
        "*",
        "\x00",
        "bi1:1:AAAA",
        "fe1:AAAA",
        '{"$ne": null}',
        "\u202eevil",
        "x" * 64,
        "🏷️",
    ],
    ids=["sql", "percent", "star", "nul", "index-value", "token", "json", "bidi", "max", "emoji"],
)
def test_hostile_tags_are_just_tags(client: TestClient, create_note: CreateNote, tag: str) -> None:
    """Injection-shaped, control and maximal tags match only notes carrying exactly them."""
    create_note(tags=["work"])
    assert ids(tagged(client, tag)) == []
    if tag != "\x00":
        mine = create_note(tags=[tag])
        assert ids(tagged(client, tag)) == [mine["id"]]


@pytest.mark.parametrize(
    ("params", "status"),
    [({"tag": "x" * 65}, 422), ({"tag": ""}, 422), ({"tag": "x" * 10_000}, 422)],
    ids=["65-chars", "empty", "10k-chars"],
)
def test_bad_tag_values_are_a_clear_4xx(
    client: TestClient, params: dict[str, str], status: int
) -> None:
    """A tag longer than a stored tag may be, or empty, is refused with the error shape."""
    response = client.get("/api/notes", params={"workspaceId": "ws-a", **params}, headers=auth())
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_normalisation_as_the_library_documents(
    client: TestClient, create_note: CreateNote
) -> None:
    """NFC and surrounding spaces do not matter; case does."""
    cafe = create_note(tags=[unicodedata.normalize("NFD", "café")])
    spaced = create_note(tags=[" work "])
    assert ids(tagged(client, unicodedata.normalize("NFC", "café"))) == [cafe["id"]]
    assert ids(tagged(client, "work")) == [spaced["id"]]
    assert ids(tagged(client, "Work")) == []


def test_paging_across_many_matches(client: TestClient, create_note: CreateNote) -> None:
    """Cursors walk every match exactly once, newest first, and nothing else."""
    wanted = []
    for i in range(23):
        note = create_note(title=f"n{i}", tags=["many"] if i % 3 else ["many", "x"])
        wanted.append(note["id"])
        create_note(title=f"other{i}", tags=["few"])
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        response = tagged(client, "many", **params)
        seen += ids(response)
        cursor = response.json()["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(wanted))
    bad = tagged(client, "many", cursor="not-a-cursor")
    assert bad.status_code == 400


def test_updates_and_deletes_move_the_index(client: TestClient, create_note: CreateNote) -> None:
    """A replaced tag no longer finds the note, the new one does; a deleted note is gone."""
    note = create_note(tags=["before"])
    path = f"/api/notes/{note['id']}"
    replaced = client.put(
        path,
        json={"title": "t", "body": "b", "tags": ["after"]},
        headers={**auth(), "If-Match": f'"{note["revision"]}"'},
    )
    assert replaced.status_code == 200, replaced.text
    assert ids(tagged(client, "before")) == []
    assert ids(tagged(client, "after")) == [note["id"]]
    assert client.delete(path, headers=auth()).status_code == 204
    assert ids(tagged(client, "after")) == []


def test_lookups_span_both_versions_during_an_index_key_rotation(
    client: TestClient, create_note: CreateNote, backend: Backend
) -> None:
    """After ``index-keys create``, notes on v1 and on v2 are both found; after the reindex
    everything is on v2, still found, and v1 retires through the gate."""
    old = create_note(tags=["rotating"])
    keyring = IndexKeyring(
        product="notelett", provider=backend.provider, store=backend.runtime.dek_store
    )
    assert keyring.create_next() == 2
    backend.tags.refresh_seconds = 0  # re-open at once (the service does so every minute)
    new = create_note(tags=["rotating"])
    assert ids(tagged(client, "rotating")) == [new["id"], old["id"]]
    counts = index_value_counts(backend.runtime)["notes.tags"]
    assert counts == {"1": 1, "2": 1}
    report = migrate(
        backend.runtime, open_ledger(backend.runtime), MigrationOptions(mode="reindex")
    )
    assert report.status == "completed" and report.counters.failed == 0
    assert index_value_counts(backend.runtime)["notes.tags"] == {"2": 2}
    assert retire_index_version(backend.runtime, 1).version == 1
    assert ids(tagged(client, "rotating")) == [new["id"], old["id"]]
    assert client.get(f"/api/notes/{old['id']}", headers=auth()).json()["tags"] == ["rotating"]


def _legacy_notes(backend: Backend) -> list[str]:
    """Notes as an earlier release stored them: one all plaintext, one with an encrypted
    title and body but plaintext tags; neither has index values."""
    now = dt.datetime.now(dt.UTC)
    plain = NoteRecord(
        id=uuid.uuid4().hex,
        workspace_id="ws-a",
        title="old title",
        body="old body",
        tags=("legacy-tag-7f3a", "shared"),
        dek_id=None,
        revision=0,
        created_at=now,
        updated_at=now,
    )
    backend.notes.insert(plain)
    half_id = uuid.uuid4().hex
    dek_id = backend.encryptor.create_dek()
    sealed = backend.encryptor.encrypt_document(
        "notes", f"w1:ws-a/{half_id}", {"title": "half", "body": "sealed"}, dek_id=dek_id
    )
    half = dataclasses.replace(
        plain,
        id=half_id,
        title=sealed["title"],
        body=sealed["body"],
        tags=("legacy-tag-9c1e", "shared"),
        dek_id=dek_id,
        created_at=now + dt.timedelta(seconds=1),
        updated_at=now + dt.timedelta(seconds=1),
    )
    backend.notes.insert(half)
    return [half_id, plain.id]


def test_the_encrypt_backfill_seals_and_indexes_plaintext_tags(
    client: TestClient,
    backend: Backend,
    settings: NoteLettSettings,
) -> None:
    """``field-encrypt migrate --product notelett --mode encrypt`` on a database with
    plaintext tags: afterwards no tag is in plaintext, ``?tag=`` finds the notes, and the
    API returns their tags as they were."""
    half_id, plain_id = _legacy_notes(backend)
    assert "legacy-tag-7f3a" in raw_database(backend)
    assert index_value_counts(backend.runtime)["notes.tags"] == {"missing": 2}

    env = {
        **clean_environ(),
        **server_env(settings, backend),
        "FIELD_ENCRYPT_ALLOW_PLAINTEXT": "true",  # as a real backfill runs
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.launch", "field-encrypt", "migrate",
         "--product", "notelett", "--mode", "encrypt"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    for needle in ("legacy-tag-7f3a", "legacy-tag-9c1e", "shared"):
        assert_nowhere(backend, needle)
    assert index_value_counts(backend.runtime)["notes.tags"] == {"1": 4}  # values
    assert ids(tagged(client, "legacy-tag-7f3a")) == [plain_id]
    assert ids(tagged(client, "shared")) == [half_id, plain_id]
    got = client.get(f"/api/notes/{plain_id}", headers=auth()).json()
    assert (got["title"], got["tags"]) == ("old title", ["legacy-tag-7f3a", "shared"])
    assert client.get(f"/api/notes/{half_id}", headers=auth()).json()["tags"] == [
        "legacy-tag-9c1e",
        "shared",
    ]
