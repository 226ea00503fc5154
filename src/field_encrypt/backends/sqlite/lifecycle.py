"""Version notes and the rotation state in the product's SQLite database (JSON rows)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from field_encrypt.backends.sqlite.db import Migration, SqliteDatabase
from field_encrypt.errors import ConcurrentUpdateError
from field_encrypt.rotation.lifecycle import RotationState, VersionNote

MIGRATIONS = (
    Migration(
        "0001_key_lifecycle",
        """
        CREATE TABLE mek_version_notes (
            product TEXT NOT NULL,
            version TEXT NOT NULL,
            note TEXT NOT NULL,
            PRIMARY KEY (product, version)
        );
        CREATE TABLE rotation_state (
            product TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            revision INTEGER NOT NULL
        )
        """,
    ),
)


class SqliteLifecycleStore:
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` on a :class:`SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"SqliteLifecycleStore({self.database.path!r})"

    def notes(self, product: str) -> dict[str, VersionNote]:
        rows = self.database.query(
            "SELECT note FROM mek_version_notes WHERE product = ?", (product,)
        )
        notes = [VersionNote(**json.loads(text)) for (text,) in rows]
        return {n.version: n for n in notes}

    def note(self, product: str, version: str) -> VersionNote:
        rows = self.database.query(
            "SELECT note FROM mek_version_notes WHERE product = ? AND version = ?",
            (product, version),
        )
        return VersionNote(**json.loads(rows[0][0])) if rows else VersionNote(version=version)

    def save_note(self, product: str, note: VersionNote) -> None:
        self.database.execute(
            "INSERT OR REPLACE INTO mek_version_notes (product, version, note) VALUES (?, ?, ?)",
            (product, note.version, json.dumps(dataclasses.asdict(note), sort_keys=True)),
        )

    def state(self, product: str) -> RotationState:
        rows = self.database.query(
            "SELECT state, revision FROM rotation_state WHERE product = ?", (product,)
        )
        if not rows:
            return RotationState(product=product)
        text, revision = rows[0]
        return _state(json.loads(text), revision)

    def save_state(self, state: RotationState) -> RotationState:
        saved = dataclasses.replace(state, revision=state.revision + 1)
        body = {k: v for k, v in dataclasses.asdict(saved).items() if k != "revision"}
        text = json.dumps(body, sort_keys=True)
        with self.database.transaction() as tx:
            if state.revision == 0:
                cur = tx.execute(
                    "INSERT OR IGNORE INTO rotation_state (product, state, revision) "
                    "VALUES (?, ?, 1)",
                    (state.product, text),
                )
            else:
                cur = tx.execute(
                    "UPDATE rotation_state SET state = ?, revision = revision + 1 "
                    "WHERE product = ? AND revision = ?",
                    (text, state.product, state.revision),
                )
            if cur.rowcount != 1:
                raise ConcurrentUpdateError(
                    f"the rotation state of {state.product!r} changed since it was read"
                )
        return saved


def _state(body: dict[str, Any], revision: int) -> RotationState:
    known = {f.name for f in dataclasses.fields(RotationState)}
    return RotationState(**{k: v for k, v in body.items() if k in known}, revision=revision)
