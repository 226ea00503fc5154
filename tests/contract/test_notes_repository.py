"""NoteLett's NotesRepository and WorkspaceDirectory contract, on SQLite, PostgreSQL, Cosmos DB."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError
from notelett.backend import _repositories
from notelett.errors import InvalidCursorError
from notelett.repositories.base import NoteRecord, NotesRepository, WorkspaceDirectory
from tests.backends import BACKEND_KINDS, backend_for


@pytest.fixture(params=BACKEND_KINDS)
def repos(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[NotesRepository, WorkspaceDirectory]]:
    from field_encrypt.backends.registry import database_kind, open_database

    backend = backend_for(request.param, request, tmp_path)
    database = open_database(backend.settings())
    notes, directory = _repositories(database, database_kind(backend.url))
    for workspace in ("ws-a", "ws-b"):
        directory.add_workspace(workspace, name=workspace)
    yield notes, directory
    database.close()


@pytest.fixture
def notes(repos: tuple[NotesRepository, WorkspaceDirectory]) -> NotesRepository:
    return repos[0]


_CLOCK = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]


def _note(workspace: str = "ws-a", **values: object) -> NoteRecord:
    _CLOCK[0] += dt.timedelta(milliseconds=1)
    fields: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "workspace_id": workspace,
        "title": b"\x01binary-token",
        "body": "text token or plaintext",
        "tags": ("a", "b"),
        "dek_id": "ab" * 16,
        "revision": 0,
        "created_at": _CLOCK[0],
        "updated_at": _CLOCK[0],
    }
    fields.update(values)
    return NoteRecord(**fields)  # type: ignore[arg-type]


def test_implements_the_protocols(repos: tuple[NotesRepository, WorkspaceDirectory]) -> None:
    """Both objects satisfy the runtime-checkable protocols."""
    assert isinstance(repos[0], NotesRepository)
    assert isinstance(repos[1], WorkspaceDirectory)


@pytest.mark.parametrize("title", [b"\x00\xffbinary", "text", None])
def test_stored_values_round_trip(notes: NotesRepository, title: bytes | str | None) -> None:
    """A binary token, a text value and a null each read back as they were written."""
    inserted = notes.insert(_note(title=title))
    got = notes.get(inserted.id)
    assert got.title == title and type(got.title) is type(title)
    assert (got.body, got.tags, got.dek_id, got.revision) == (
        inserted.body,
        ("a", "b"),
        "ab" * 16,
        1,
    )
    assert got.created_at == inserted.created_at


def test_insert_twice_is_refused(notes: NotesRepository) -> None:
    """A note id is unique."""
    note = notes.insert(_note())
    with pytest.raises(AlreadyExistsError):
        notes.insert(dataclasses.replace(note, workspace_id="ws-b"))


def test_replace_is_compare_and_swap(notes: NotesRepository) -> None:
    """Only the expected revision may be replaced; the stale writer gets ConcurrentUpdateError."""
    note = notes.insert(_note())
    later = note.updated_at + dt.timedelta(seconds=1)
    updated = notes.replace(
        note.id,
        expected_revision=1,
        title="t2",
        body=b"b2",
        tags=("x",),
        dek_id=None,
        updated_at=later,
    )
    assert (updated.revision, updated.title, updated.body, updated.tags) == (2, "t2", b"b2", ("x",))
    assert notes.get(note.id) == updated
    with pytest.raises(ConcurrentUpdateError):
        notes.replace(
            note.id,
            expected_revision=1,
            title="t3",
            body="b3",
            tags=(),
            dek_id=None,
            updated_at=later,
        )
    with pytest.raises(NotFoundError):
        notes.replace(
            "missing",
            expected_revision=1,
            title="t",
            body="b",
            tags=(),
            dek_id=None,
            updated_at=later,
        )


def test_a_delete_hides_the_note_until_it_is_removed(notes: NotesRepository) -> None:
    """mark_deleting hides a note from reads and scans (once: a second mark is NotFoundError);
    pending_deletes finds it; remove drops it."""
    note = notes.insert(_note())
    with pytest.raises(ConcurrentUpdateError):
        notes.mark_deleting(note.id, expected_revision=7)
    marked = notes.mark_deleting(note.id, expected_revision=1)
    assert marked.deleting
    with pytest.raises(NotFoundError):  # compare-and-swap: a second delete does not win too
        notes.mark_deleting(note.id, expected_revision=None)
    with pytest.raises(NotFoundError):
        notes.get(note.id)
    assert notes.count() == 0
    assert notes.scan(cursor=None, limit=10, shard=None).notes == []
    assert [n.id for n in notes.pending_deletes(limit=10)] == [note.id]
    assert notes.remove(note.id) is True
    assert notes.remove(note.id) is False
    assert notes.pending_deletes(limit=10) == []
    with pytest.raises(NotFoundError):
        notes.mark_deleting(note.id, expected_revision=None)


def test_listing_is_newest_first_in_keyset_pages(notes: NotesRepository) -> None:
    """A workspace's notes come newest first, page by page, without the other workspace's."""
    mine = [notes.insert(_note()).id for _ in range(7)]
    notes.insert(_note("ws-b"))
    seen: list[str] = []
    cursor = None
    while True:
        page = notes.list_workspace("ws-a", cursor=cursor, limit=3)
        seen += [n.id for n in page.notes]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == list(reversed(mine))


def test_a_forged_cursor_is_refused(notes: NotesRepository) -> None:
    """A cursor this repository did not issue raises InvalidCursorError."""
    with pytest.raises(InvalidCursorError):
        notes.list_workspace("ws-a", cursor="'; DROP TABLE notes; --", limit=3)


def test_scan_shards_cover_every_live_note_once(notes: NotesRepository) -> None:
    """Shards of a scan are disjoint, skip notes being deleted, and together hold every note."""
    ids = {notes.insert(_note(("ws-a", "ws-b")[i % 2])).id for i in range(24)}
    gone = notes.insert(_note())
    notes.mark_deleting(gone.id, expected_revision=None)
    parts = []
    for index in range(3):
        found: list[str] = []
        cursor = None
        while True:
            page = notes.scan(cursor=cursor, limit=4, shard=(index, 3))
            found += [n.id for n in page.notes]
            if page.cursor is None:
                break
            cursor = page.cursor
        parts.append(found)
    assert sorted(i for part in parts for i in part) == sorted(ids)
    assert notes.count() == 24


def test_directory_memberships(repos: tuple[NotesRepository, WorkspaceDirectory]) -> None:
    """Membership is per user and workspace; adding twice is a no-op; odd ids are fine."""
    directory = repos[1]
    user = "auth0|team/alice?#"
    directory.add_user(user, name="Alice")
    directory.add_user(user, name="Alice again")
    assert not directory.is_member(user, "ws-a")
    directory.add_member(user, "ws-a")
    directory.add_member(user, "ws-a")
    assert directory.is_member(user, "ws-a")
    assert not directory.is_member(user, "ws-b")
    assert not directory.is_member("nobody", "ws-a")


def test_a_fresh_store_takes_the_write_probe_again_and_again(notes: NotesRepository) -> None:
    """check_writable (readiness' write probe) succeeds on a healthy store, repeatedly, and
    leaves no note behind."""
    for _ in range(3):
        notes.check_writable()
    assert notes.count() == 0


def _tagged(notes: NotesRepository, workspace: str, *values: str, **page: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        found = notes.list_tagged(
            workspace, list(values), cursor=cursor, limit=page.get("limit", 2)
        )
        ids += [n.id for n in found.notes]
        if found.cursor is None:
            return ids
        cursor = found.cursor


def test_list_tagged_pages_a_workspaces_notes_holding_any_index_value(
    notes: NotesRepository,
) -> None:
    """Newest first, across pages, in one workspace, any of the values (two index-key
    versions during a rotation), a sealed tags token stored as it is."""
    a1 = notes.insert(_note(tags=b"\x01sealed", tag_index=("bi1:1:AA", "bi1:1:BB")))
    notes.insert(_note(tag_index=("bi1:1:CC",)))
    a3 = notes.insert(_note(tag_index=("bi1:2:AA",)))
    a4 = notes.insert(_note(tag_index=("bi1:1:AA",)))
    notes.insert(_note("ws-b", tag_index=("bi1:1:AA",)))
    assert _tagged(notes, "ws-a", "bi1:1:AA") == [a4.id, a1.id]
    assert _tagged(notes, "ws-a", "bi1:1:AA", "bi1:2:AA") == [a4.id, a3.id, a1.id]
    assert _tagged(notes, "ws-a", "bi1:1:ZZ") == []
    assert _tagged(notes, "ws-a") == []
    got = notes.get(a1.id)
    assert got.tags == b"\x01sealed" and got.tag_index == ("bi1:1:AA", "bi1:1:BB")


def test_replace_moves_the_tag_index_and_deletes_hide_it(notes: NotesRepository) -> None:
    """``tag_index=None`` keeps the values, a tuple replaces them; a note being deleted or
    removed is not found by tag."""
    note = notes.insert(_note(tag_index=("bi1:1:AA",)))

    def replace(revision: int, tag_index: tuple[str, ...] | None) -> None:
        notes.replace(
            note.id,
            expected_revision=revision,
            title="t",
            body="b",
            tags=b"\x01sealed",
            dek_id=None,
            updated_at=note.updated_at,
            tag_index=tag_index,
        )

    replace(1, None)
    assert _tagged(notes, "ws-a", "bi1:1:AA") == [note.id]
    replace(2, ("bi1:1:BB",))
    assert _tagged(notes, "ws-a", "bi1:1:AA") == []
    assert _tagged(notes, "ws-a", "bi1:1:BB") == [note.id]
    notes.mark_deleting(note.id, expected_revision=None)
    assert _tagged(notes, "ws-a", "bi1:1:BB") == []
    notes.remove(note.id)
    again = notes.insert(dataclasses.replace(note, id=uuid.uuid4().hex, tag_index=None))
    assert _tagged(notes, "ws-a", "bi1:1:BB") == []
    assert notes.get(again.id).tag_index in ((), None)
