"""The notes collection as a field-encrypt :class:`DocumentStore`, for the rotation tools.

Built on :class:`NotesRepository`, so every notes backend gets it for free. Notes being
deleted are invisible here too: a re-encrypt never resurrects one, and ``verify`` never
counts a note whose DEK was shredded on purpose. A document's id is the note's *bound* id,
``w1:<workspace>/<note id>`` (:mod:`notelett.binding`), since that is what its fields'
associated data names; notes still bound the legacy way need ``notelett rebind`` first.

A document's fields are ``title``, ``body`` and ``tags`` (one token, or the plaintext
list) and ``tags__bi``, the tags' blind-index values from the repository's tag index
(:mod:`field_encrypt.index_values`), absent while a note with plaintext tags has none: what
``migrate --mode reindex``, ``verify`` and ``index-keys retire`` count and rewrite. The
``encrypt`` backfill seals plaintext tags and, for a note without index values, computes
them from the plaintext in the same write, so ``?tag=`` finds it afterwards.
"""

from __future__ import annotations

from typing import Any

from field_encrypt import ConcurrentUpdateError
from field_encrypt.documents import DocumentPage, ScannedStore, StoredDocument
from notelett.binding import COLLECTION, document_id, fields_of, note_id_of, tags_to_store
from notelett.repositories.base import NoteRecord, NotesRepository
from notelett.tags import TAG_INDEX_FIELD, TagIndex


class NotesDocumentStore(ScannedStore):
    """``notes`` for ``re-encrypt``, ``encrypt``, ``decrypt``, ``reindex`` and ``verify``."""

    collection = COLLECTION

    def __init__(self, notes: NotesRepository, tags: TagIndex | None = None) -> None:
        self.notes = notes
        self.tags = tags
        """Computes index values for plaintext tags that have none (``None``: never)."""

    def __repr__(self) -> str:
        return f"NotesDocumentStore({self.notes!r})"

    def _scan(self, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> DocumentPage:
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
        tag_index: tuple[str, ...] | None = None
        if TAG_INDEX_FIELD in fields:  # a reindex, or values read with the document
            tag_index = tuple(fields[TAG_INDEX_FIELD] or ())
        elif isinstance(current.tags, tuple) and current.tags and self.tags is not None:
            tag_index = self.tags.values(current.tags)  # plaintext tags never indexed
        updated = self.notes.replace(
            note_id,
            expected_revision=current.revision,
            title=fields.get("title", current.title),
            body=fields.get("body", current.body),
            tags=tags_to_store(fields["tags"]) if "tags" in fields else current.tags,
            dek_id=dek_id,
            updated_at=current.updated_at,
            tag_index=tag_index,
        )
        return _stored(updated)

    def count(self) -> int:
        return self.notes.count()


def _stored(note: NoteRecord) -> StoredDocument:
    fields = fields_of(note)
    index = note.tag_index
    unindexed = isinstance(note.tags, tuple) and note.tags and not index
    if index is not None and not unindexed:
        fields[TAG_INDEX_FIELD] = list(index)
    return StoredDocument(
        id=document_id(note.workspace_id, note.id),
        fields=fields,
        dek_id=note.dek_id,
        revision=str(note.revision),
    )
