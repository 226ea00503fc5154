"""Demo data: workspaces, users, memberships and notes, written through the service.

Notes go through :class:`NotesService` (so they are encrypted exactly as the API would
encrypt them), in batches of one SQLite transaction each.
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from field_encrypt.backends.sqlite.db import SqliteDatabase
from notelett.auth import Principal
from notelett.backend import Backend
from notelett.service import NoteContent, NotesService

DEMO_USER = "demo"
_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "meeting",
    "roadmap",
    "draft",
    "idea",
    "budget",
    "review",
    "launch",
    "retro",
    "sketch",
    "plan",
    "notes",
    "todo",
)
_TAGS = ("work", "personal", "ideas", "todo", "archive", "urgent")


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedResult:
    """What was seeded, and a note to show off."""

    created: int
    workspaces: list[str]
    user: str
    sample_note: str | None


def workspace_ids(count: int) -> list[str]:
    """The seeded workspaces' ids: ``ws-1`` ... ``ws-<count>``."""
    return [f"ws-{i}" for i in range(1, count + 1)]


def seed(
    backend: Backend,
    *,
    notes: int,
    workspaces: int = 3,
    if_empty: bool = False,
    batch: int = 500,
    rng: random.Random | None = None,
) -> SeedResult:
    """Create ``workspaces`` workspaces, their users and ``notes`` notes spread over them.

    User ``demo`` belongs to every seeded workspace, ``user-<i>`` to ``ws-<i>`` only.
    Re-running adds more notes (unless ``if_empty`` and notes already exist).
    """
    rng = rng or random.Random()
    ids = workspace_ids(workspaces)
    directory = backend.directory
    directory.add_user(DEMO_USER, name="Demo User")
    for i, workspace_id in enumerate(ids, start=1):
        directory.add_workspace(workspace_id, name=f"Demo workspace {i}")
        directory.add_user(f"user-{i}", name=f"User {i}")
        directory.add_member(DEMO_USER, workspace_id)
        directory.add_member(f"user-{i}", workspace_id)
    service = NotesService(
        encryptor=backend.encryptor,
        notes=backend.notes,
        directory=backend.directory,
        dek_version=backend.dek_version,
    )
    principal = Principal(user_id=DEMO_USER)
    count = 0 if if_empty and backend.notes.count() > 0 else notes
    database = backend.runtime.database
    for start in range(0, count, batch):
        with _transaction(database):
            for i in range(start, min(start + batch, count)):
                service.create(principal, ids[i % len(ids)], _content(rng, i))
    page = backend.notes.list_workspace(ids[0], cursor=None, limit=1)
    sample = page.notes[0].id if page.notes else None
    return SeedResult(created=count, workspaces=ids, user=DEMO_USER, sample_note=sample)


def _content(rng: random.Random, i: int) -> NoteContent:
    title = " ".join(rng.choices(_WORDS, k=rng.randint(2, 6))).capitalize()
    sentences = [
        " ".join(rng.choices(_WORDS, k=rng.randint(6, 14))).capitalize() + "."
        for _ in range(rng.randint(2, 8))
    ]
    tags = tuple(sorted(set(rng.choices(_TAGS, k=rng.randint(0, 3)))))
    return NoteContent(title=f"{title} #{i + 1}", body=" ".join(sentences), tags=tags)


def _transaction(database: object) -> AbstractContextManager[object]:
    """One SQLite transaction around a batch (nothing on other databases)."""
    return database.transaction() if isinstance(database, SqliteDatabase) else nullcontext()
