"""The storage seams of NoteLett: ``NotesRepository`` and ``WorkspaceDirectory``.

Both deal in *stored* values: a note's ``title`` and ``body`` are field tokens (binary
or text) or, before encryption was enabled, plaintext. Encryption happens one layer up,
in :mod:`notelett.service`. SQL (:mod:`notelett.repositories.sql`, with its SQLite and
PostgreSQL dialects) and Cosmos DB (:mod:`notelett.repositories.cosmos`) implement both.

Errors are the library's store errors: ``NotFoundError``, ``AlreadyExistsError``,
``ConcurrentUpdateError`` (compare-and-swap on ``revision`` lost), ``StoreError``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NotRequired, Protocol, TypedDict, Unpack, runtime_checkable

StoredValue = bytes | str | None
"""A stored encrypted field: a binary token, a text token, or plaintext."""
StoredTags = tuple[str, ...] | bytes
"""A note's stored tags: one binary token sealing the whole list, or (written before tags
were encrypted, or with encryption off) the plaintext tags."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteRecord:
    """One note as stored. ``deleting`` marks a note whose deletion has begun."""

    id: str
    workspace_id: str
    title: StoredValue = field(repr=False)
    body: StoredValue = field(repr=False)
    tags: StoredTags = field(repr=False)
    dek_id: str | None
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime
    deleting: bool = False
    tag_index: tuple[str, ...] | None = None
    """The blind-index values of the tags (``bi1:…``, one per distinct tag, sorted), kept
    beside the note for ``list_tagged``. On write ``None`` writes none (``replace``: keeps
    the stored ones); on read ``None`` means not read (listings do not read them)."""


class NoteChange(TypedDict):
    """What :meth:`NotesRepository.replace` writes: a note's new stored values, its DEK and
    time, and (optionally) its tag index values."""

    title: StoredValue
    body: StoredValue
    tags: StoredTags
    dek_id: str | None
    updated_at: dt.datetime
    tag_index: NotRequired[tuple[str, ...] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class NotePage:
    """One page of notes; ``cursor`` (opaque, store-specific) continues it, ``None`` at the end."""

    notes: list[NoteRecord]
    cursor: str | None


@runtime_checkable
class NotesRepository(Protocol):
    """The durable home of notes. Writes are compare-and-swap on ``revision``."""

    def insert(self, note: NoteRecord) -> NoteRecord:
        """Add a note at revision 1; ``AlreadyExistsError`` if the id is taken."""
        ...

    def get(self, note_id: str) -> NoteRecord:
        """A live note; ``NotFoundError`` if absent or being deleted."""
        ...

    def list_workspace(self, workspace_id: str, *, cursor: str | None, limit: int) -> NotePage:
        """A workspace's live notes, newest first (keyset pagination, never offsets)."""
        ...

    def list_tagged(
        self, workspace_id: str, index_values: Sequence[str], *, cursor: str | None, limit: int
    ) -> NotePage:
        """A workspace's live notes whose tag index holds any of ``index_values``, newest
        first, with the same cursors as :meth:`list_workspace`: one indexed lookup."""
        ...

    def replace(
        self, note_id: str, *, expected_revision: int, **change: Unpack[NoteChange]
    ) -> NoteRecord:
        """Write new values (:class:`NoteChange`) only if the note is still at
        ``expected_revision``.

        ``tag_index`` replaces the note's tag index values in the same write (``None``:
        left as they are).

        ``ConcurrentUpdateError`` if the revision moved; ``NotFoundError`` if the note is
        gone or being deleted.
        """
        ...

    def mark_deleting(self, note_id: str, *, expected_revision: int | None) -> NoteRecord:
        """Step 1 of a delete: hide the note from every read (a tombstone).

        A compare-and-swap on a *live* note (at ``expected_revision`` unless ``None``): of
        racing deletes exactly one marks it. ``NotFoundError`` if the note is gone or
        already marked (a crashed delete is finished by ``pending_deletes``, not here);
        ``ConcurrentUpdateError`` if the revision moved.
        """
        ...

    def remove(self, note_id: str) -> bool:
        """Step 3 of a delete: drop the row; whether there was one."""
        ...

    def pending_deletes(self, *, limit: int) -> list[NoteRecord]:
        """Notes marked for deletion whose delete did not finish (a crash, a timeout)."""
        ...

    def scan(self, *, cursor: str | None, limit: int, shard: tuple[int, int] | None) -> NotePage:
        """Every live note in a stable order, for the rotation tools."""
        ...

    def count(self) -> int:
        """How many live notes there are."""
        ...

    def ping(self) -> None:
        """Raise a ``StoreError`` unless the database answers."""
        ...

    def check_writable(self) -> None:
        """Raise a ``StoreError`` unless a write goes through now: one tiny committed write
        to a probe row, waiting at most a moment for a lock."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    """A workspace (tenant): its id and display name."""

    id: str
    name: str


@runtime_checkable
class WorkspaceDirectory(Protocol):
    """Workspaces, users and memberships: who may see which notes."""

    def is_member(self, user_id: str, workspace_id: str) -> bool:
        """Whether ``user_id`` belongs to ``workspace_id`` (``False`` if either is unknown)."""
        ...

    def add_workspace(self, workspace_id: str, *, name: str) -> None:
        """Create a workspace; a no-op if it exists."""
        ...

    def add_user(self, user_id: str, *, name: str) -> None:
        """Create a user; a no-op if it exists."""
        ...

    def add_member(self, user_id: str, workspace_id: str) -> None:
        """Let ``user_id`` into ``workspace_id``; a no-op if already a member."""
        ...

    def remove_member(self, user_id: str, workspace_id: str) -> bool:
        """Take ``user_id`` out of ``workspace_id``; whether it was a member."""
        ...

    def list_workspaces(self) -> list[Workspace]:
        """Every workspace, by id."""
        ...

    def list_members(self, workspace_id: str) -> list[str]:
        """The user ids of ``workspace_id``'s members, sorted."""
        ...
