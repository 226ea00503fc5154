"""What every backend implements: the DekStore and KekStore protocols and their records.

The other backend protocols live beside the code that uses them:
:class:`~field_encrypt.documents.DocumentStore`, :class:`~field_encrypt.audit.AuditTrail`,
:class:`~field_encrypt.rotation.ledger.RunLedger` and
:class:`~field_encrypt.rotation.lifecycle.LifecycleStore`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from field_encrypt.errors import ConfigurationError

if TYPE_CHECKING:
    from field_encrypt.providers.base import WrappedDek


@dataclass(frozen=True, slots=True, kw_only=True)
class DekRecord:
    """One row of the dek_store: a DEK wrapped under one MEK version.

    ``revision`` is the store's compare-and-swap token (a counter, or an ETag); ``row`` is
    the store's own locator for fast writes in scan order, opaque to everyone else.
    """

    dek_id: str
    product: str
    mek_name: str
    mek_version: str
    wrapped: bytes = field(repr=False)
    algorithm: str
    created_at: dt.datetime
    updated_at: dt.datetime
    revision: str
    row: int | str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WrapUpdate:
    """Replace ``record``'s wrap, only if the row is still at ``record.revision``."""

    record: DekRecord
    mek_version: str
    wrapped: bytes = field(repr=False)
    algorithm: str


_new = object.__new__


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The setter of a slots dataclass's field (its member descriptor's ``__set__``)."""
    setter: Callable[[object, object], None] = vars(cls)[name].__set__
    return setter


_SET_DEK_ID = _slot_setter(DekRecord, "dek_id")
_SET_PRODUCT = _slot_setter(DekRecord, "product")
_SET_MEK_NAME = _slot_setter(DekRecord, "mek_name")
_SET_MEK_VERSION = _slot_setter(DekRecord, "mek_version")
_SET_WRAPPED = _slot_setter(DekRecord, "wrapped")
_SET_ALGORITHM = _slot_setter(DekRecord, "algorithm")
_SET_CREATED_AT = _slot_setter(DekRecord, "created_at")
_SET_UPDATED_AT = _slot_setter(DekRecord, "updated_at")
_SET_REVISION = _slot_setter(DekRecord, "revision")
_SET_ROW = _slot_setter(DekRecord, "row")


def dek_record_of_row(
    dek_id: str,
    product: str,
    mek_name: str,
    mek_version: str,
    wrapped: bytes,
    algorithm: str,
    created_at: dt.datetime,
    updated_at: dt.datetime,
    revision: str,
    row: int | str | None,
) -> DekRecord:
    """``DekRecord(...)`` from a scanned row's values, positionally, about 3x faster.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``
    with keyword arguments; a scan builds one record per row, so stores build them here
    by setting the slots directly. The result is the same, equal, immutable record.
    """
    record: DekRecord = _new(DekRecord)
    _SET_DEK_ID(record, dek_id)
    _SET_PRODUCT(record, product)
    _SET_MEK_NAME(record, mek_name)
    _SET_MEK_VERSION(record, mek_version)
    _SET_WRAPPED(record, wrapped)
    _SET_ALGORITHM(record, algorithm)
    _SET_CREATED_AT(record, created_at)
    _SET_UPDATED_AT(record, updated_at)
    _SET_REVISION(record, revision)
    _SET_ROW(record, row)
    return record


@dataclass(frozen=True, slots=True, kw_only=True)
class NewDek:
    """One row for :meth:`DekStore.create_many`: what :meth:`DekStore.create` takes."""

    dek_id: str
    mek_name: str
    mek_version: str
    wrapped: bytes = field(repr=False)
    algorithm: str

    @classmethod
    def of(cls, dek_id: str, *, mek_name: str, wrapped: WrappedDek) -> NewDek:
        """The row of DEK ``dek_id`` as a provider of MEK ``mek_name`` ``wrapped`` it."""
        return cls(
            dek_id=dek_id,
            mek_name=mek_name,
            mek_version=wrapped.mek_version,
            wrapped=wrapped.ciphertext,
            algorithm=wrapped.algorithm,
        )

    def create_in(self, store: DekStore) -> DekRecord:
        """:meth:`DekStore.create` of this row."""
        return store.create(
            dek_id=self.dek_id,
            mek_name=self.mek_name,
            mek_version=self.mek_version,
            wrapped=self.wrapped,
            algorithm=self.algorithm,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanFilter:
    """Which rows a DEK scan returns (:meth:`DekStore.scan`): those not on
    ``exclude_version``, those on ``only_version``, those in ``shard``; each ``None``:
    no limit. ``shard=(index, count)`` keeps the rows whose dekId hashes into part
    ``index`` of ``count``, so several workers can split one scan."""

    exclude_version: str | None = None
    only_version: str | None = None
    shard: tuple[int, int] | None = None


EVERY_ROW = ScanFilter()
"""The filter that keeps every row."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DekPage:
    """One page of a scan; ``cursor`` continues it, ``None`` when the scan is done."""

    records: list[DekRecord]
    cursor: str | None


