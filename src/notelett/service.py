"""NotesService: what the routes call. Authorization, encryption and concurrency live here.

A note is visible to a caller only if its workspace is allowed by the token and the
caller is a member; otherwise it is *not found*, exactly like a note that does not exist.

Deleting a note crypto-shreds it in three steps, ordered so that a crash at any point
leaves nothing readable and nothing half-visible:

1. mark the row ``deleting`` (compare-and-swap): from here on no read, listing or
   rotation scan sees the note;
2. delete its DEK (:meth:`FieldEncryptor.shred`): every backup of the row is now
   unreadable;
3. delete the row.

A crash after step 1 or 2 leaves a marked row that :meth:`NotesService.finish_deletes`
completes (at start-up, and by ``notelett purge``). Shredding *before* removing the row
is what makes a 204 mean "the DEK is gone"; the reverse order could leave an orphaned DEK
that still opens old backups.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from field_encrypt import (
    ConcurrentUpdateError,
    DecryptionError,
    DekMissingError,
    FieldEncryptor,
    NotFoundError,
    StoreError,
)
from field_encrypt import token as field_token
from notelett.binding import COLLECTION, document_id, fields_of, open_fields, tags_to_store
from notelett.errors import (
    NoteNotFoundError,
    NoteUnreadableError,
    PreconditionFailedError,
    PreconditionRequiredError,
    WorkspaceNotFoundError,
)
from notelett.repositories.base import (
    NoteRecord,
    NotesRepository,
    StoredTags,
    StoredValue,
    WorkspaceDirectory,
)
from notelett.tags import TagIndex

if TYPE_CHECKING:  # jwt (through auth) stays out of the CLI's start-up
    from notelett.auth import Principal

CAS_ATTEMPTS = 5
"""How many times a write re-reads a note whose revision moved under it before giving up."""

log = logging.getLogger("notelett")


@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    """A note as its owner sees it: decrypted."""

    id: str
    workspace_id: str
    title: str
    body: str
    tags: tuple[str, ...]
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def etag(self) -> str:
        return etag_of(self.revision)


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteContent:
    """What a caller may write."""

    title: str
    body: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnreadableNote:
    """A note on a list page that failed to decrypt: its id and a code, never content."""

    id: str
    code: Literal["note_unreadable"] = "note_unreadable"


@dataclass(frozen=True, slots=True, kw_only=True)
class NotesPage:
    """One page of a listing: the notes that opened, those that did not, the next cursor."""

    notes: list[Note]
    unreadable: list[UnreadableNote]
    cursor: str | None


def etag_of(revision: int) -> str:
    """The strong ETag of a revision."""
    return f'"{revision}"'


def if_match_allows(header: str, revision: int) -> bool:
    """Whether an ``If-Match`` header matches ``revision`` (strong comparison, RFC 9110)."""
    wanted = etag_of(revision)
    return any(tag.strip() in ("*", wanted) for tag in header.split(","))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


class NotesService:
    """Notes for authenticated callers, encrypted at rest through ``encryptor``."""

    def __init__(
        self,
        *,
        encryptor: FieldEncryptor,
        notes: NotesRepository,
        directory: WorkspaceDirectory,
        clock: Callable[[], dt.datetime] | None = None,
        new_id: Callable[[], str] = _new_id,
        on_decrypt_failure: Callable[[], None] = lambda: None,
        dek_version: Callable[[str], str | None] = lambda _workspace: None,
        legacy_binding: bool = False,
        tags: TagIndex | None = None,
    ) -> None:
        self.encryptor = encryptor
        self.tags = tags if tags is not None else TagIndex.of(encryptor)
        """The blind index of tags (:mod:`notelett.tags`)."""
        self.legacy_binding = legacy_binding
        """Also read notes bound the legacy way (``NOTELETT_LEGACY_NOTE_BINDING``)."""
        self._dek_version = dek_version
        self.notes = notes
        self.directory = directory
        self._clock = clock or _now
        self._new_id = new_id
        self._on_decrypt_failure = on_decrypt_failure

    def __repr__(self) -> str:
        return f"NotesService(encryptor={self.encryptor!r}, notes={self.notes!r})"

    # -- reads ---------------------------------------------------------------------------

    def get(self, principal: Principal, note_id: str) -> Note:
        """A visible note; :class:`NoteNotFoundError` otherwise (also when a delete won a
        race with this read and shredded its DEK between the read and the decrypt)."""
        record = self._visible(principal, note_id)
        try:
            return self._decrypt(record)
        except NoteUnreadableError:
            self._check_still_there(note_id)
            raise

    def _decrypt_page(self, records: Sequence[NoteRecord]) -> NotesPage:
        """A page of notes opened in one batch; a failure is found note by note, and each
        note that does not open becomes an :class:`UnreadableNote` while the others serve."""
        try:
            opened = self.encryptor.decrypt_documents(
                COLLECTION,
                [(document_id(r.workspace_id, r.id), fields_of(r)) for r in records],
            )
        except DecryptionError:
            return self._decrypt_each(records)
        notes = []
        for record, fields in zip(records, opened, strict=True):
            title, body, tags = fields["title"], fields["body"], _tags(fields["tags"])
            if not isinstance(title, str) or not isinstance(body, str) or tags is None:
                return self._decrypt_each(records)
            notes.append(_note(record, title, body, tags))
        return NotesPage(notes=notes, unreadable=[], cursor=None)

    def _decrypt_each(self, records: Sequence[NoteRecord]) -> NotesPage:
        notes: list[Note] = []
        unreadable: list[UnreadableNote] = []
        for record in records:
            try:
                notes.append(self._decrypt(record))
            except NoteUnreadableError as exc:
                try:
                    self._check_still_there(record.id)
                except NoteNotFoundError:
                    continue  # deleted while the page was read: simply not on it
                log.error(
                    "note %s failed to decrypt in a list page: dekId=%s mekVersion=%s",
                    exc.note_id,
                    exc.dek_id,
                    exc.mek_version,
                )
                unreadable.append(UnreadableNote(id=record.id))
        return NotesPage(notes=notes, unreadable=unreadable, cursor=None)

    def list(
        self,
        principal: Principal,
        workspace_id: str,
        *,
        cursor: str | None,
        limit: int,
        tag: str | None = None,
    ) -> NotesPage:
        """One page of a workspace's notes, newest first, and the cursor of the next page.

        With ``tag``, only the notes carrying it (exact match once normalised, see
        :mod:`notelett.tags`), found through the tag index: one indexed lookup for the
        values of every index-key version present, never a decrypting scan.
        A note that fails to decrypt does not fail the page: it is listed in
        ``unreadable`` (its id and a code, never content), counted and logged with its dekId.
        """
        self._check_workspace(principal, workspace_id)
        if tag is None:
            page = self.notes.list_workspace(workspace_id, cursor=cursor, limit=limit)
        else:
            page = self.notes.list_tagged(
                workspace_id, self.tags.lookup(tag), cursor=cursor, limit=limit
            )
        opened = self._decrypt_page(page.notes)
        notes = opened.notes
        if tag is not None:  # a truncated index's false positives (none at full length)
            notes = [n for n in notes if any(self.tags.same(t, tag) for t in n.tags)]
        return NotesPage(notes=notes, unreadable=opened.unreadable, cursor=page.cursor)

    # -- writes --------------------------------------------------------------------------

    def create(self, principal: Principal, workspace_id: str, content: NoteContent) -> Note:
        """A new note in ``workspace_id``, sealed under a fresh DEK."""
        self._check_workspace(principal, workspace_id)
        note_id = self._new_id()
        dek_id = (
            self.encryptor.create_dek(version=self._dek_version(workspace_id))
            if self.encryptor.enabled
            else None
        )
        title, body, tags = self._encrypt(workspace_id, note_id, content, dek_id)
        tag_index = self.tags.values(content.tags)
        now = self._clock()
        try:
            record = self.notes.insert(
                NoteRecord(
                    id=note_id,
                    workspace_id=workspace_id,
                    title=title,
                    body=body,
                    tags=tags,
                    dek_id=dek_id,
                    revision=1,
                    created_at=now,
                    updated_at=now,
                    tag_index=tag_index,
                )
            )
        except StoreError:
            if dek_id is not None:
                self.encryptor.shred(dek_id)  # never leave a DEK without its note
            raise
        return _note(record, content.title, content.body, content.tags)

    def update(
        self, principal: Principal, note_id: str, content: NoteContent, *, if_match: str | None
    ) -> Note:
        """Replace a note's content if ``if_match`` names its current revision.

        A write that loses a race answers as the winner left the note: 404 if a delete won,
        412 if another write moved the revision past ``if_match`` (``*`` tries again).
        """
        if if_match is None:
            self._visible(principal, note_id)
            raise PreconditionRequiredError()
        for _ in range(CAS_ATTEMPTS):
            record = self._visible(principal, note_id)
            if not if_match_allows(if_match, record.revision):
                raise PreconditionFailedError()
            try:
                return self._replace(record, content)
            except ConcurrentUpdateError:
                continue  # the revision moved: look again
        raise PreconditionFailedError()

    def _replace(self, record: NoteRecord, content: NoteContent) -> Note:
        note_id = record.id
        dek_id = record.dek_id
        created = None
        if self.encryptor.enabled and dek_id is None:
            # a note written before encryption was on
            dek_id = created = self.encryptor.create_dek(
                version=self._dek_version(record.workspace_id)
            )
        elif not self.encryptor.enabled:
            dek_id = None
        try:
            title, body, tags = self._encrypt(record.workspace_id, note_id, content, dek_id)
        except DekMissingError:  # a delete shredded the DEK since the read
            self._check_still_there(note_id)
            raise
        try:
            updated = self.notes.replace(
                note_id,
                expected_revision=record.revision,
                title=title,
                body=body,
                tags=tags,
                dek_id=dek_id,
                updated_at=self._clock(),
                tag_index=self.tags.values(content.tags),
            )
        except StoreError as exc:
            if created is not None:
                self.encryptor.shred(created)  # never leave a DEK without its note
            if isinstance(exc, NotFoundError):  # a delete won the race
                raise NoteNotFoundError() from None
            raise
        if record.dek_id is not None and dek_id is None:
            self.encryptor.shred(record.dek_id)  # written in plaintext now: drop the old DEK
        return _note(updated, content.title, content.body, content.tags)

    def delete(self, principal: Principal, note_id: str, *, if_match: str | None) -> None:
        """Crypto-shred and delete a note (see the module docstring for the order).

        Marking the note is a compare-and-swap on a live note at the revision read, so of
        racing deletes exactly one wins (204); the others find the note gone (404), or,
        with ``If-Match``, changed (412).
        """
        for _ in range(CAS_ATTEMPTS):
            record = self._visible(principal, note_id)
            if if_match is not None and not if_match_allows(if_match, record.revision):
                raise PreconditionFailedError()
            try:
                marked = self.notes.mark_deleting(note_id, expected_revision=record.revision)
            except NotFoundError:  # another delete marked it first
                raise NoteNotFoundError() from None
            except ConcurrentUpdateError:
                continue  # a write moved the revision: look again
            self._finish_delete(marked)
            return
        raise PreconditionFailedError()

    def finish_deletes(self, *, batch: int = 100) -> int:
        """Complete deletes interrupted after step 1; how many were completed."""
        done = 0
        while pending := self.notes.pending_deletes(limit=batch):
            for record in pending:
                self._finish_delete(record)
                done += 1
        return done

    # -- helpers -------------------------------------------------------------------------

    def _finish_delete(self, record: NoteRecord) -> None:
        if record.dek_id is not None:
            self.encryptor.shred(record.dek_id)
        self.notes.remove(record.id)

    def _check_workspace(self, principal: Principal, workspace_id: str) -> None:
        if not (
            principal.may_use(workspace_id)
            and self.directory.is_member(principal.user_id, workspace_id)
        ):
            raise WorkspaceNotFoundError()

    def _check_still_there(self, note_id: str) -> None:
        """Raise :class:`NoteNotFoundError` if the note is gone or being deleted."""
        try:
            self.notes.get(note_id)
        except NotFoundError:
            raise NoteNotFoundError() from None

    def _visible(self, principal: Principal, note_id: str) -> NoteRecord:
        try:
            record = self.notes.get(note_id)
        except NotFoundError:
            raise NoteNotFoundError() from None
        if not (
            principal.may_use(record.workspace_id)
            and self.directory.is_member(principal.user_id, record.workspace_id)
        ):
            raise NoteNotFoundError()
        return record

    def _encrypt(
        self, workspace_id: str, note_id: str, content: NoteContent, dek_id: str | None
    ) -> tuple[StoredValue, StoredValue, StoredTags]:
        sealed = self.encryptor.encrypt_document(
            COLLECTION,
            document_id(workspace_id, note_id),
            {"title": content.title, "body": content.body, "tags": list(content.tags)},
            dek_id=dek_id,
        )
        return sealed["title"], sealed["body"], tags_to_store(sealed["tags"])

    def _decrypt(self, record: NoteRecord) -> Note:
        try:
            opened = open_fields(self.encryptor, record, legacy=self.legacy_binding)
        except DecryptionError as exc:  # tampered, unsupported, or its DEK is missing
            self._on_decrypt_failure()
            raise NoteUnreadableError(
                note_id=record.id, dek_id=record.dek_id, mek_version=_mek_version(record.title)
            ) from exc
        title, body, tags = opened["title"], opened["body"], _tags(opened["tags"])
        if not isinstance(title, str) or not isinstance(body, str) or tags is None:
            self._on_decrypt_failure()
            raise NoteUnreadableError(note_id=record.id, dek_id=record.dek_id, mek_version=None)
        return _note(record, title, body, tags)


def _tags(value: object) -> tuple[str, ...] | None:
    """Opened tags (a list of texts; ``None``: no tags stored); ``None`` if not that."""
    if value is None:
        return ()
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return tuple(value)
    return None


def _note(record: NoteRecord, title: str, body: str, tags: tuple[str, ...]) -> Note:
    return Note(
        id=record.id,
        workspace_id=record.workspace_id,
        title=title,
        body=body,
        tags=tags,
        revision=record.revision,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _mek_version(value: StoredValue) -> str | None:
    """The MEK version a stored token names in its header (for logs), if it is a token."""
    if value is None or not field_token.is_token(value):
        return None
    try:
        return field_token.read_header(field_token.as_binary(value)).mek_version
    except DecryptionError:
        return None
