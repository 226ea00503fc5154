"""Version notes and the rotation state in the product's Cosmos DB database.

Items of the ``rotation_ledger`` container (partition ``"ledger"``, beside the run
ledger): ``note:<product digest>:<version digest>`` per version and
``state:<product digest>`` per product. The rotation state carries its own ``revision``;
the compare-and-swap is the ETag of the item read (``If-Match``), and a first write is a
create, so two invocations never both advance the rotation.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from field_encrypt.backends.common import rotation_state as _state
from field_encrypt.backends.cosmos.db import (
    ContainerStore,
    translate_errors,
)
from field_encrypt.backends.cosmos.ledger import CONTAINER, PARTITION
from field_encrypt.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError
from field_encrypt.rotation.lifecycle import RotationState, VersionNote


class CosmosLifecycleStore(ContainerStore):
    """:class:`~field_encrypt.rotation.lifecycle.LifecycleStore` on a :class:`CosmosDatabase`."""

    container_name = CONTAINER

    def notes(self, product: str) -> dict[str, VersionNote]:
        items = self._query_items(
            "SELECT * FROM c WHERE c.pk = @pk AND c.kind = 'note' AND c.product = @product",
            {"@pk": PARTITION, "@product": product},
            partition_key=PARTITION,
        )
        notes = [VersionNote(**item["note"]) for item in items]
        return {n.version: n for n in notes}

    def note(self, product: str, version: str) -> VersionNote:
        item = self._read(_note_id(product, version))
        return VersionNote(**item["note"]) if item else VersionNote(version=version)

    def save_note(self, product: str, note: VersionNote) -> None:
        with translate_errors():
            self.container.upsert_item(
                {
                    "id": _note_id(product, note.version),
                    "pk": PARTITION,
                    "kind": "note",
                    "product": product,
                    "note": dataclasses.asdict(note),
                }
            )

    def state(self, product: str) -> RotationState:
        item = self._read(_state_id(product))
        if item is None:
            return RotationState(product=product)
        return _state(item["state"], int(item["revision"]))

    def save_state(self, state: RotationState) -> RotationState:
        saved = dataclasses.replace(state, revision=state.revision + 1)
        body = {k: v for k, v in dataclasses.asdict(saved).items() if k != "revision"}
        item_id = _state_id(state.product)
        item: dict[str, Any] = {
            "id": item_id,
            "pk": PARTITION,
            "kind": "state",
            "state": body,
            "revision": saved.revision,
        }
        changed = ConcurrentUpdateError(
            f"the rotation state of {state.product!r} changed since it was read"
        )
        try:
            current = None
            if state.revision != 0:
                current = self._read(item_id)
                if current is None or current["revision"] != state.revision:
                    raise changed
            self._write_over(current, item)
        except (AlreadyExistsError, ConcurrentUpdateError, NotFoundError):
            raise changed from None
        return saved

    def _read(self, item_id: str) -> dict[str, Any] | None:
        return self._read_item(item_id, PARTITION)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _note_id(product: str, version: str) -> str:
    return f"note:{_digest(product)}:{_digest(version)}"


def _state_id(product: str) -> str:
    return f"state:{_digest(product)}"
