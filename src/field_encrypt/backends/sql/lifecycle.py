"""Version notes and the rotation state in the product's SQL database (JSON text rows).

The rotation state's compare-and-swap is one conditional statement (``INSERT ... ON
CONFLICT DO NOTHING`` for the first write, ``UPDATE ... WHERE revision = <read>`` after),
so two invocations never both advance it.
"""

from __future__ import annotations

import dataclasses
import json

from field_encrypt.backends.common import rotation_state
from field_encrypt.backends.sql.dialect import Dialect, SqlStore
from field_encrypt.errors import ConcurrentUpdateError
from field_encrypt.rotation.lifecycle import RotationState, VersionNote

MIGRATIONS = (
    (
        "0001_key_lifecycle",
        """
        CREATE TABLE mek_version_notes (
            product {text} NOT NULL,
            version {text} NOT NULL,
            note {text} NOT NULL,
            PRIMARY KEY (product, version)
        );
        CREATE TABLE rotation_state (
            product {text} PRIMARY KEY,
            state {text} NOT NULL,
            revision {bigint} NOT NULL
        )
        """,
    ),
)


class SqlLifecycleStore(SqlStore):
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` in the ``mek_version_notes``
    and ``rotation_state`` tables."""

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect, [dialect.schema(name, sql) for name, sql in MIGRATIONS])

    def notes(self, product: str) -> dict[str, VersionNote]:
        rows = self.dialect.query(
            "SELECT note FROM mek_version_notes WHERE product = :product", {"product": product}
        )
        notes = [VersionNote(**json.loads(body)) for (body,) in rows]
        return {n.version: n for n in notes}

    def note(self, product: str, version: str) -> VersionNote:
        rows = self.dialect.query(
            "SELECT note FROM mek_version_notes WHERE product = :product AND version = :version",
            {"product": product, "version": version},
        )
        return VersionNote(**json.loads(rows[0][0])) if rows else VersionNote(version=version)

    def save_note(self, product: str, note: VersionNote) -> None:
        self.dialect.execute(
            "INSERT INTO mek_version_notes (product, version, note) "
            "VALUES (:product, :version, :note) "
            "ON CONFLICT (product, version) DO UPDATE SET note = excluded.note",
            {
                "product": product,
                "version": note.version,
                "note": json.dumps(dataclasses.asdict(note), sort_keys=True),
            },
        )

    def state(self, product: str) -> RotationState:
        rows = self.dialect.query(
            "SELECT state, revision FROM rotation_state WHERE product = :product",
            {"product": product},
        )
        if not rows:
            return RotationState(product=product)
        body, revision = rows[0]
        return rotation_state(json.loads(body), int(revision))

    def save_state(self, state: RotationState) -> RotationState:
        saved = dataclasses.replace(state, revision=state.revision + 1)
        body = {k: v for k, v in dataclasses.asdict(saved).items() if k != "revision"}
        params = {
            "product": state.product,
            "state": json.dumps(body, sort_keys=True),
            "revision": state.revision,
        }
        if state.revision == 0:
            statement = (
                "INSERT INTO rotation_state (product, state, revision) "
                "VALUES (:product, :state, 1) ON CONFLICT DO NOTHING"
            )
        else:
            statement = (
                "UPDATE rotation_state SET state = :state, revision = revision + 1 "
                "WHERE product = :product AND revision = :revision"
            )
        if self.dialect.execute(statement, params) != 1:
            raise ConcurrentUpdateError(
                f"the rotation state of {state.product!r} changed since it was read"
            )
        return saved
