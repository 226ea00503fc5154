"""What a note's encrypted fields are bound to: its workspace and its id.

A field token's associated data is ``product | collection | document id | field path``
(:func:`field_encrypt.token.binding`). NoteLett's document id is
``w1:<workspace id>/<note id>``, so a row moved to another workspace in the database
(``update notes set workspace_id = ...``) fails to decrypt there instead of being served to
the other workspace's members. A note's workspace cannot change through the API, so
nothing else ever has to re-encrypt for a move.

Notes written before this binding used the bare note id (*legacy*). :func:`rebind` (the
``notelett rebind`` command) re-seals them under the workspace binding, same DEK; until it
has run, ``NOTELETT_LEGACY_NOTE_BINDING=true`` lets the service read them (a legacy row is
then still readable if moved: the reason to rebind and turn the setting off).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from field_encrypt import (
    ConcurrentUpdateError,
    DecryptionError,
    DekMissingError,
    FieldEncryptor,
    NotFoundError,
)
from field_encrypt import token as field_token
from notelett.repositories.base import NoteRecord, NotesRepository, StoredTags

COLLECTION = "notes"
ENCRYPTED_FIELDS = ("title", "body", "tags")
"""A note's encrypted fields (the ``notes`` collection's, for the rotation tools too)."""
BINDING_PREFIX = "w1:"

if TYPE_CHECKING:
    from notelett.tags import TagIndex

log = logging.getLogger("notelett.binding")


def document_id(workspace_id: str, note_id: str) -> str:
    """The document id a note's fields are bound to."""
    return f"{BINDING_PREFIX}{workspace_id}/{note_id}"


def note_id_of(bound_id: str) -> str:
    """The note id inside a bound document id (note ids never hold a ``/``)."""
    if not bound_id.startswith(BINDING_PREFIX) or "/" not in bound_id:
        raise NotFoundError(f"{bound_id!r} is not a NoteLett document id")
    return bound_id.rsplit("/", 1)[1]


def fields_of(record: NoteRecord) -> dict[str, Any]:
    """A note's encrypted fields as stored: ``tags`` is one token, or the plaintext list
    (``None`` when empty: nothing to seal)."""
    return {"title": record.title, "body": record.body, "tags": stored_tags_field(record.tags)}


def stored_tags_field(tags: StoredTags) -> bytes | list[str] | None:
    """Stored tags as an encrypted field's value: the token, the plaintext list, or
    ``None`` for no plaintext tags."""
    if isinstance(tags, bytes):
        return tags
    return list(tags) if tags else None


def tags_to_store(value: Any) -> StoredTags:
    """A sealed (or, encryption off, plaintext) ``tags`` field as a repository stores it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and field_token.is_token(value):
        return field_token.from_text(value)
    return tuple(value or ())


def open_fields(encryptor: FieldEncryptor, record: NoteRecord, *, legacy: bool) -> dict[str, Any]:
    """A note's fields opened under its workspace binding; with ``legacy``, a note that
    does not open so is tried under the legacy one (its bare id). Raises
    :class:`DecryptionError` when neither opens it."""
    fields = fields_of(record)
    try:
        return encryptor.decrypt_document(
            COLLECTION, document_id(record.workspace_id, record.id), fields
        )
    except DekMissingError:
        raise
    except DecryptionError:
        if not legacy:
            raise
    return encryptor.decrypt_document(COLLECTION, record.id, fields)


@dataclass(slots=True, kw_only=True)
class RebindReport:
    """What :func:`rebind` did: notes scanned, re-sealed, already bound, plaintext, failed."""

    scanned: int = 0
    rebound: int = 0
    already_bound: int = 0
    plaintext: int = 0
    failed: list[str] = field(default_factory=list)
    """Ids of notes that open under neither binding (tampered, or their DEK is gone)."""


def rebind(
    encryptor: FieldEncryptor, notes: NotesRepository, *, dry_run: bool = False, batch: int = 500
) -> RebindReport:
    """Re-seal every note bound the legacy way under its workspace binding (same DEK).

    Each write is a compare-and-swap on the note's revision; a note written meanwhile was
    written bound by the service, so it is counted as already bound. Idempotent: a second
    run finds everything bound.
    """
    from notelett.tags import TagIndex  # notelett.tags imports this module

    tags = TagIndex.of(encryptor)
    report = RebindReport()
    cursor: str | None = None
    while True:
        page = notes.scan(cursor=cursor, limit=batch, shard=None)
        for record in page.notes:
            report.scanned += 1
            _rebind_one(encryptor, notes, record, report, dry_run=dry_run, tags=tags)
        if page.cursor is None:
            return report
        cursor = page.cursor


def _rebind_one(
    encryptor: FieldEncryptor,
    notes: NotesRepository,
    record: NoteRecord,
    report: RebindReport,
    *,
    dry_run: bool,
    tags: TagIndex,
) -> None:
    if record.dek_id is None and not any(
        field_token.is_token(v) for v in fields_of(record).values()
    ):
        report.plaintext += 1
        return
    bound = document_id(record.workspace_id, record.id)
    try:
        encryptor.decrypt_document(COLLECTION, bound, fields_of(record))
        report.already_bound += 1
        return
    except DecryptionError:
        pass
    try:
        plain = encryptor.decrypt_document(COLLECTION, record.id, fields_of(record))
    except DecryptionError:
        log.error("rebind: note %s opens under neither binding: dekId=%s", record.id, record.dek_id)
        report.failed.append(record.id)
        return
    if dry_run:
        report.rebound += 1
        return
    dek_id = record.dek_id or encryptor.dek_id_of(COLLECTION, fields_of(record))
    sealed = encryptor.encrypt_document(COLLECTION, bound, plain, dek_id=dek_id)
    plaintext_tags = record.tags if isinstance(record.tags, tuple) and record.tags else None
    try:
        notes.replace(
            record.id,
            expected_revision=record.revision,
            title=sealed["title"],
            body=sealed["body"],
            tags=tags_to_store(sealed["tags"]) if sealed.get("tags") is not None else record.tags,
            dek_id=dek_id,
            updated_at=record.updated_at,
            # plaintext tags sealed here are indexed in the same write (else ?tag= misses them)
            tag_index=tags.values(plaintext_tags) if plaintext_tags else None,
        )
    except (ConcurrentUpdateError, NotFoundError):
        report.already_bound += 1  # rewritten (bound) or deleted since the scan
        return
    report.rebound += 1
