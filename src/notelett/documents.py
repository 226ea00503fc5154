"""The notes collection as a field-encrypt :class:`DocumentStore`, for the rotation tools.

Built on :class:`NotesRepository`, so every notes backend gets it for free. Notes being
deleted are invisible here too: a re-encrypt never resurrects one, and ``verify`` never
counts a note whose DEK was shredded on purpose. A document's id is the note's *bound* id,
``w1:<workspace>/<note id>`` (:mod:`notelett.binding`), since that is what its fields'
associated data names; notes still bound the legacy way need ``notelett rebind`` first.
"""

from __future__ import annotations

from typing import Any

from field_encrypt import ConcurrentUpdateError
from field_encrypt.documents import DocumentPage, StoredDocument
from notelett.binding import COLLECTION, document_id, note_id_of
from notelett.repositories.base import NoteRecord, NotesRepository
from notelett.service import ENCRYPTED_FIELDS


class NotesDocumentStore:
    """``notes`` for ``re-encrypt``, ``encrypt``, ``decrypt`` and ``verify``."""

    collection = COLLECTION

    def __init__(self, notes: NotesRepository) -> None:
        self.notes = notes

    def __repr__(self) -> str:
        return f"NotesDocumentStore({self.notes!r})"

    def scan(
        self,
        *,
        cursor: str | None = None,
        limit: int = 500,
        shard: tuple[int, int] | None = None,
    ) -> DocumentPage:
        page = self.notes.scan(cursor=cursor, limit=limit, shard=shard)
        return DocumentPage(documents=[_stored(n) for n in page.notes], cursor=page.cursor)

    def get(self, document_id: str) -> StoredDocument:
        return _stored(self.notes.get(note_id_of(document_id)))

    def replace_fields(
        self, document: StoredDocument, fields: dict[str, Any], dek_id: str | None
    ) -> StoredDocument:
        note_id = note_id_of(document.id)
        current = self.notes.get(note_id)
        if str(current.revision) != document.revision:
            raise ConcurrentUpdateError(f"note {note_id} changed during the migration")
        updated = self.notes.replace(
            note_id,
            expected_revision=current.revision,
            title=fields.get("title", current.title),
            body=fields.get("body", current.body),
            tags=current.tags,
            dek_id=dek_id,
            updated_at=current.updated_at,
        )
        return _stored(updated)

    def count(self) -> int:
        return self.notes.count()


def _stored(note: NoteRecord) -> StoredDocument:
    values = {"title": note.title, "body": note.body}
    return StoredDocument(
        id=document_id(note.workspace_id, note.id),
        fields={name: values[name] for name in ENCRYPTED_FIELDS},
        dek_id=note.dek_id,
        revision=str(note.revision),
    )
