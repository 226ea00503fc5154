"""Version notes and the rotation state in the product's PostgreSQL database (JSON rows).

The same two tables as the SQLite store; the rotation state's compare-and-swap is one
conditional statement (``INSERT ... ON CONFLICT DO NOTHING`` for the first write,
``UPDATE ... WHERE revision = <read>`` after), so two invocations never both advance it.
"""

from __future__ import annotations

import dataclasses
import json

from sqlalchemy import text

from field_encrypt.backends.postgres.db import Migration, PostgresDatabase
from field_encrypt.backends.sqlite.lifecycle import _state
from field_encrypt.errors import ConcurrentUpdateError
from field_encrypt.rotation.lifecycle import RotationState, VersionNote

MIGRATIONS = (
    Migration(
        "0001_key_lifecycle",
        """
        CREATE TABLE mek_version_notes (
            product text NOT NULL,
            version text NOT NULL,
            note text NOT NULL,
            PRIMARY KEY (product, version)
        );
        CREATE TABLE rotation_state (
            product text PRIMARY KEY,
            state text NOT NULL,
            revision bigint NOT NULL
        );
        """,
    ),
)


class PostgresLifecycleStore:
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` on a :class:`PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def __repr__(self) -> str:
        return f"PostgresLifecycleStore({self.database!r})"

    def notes(self, product: str) -> dict[str, VersionNote]:
        rows = self.database.execute(
            text("SELECT note FROM mek_version_notes WHERE product = :product"),
            {"product": product},
        )
        notes = [VersionNote(**json.loads(body)) for (body,) in rows]
        return {n.version: n for n in notes}

    def note(self, product: str, version: str) -> VersionNote:
        rows = self.database.execute(
            text(
                "SELECT note FROM mek_version_notes WHERE product = :product AND version = :version"
            ),
            {"product": product, "version": version},
        )
        return VersionNote(**json.loads(rows[0][0])) if rows else VersionNote(version=version)

    def save_note(self, product: str, note: VersionNote) -> None:
        self.database.execute(
            text(
                "INSERT INTO mek_version_notes (product, version, note) "
                "VALUES (:product, :version, :note) "
                "ON CONFLICT (product, version) DO UPDATE SET note = EXCLUDED.note"
            ),
            {
                "product": product,
                "version": note.version,
                "note": json.dumps(dataclasses.asdict(note), sort_keys=True),
            },
        )

    def state(self, product: str) -> RotationState:
        rows = self.database.execute(
            text("SELECT state, revision FROM rotation_state WHERE product = :product"),
            {"product": product},
        )
        if not rows:
            return RotationState(product=product)
        body, revision = rows[0]
        return _state(json.loads(body), int(revision))

    def save_state(self, state: RotationState) -> RotationState:
        saved = dataclasses.replace(state, revision=state.revision + 1)
        body = {k: v for k, v in dataclasses.asdict(saved).items() if k != "revision"}
        params: dict[str, object] = {
            "product": state.product,
            "state": json.dumps(body, sort_keys=True),
        }
        if state.revision == 0:
            statement = text(
                "INSERT INTO rotation_state (product, state, revision) "
                "VALUES (:product, :state, 1) ON CONFLICT DO NOTHING RETURNING revision"
            )
        else:
            statement = text(
                "UPDATE rotation_state SET state = :state, revision = revision + 1 "
                "WHERE product = :product AND revision = :revision RETURNING revision"
            )
            params["revision"] = state.revision
        if not self.database.execute(statement, params):
            raise ConcurrentUpdateError(
                f"the rotation state of {state.product!r} changed since it was read"
            )
        return saved