WrapRow = tuple[object, object, str, str, bytes]
"""What a rewrap reads of one DEK row, as a plain tuple (:meth:`DekStore.scan_wraps`):
``(row, revision, dek_id, mek_version, wrapped)``. ``row`` and ``revision`` are the
store's own locator and compare-and-swap token, opaque to everyone else: they go back
unchanged in a :data:`NewWrap`."""

NewWrap = tuple[object, object, str, bytes]
"""A new wrap for a row read by :meth:`DekStore.scan_wraps`: ``(row, revision, dek_id,
wrapped)``, the first three as the scan gave them (:meth:`DekStore.swap_wraps`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WrapPage:
    """One page of :meth:`DekStore.scan_wraps`; ``cursor`` as in :class:`DekPage`."""

    rows: list[WrapRow]
    cursor: str | None


@runtime_checkable
class DekStore(Protocol):
    """The durable home of one product's wrapped DEKs.

    Writes that replace a wrap are compare-and-swap on the row's revision, so a stale
    writer never overwrites a newer wrap and a deleted DEK is never resurrected.
    """

    product: str
    remote: bool
    """Whether reads and writes cross a network (the rotation engine then overlaps them
    with the rewrap on threads; an embedded store's run on the rewrapping thread)."""

    def create(
        self, *, dek_id: str, mek_name: str, mek_version: str, wrapped: bytes, algorithm: str
    ) -> DekRecord:
        """Insert a new row; ``AlreadyExistsError`` if ``dek_id`` is taken."""
        ...

    def create_many(self, deks: Sequence[NewDek]) -> None:
        """Insert several new rows in one batch; ``AlreadyExistsError`` if a dekId is taken.

        On SQLite and PostgreSQL the batch is one transaction (all or none); on Cosmos DB it
        is item by item, so a failure may leave some of the rows created.
        """
        ...

    def get(self, dek_id: str) -> DekRecord:
        """The row for ``dek_id``; ``NotFoundError`` if there is none."""
        ...

    def get_many(self, dek_ids: Sequence[str]) -> dict[str, DekRecord]:
        """The rows that exist among ``dek_ids``."""
        ...

    def delete(self, dek_id: str) -> bool:
        """Remove the row (crypto-shredding its documents); whether there was one."""
        ...

    def delete_many(self, dek_ids: Sequence[str]) -> int:
        """Remove the rows in one batch (those already gone are skipped); how many there were."""
        ...

    def replace_wraps(self, updates: Sequence[WrapUpdate]) -> list[str]:
        """Apply the updates whose rows are unchanged, in one batch; the dekIds that lost."""
        ...

    def scan(
        self, *, cursor: str | None = None, limit: int = 1000, where: ScanFilter = EVERY_ROW
    ) -> DekPage:
        """The rows ``where`` keeps, in a stable order after ``cursor`` (keyset pagination,
        never offsets)."""
        ...

    def scan_wraps(
        self, *, cursor: str | None = None, limit: int = 1000, where: ScanFilter = EVERY_ROW
    ) -> WrapPage:
        """:meth:`scan`'s rows, order and cursors, each row only as a :data:`WrapRow`.

        The rewrap's hot path: no record object per row (a SQL store hands over the
        driver's tuples as they come).
        """
        ...

    def swap_wraps(
        self, wraps: Sequence[NewWrap], *, mek_version: str, algorithm: str
    ) -> list[str]:
        """:meth:`replace_wraps` for rows read by :meth:`scan_wraps`, every one moving to
        ``mek_version`` and ``algorithm``: in one batch, each row only if it is still at
        the revision read (compare-and-swap); the dekIds that lost."""
        ...

    def count_by_version(self) -> dict[str, int]:
        """How many DEKs each MEK version wraps."""
        ...

    def count_not_on(self, version: str) -> int:
        """How many DEKs are not wrapped under ``version`` (the runbook's verify query)."""
        ...

    def count_under(self, mek_name: str, version: str) -> dict[str, int]:
        """How many DEKs of each product of the database ``version`` of the MEK
        ``mek_name`` protects: wrapped directly under it, or under a KEK wrapped under it
        (every product, not only this store's: they share the key)."""
        ...

    def active_keks_under(self, mek_name: str, version: str) -> dict[str, int]:
        """How many *active* KEKs of each product of the database are wrapped under
        ``version`` of the MEK ``mek_name`` (this product's too; {} without a KEK tier).
        An active KEK takes the product's next DEKs even when it wraps none yet, so the
        version must stay enabled while one is under it."""
        ...


def check_product_store(product: str, store: DekStore) -> None:
    """Refuse a missing product name, or a dek_store that belongs to another product: what
    everything that keeps keys in a product's store (``FieldEncryptor``, ``IndexKeyring``)
    checks when it is built, before any key is wrapped into the wrong product."""
    if not product:
        raise ConfigurationError("a product name is required")
    if store.product != product:
        raise ConfigurationError(
            f"the dek_store belongs to product {store.product!r}, not {product!r}"
        )


KEK_PREFIX = "kek:"
"""A DEK row wrapped under a KEK records ``mek_version = "kek:" + kekId``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KekRecord:
    """One KEK, wrapped under one MEK version."""

    kek_id: str
    product: str
    partition: str
    mek_name: str
    mek_version: str
    wrapped: bytes = field(repr=False)
    algorithm: str
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    revision: str


@runtime_checkable
class KekStore(Protocol):
    """The durable home of a product's wrapped KEKs."""

    product: str

    def create(
        self, *, kek_id: str, partition: str, mek_name: str, mek_version: str,
        wrapped: bytes, algorithm: str,
    ) -> KekRecord:  # fmt: skip
        """Insert a new active KEK for ``partition``; it replaces the previous active one."""
        ...

    def get(self, kek_id: str) -> KekRecord:
        """One KEK; ``NotFoundError`` if there is none."""
        ...

    def active(self, partition: str = "") -> KekRecord | None:
        """The partition's active KEK, if any."""
        ...

    def all(self) -> list[KekRecord]:
        """Every KEK of the product, oldest first."""
        ...

    def replace_wrap(
        self, record: KekRecord, *, mek_version: str, wrapped: bytes, algorithm: str
    ) -> bool:
        """Compare-and-swap the KEK's wrap; whether it won."""
        ...

    def retire(self, kek_id: str) -> bool:
        """Make a KEK no longer active (new DEKs stop going under it); whether it was."""
        ...

    def delete(self, kek_id: str) -> bool:
        """Destroy a KEK (crypto-shredding its DEKs); whether there was one."""
        ...


def effective_counts(dek_counts: dict[str, int], keks: Sequence[KekRecord]) -> dict[str, int]:
    """DEKs per MEK version, counting a DEK wrapped under a KEK as on its KEK's MEK version.

    A DEK that names a KEK which no longer exists stays under its ``kek:`` name, so it is
    never counted as being on any MEK version.
    """
    by_id = {k.kek_id: k.mek_version for k in keks}
    out: dict[str, int] = {}
    for version, count in dek_counts.items():
        if version.startswith(KEK_PREFIX):
            version = by_id.get(version[len(KEK_PREFIX) :], version)
        out[version] = out.get(version, 0) + count
    return out


ALL_VERSIONS = "*"
"""In a :class:`KeyStateChange`: every cached key is affected (drop the whole cache)."""

KEPT_CHANGES = 32
"""How many of the latest changes a key-state record keeps. A process that missed more
(it was paused, or the store was unreachable) drops its whole cache instead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStateChange:
    """One change of key state that running processes must act on.

    ``versions`` are what the change touched, as DEK rows name them: MEK versions
    (``"2"``), KEKs (``"kek:<id>"``), or :data:`ALL_VERSIONS`. ``via`` is the command that
    made it (``keys disable``, ``migrate rewrap-deks``...).
    """

    epoch: int
    versions: tuple[str, ...]
    via: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyState:
    """The key-state record of one product: an epoch bumped on every change that should
    reach running processes, and the latest :data:`KEPT_CHANGES` changes, oldest first."""

    product: str
    epoch: int = 0
    changes: tuple[KeyStateChange, ...] = ()

    def since(self, epoch: int) -> tuple[KeyStateChange, ...] | None:
        """The changes after ``epoch``; ``None`` when some of them are no longer kept, or the
        record went back (the database was restored): then every cached key is suspect."""
        if epoch == self.epoch:
            return ()
        oldest = self.changes[0].epoch if self.changes else self.epoch + 1
        if epoch > self.epoch or epoch + 1 < oldest:  # went back (a restore), or too far behind
            return None
        return tuple(c for c in self.changes if c.epoch > epoch)

    def bumped(self, versions: Sequence[str], *, via: str, at: float) -> KeyState:
        """This state with one more change (the epoch moved on by one)."""
        change = KeyStateChange(epoch=self.epoch + 1, versions=tuple(versions), via=via, at=at)
        kept = (*self.changes, change)[-KEPT_CHANGES:]
        return KeyState(product=self.product, epoch=change.epoch, changes=kept)

    def changes_json(self) -> list[dict[str, object]]:
        """The kept changes as JSON-ready dicts (how every backend stores them)."""
        return [
            {"epoch": c.epoch, "versions": list(c.versions), "via": c.via, "at": c.at}
            for c in self.changes
        ]

    @classmethod
    def of_json(cls, product: str, epoch: int, changes: Sequence[dict[str, object]]) -> KeyState:
        """The state stored as ``epoch`` and :meth:`changes_json`."""
        return cls(
            product=product,
            epoch=int(epoch),
            changes=tuple(
                KeyStateChange(
                    epoch=int(c["epoch"]),  # type: ignore[call-overload]
                    versions=tuple(str(v) for v in c["versions"]),  # type: ignore[attr-defined]
                    via=str(c["via"]),
                    at=float(c["at"]),  # type: ignore[arg-type]
                )
                for c in changes
            ),
        )


@runtime_checkable
class KeyStateStore(Protocol):
    """Where a product's key-state epoch lives: one small record, in the product's database.

    Every running process reads it once per ``FIELD_ENCRYPT_KEY_STATE_POLL_SECONDS`` (one
    primary-key read); every command that changes key state bumps it, so those processes
    drop the affected cached keys within that interval rather than the cache's TTL.
    """

    product: str

    def read(self) -> KeyState:
        """The current record (epoch 0 with no changes when none was written yet)."""
        ...

    def bump(self, versions: Sequence[str], *, via: str) -> KeyState:
        """Record one change atomically (concurrent bumps are each counted); the new state."""
        ...
