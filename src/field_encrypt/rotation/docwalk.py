"""The loop the document modes share (``re-encrypt``, ``encrypt``, ``decrypt``).

It walks every encrypted collection of the product, shard by shard, in pages; a mode
says which documents it selects and how it migrates one. Crash safety rests on one
rule: **a new DEK is named in the ledger before it is created**, and a page's new DEKs
stay "pending" until the page is checkpointed. A run that resumes first settles each
pending item by reading its document: committed (the document points at the new DEK)
means finish the step (re-encrypt deletes the old DEK); not committed means delete the
leftover new DEK. So no document ever points at a missing DEK, and no orphan DEK made
by a crashed run survives its resume.

A page is migrated in batches when the collection's store can write a page at once
(:class:`~field_encrypt.documents.BatchDocumentStore`): the page's new DEKs are created in
one store batch, each document is sealed, the page's documents are written in one batch
with a compare-and-swap per document, and what each committed step leaves to do (the old
DEKs of re-encrypted documents) is done in one batch. The order of the steps is the same
as one document at a time, so the same settling covers a crash anywhere in between; a
document whose write lost (changed or deleted meanwhile) takes the one-document path,
which reads it again. Because a page's old DEKs are read before its documents are sealed,
``re-encrypt`` reads them once more after the write: a document whose old DEK an application
shredded in the meantime is a failure (``DekMissingError``, as one at a time) and its new DEK
is deleted, so the shred stands.

Each page's migrated documents are recorded in the audit trail (``document.reencrypted``,
``document.backfilled`` or ``document.reindexed``: ids and dekIds) in one unit with the
page's document writes and its checkpoint (one transaction on SQLite and PostgreSQL; on
Cosmos DB an intent announcing the page first, which ``audit verify`` resolves to the
documents whose write took effect, :func:`page_item_done`). Steps settled on resume are
recorded (``settled``) only where the trail has no such unit (a trail of the
application's own); elsewhere their page's unit recorded them. DEKs a run deletes (the
old DEK of a re-encrypted document, a crashed step's leftover) are named there, not as
separate ``dek.shredded`` events.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from field_encrypt import token, tracing
from field_encrypt.backends.base import KEK_PREFIX, NewDek
from field_encrypt.documents import (
    BatchDocumentStore,
    DocumentStore,
    DocumentWrite,
    StoredDocument,
)
from field_encrypt.errors import (
    ConcurrentUpdateError,
    ConfigurationError,
    DecryptionError,
    DekMissingError,
    KeyProviderError,
    NotFoundError,
    UnsupportedFormatError,
)
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import (
    BatchWrapper,
    KeyProvider,
    WrappedDek,
    dek_context,
    dek_context_prefix,
    wrap_many,
)
from field_encrypt.rotation.ledger import Counters, Failure
from field_encrypt.rotation.run import ShardWork

MAX_CONFLICT_ROUNDS: Final = 3
ITEM_ERRORS = (DecryptionError, UnsupportedFormatError, KeyProviderError, NotFoundError)
"""Errors that fail one document and let the run go on."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A document step not yet settled: ``new`` is the DEK it made, ``old`` the one it had."""

    collection: str
    document: str
    new: str | None
    old: str | None

    def encode(self) -> str:
        return json.dumps([self.collection, self.document, self.new, self.old])

    @classmethod
    def decode(cls, text: str) -> Pending:
        collection, document, new, old = json.loads(text)
        return cls(collection, document, new, old)


@dataclass(frozen=True, slots=True)
class _PageEnd:
    """Where a page leaves the shard's cursor, and what its scan matched and skipped."""

    cursor: str
    matched: int
    skipped: int


class Skip(Exception):
    """Internal: the document no longer needs this step (changed or deleted meanwhile)."""


class DocumentJob:
    """Base of the document modes; subclasses set ``mode`` and define the three hooks."""

    target: str

    def __init__(self, runtime: ProductRuntime, *, provider: KeyProvider) -> None:
        self.runtime = runtime
        self.encryptor = runtime.encryptor
        self.store = runtime.dek_store
        self.provider = provider
        self.product = runtime.encryptor.product
        self.collections: Mapping[str, DocumentStore] = runtime.documents
        self.fields = {name: runtime.encryptor.collections[name] for name in runtime.documents}

    # -- hooks -----------------------------------------------------------------------------

    def select(self, collection: str, documents: list[StoredDocument]) -> list[StoredDocument]:
        """The documents of a page this mode migrates."""
        raise NotImplementedError

    def pending_for(self, collection: str, document: StoredDocument) -> Pending | None:
        """The new DEK this document's step will create, named before it exists."""
        return None

    def seal(
        self, collection: str, document: StoredDocument, step: Pending | None
    ) -> tuple[dict[str, Any], str | None]:
        """The document's new stored fields and dekId (nothing written yet)."""
        raise NotImplementedError

    def migrate(self, collection: str, document: StoredDocument, step: Pending | None) -> None:
        """Migrate one document (compare-and-swap); raise :class:`Skip` if it is moot."""
        fields, dek_id = self.seal(collection, document, step)
        self.collections[collection].replace_fields(document, fields, dek_id)

    def settle_committed(self, step: Pending) -> None:
        """What is left to do once a pending step's document is known to be committed."""

    def settle_committed_many(self, steps: Sequence[Pending]) -> None:
        """:meth:`settle_committed` for a page's committed steps (a mode may batch it)."""
        for step in steps:
            self.settle_committed(step)

    def audit_item(self, document: StoredDocument, step: Pending | None) -> dict[str, str]:
        """How a migrated document is named in the audit trail (ids only, never values)."""
        return {"id": document.id}

    def shredded_meanwhile(self, steps: Sequence[Pending]) -> set[str]:
        """Among the old DEKs of a page's just-written steps, those deleted while the page was
        being migrated (an application crypto-shredded them): none unless the mode reads them.
        """
        return set()

    # -- the loop ----------------------------------------------------------------------------

    def run_shard(self, work: ShardWork) -> None:
        self._settle(work)
        names = list(self.collections)
        start, cursor = _position(work.cursor)
        for index in range(start, len(names)):
            name = names[index]
            docs = self.collections[name]
            cursor = cursor if index == start else None
            while True:
                with tracing.span("field_encrypt.store.scan", store=name) as traced:
                    page = work.retry.call(
                        docs.scan, cursor=cursor, limit=work.batch_size, shard=work.sharding
                    )
                    tracing.annotate(traced, items=len(page.documents))
                todo = work.retry.call(self.select, name, page.documents)
                steps = [self.pending_for(name, d) for d in todo]
                pending = [s.encode() for s in steps if s is not None]
                if pending:  # name the new DEKs before creating them
                    work.checkpoint(cursor=work.cursor, delta=Counters(), pending=pending)
                done = page.cursor is None
                end = _PageEnd(
                    cursor=_encode(index + 1, None) if done else _encode(index, page.cursor),
                    matched=len(todo),
                    skipped=len(page.documents) - len(todo),
                )
                self._migrate_page(work, name, todo, steps, end)
                if done:
                    break
                cursor = page.cursor

    def _migrate_page(
        self,
        work: ShardWork,
        collection: str,
        todo: Sequence[StoredDocument],
        steps: Sequence[Pending | None],
        end: _PageEnd,
    ) -> None:
        """Migrate a page, then checkpoint it; its event is recorded with its writes.

        A batch's new DEKs are created and its documents sealed first; then the page's
        writes (one at a time: with each document's DEK), its checkpoint and its event are
        one unit of the audit outbox (:meth:`ShardWork.documents_recorded`): one
        transaction on SQLite and PostgreSQL, announced first by an intent on Cosmos DB.
        """
        docs = self.collections[collection]
        page = _Page()
        batch = isinstance(docs, BatchDocumentStore) and len(todo) > 1
        writes: list[DocumentWrite] = []
        written: list[int] = []
        if batch:
            failed = self._create_deks(
                work, [s.new for s in steps if s is not None and s.new is not None]
            )
            writes, written = self._seal_batch(work, collection, todo, steps, failed, page)
        announced = [self.audit_item(d, s) for d, s in zip(todo, steps, strict=True)]
        with work.documents_recorded(collection, announced) as recording:
            if batch:
                assert isinstance(docs, BatchDocumentStore)
                self._write_batch(work, collection, docs, todo, steps, writes, written, page)
            else:
                self._write_each(work, collection, todo, steps, page)
            delta, failures, migrated = page.result()
            work.checkpoint(
                cursor=end.cursor,
                delta=delta + Counters(matched=end.matched, skipped=end.skipped),
                failures=failures,
            )
            if migrated:
                recording.data.update(count=len(migrated), documents=migrated)
            else:
                recording.cancel()

    def _write_each(
        self,
        work: ShardWork,
        collection: str,
        todo: Sequence[StoredDocument],
        steps: Sequence[Pending | None],
        page: _Page,
    ) -> None:
        """A page one document at a time (a store that cannot write a page at once): each
        document's DEK created, its write, its old DEK deleted."""
        for document, step in zip(todo, steps, strict=True):
            self._migrate_item(work, collection, document, step, page, page.migrated.append)

    def _migrate_item(
        self,
        work: ShardWork,
        collection: str,
        document: StoredDocument,
        step: Pending | None,
        page: _Page,
        record: Callable[[dict[str, str]], None],
        *,
        lost: bool = False,
    ) -> None:
        """One document on its own (its new DEK created first, unless a batch that ``lost``
        the write created it): migrated (its audit item to ``record``), skipped or failed,
        counted on ``page``."""
        try:
            if not lost and step is not None and step.new is not None:
                work.retry.call(self.create_dek, step.new, self.target)
            page.conflicts += self._migrate_one(work, collection, document, step, lost=lost)
            page.changed += 1
            record(self.audit_item(document, step))
            if step is not None:
                self.settle_committed(step)
        except Skip:
            page.skipped += 1
            self._settle_one(work, step)
        except ITEM_ERRORS as exc:
            self._item_failed(work, collection, document, step, exc, page)

    def _seal_batch(
        self,
        work: ShardWork,
        collection: str,
        todo: Sequence[StoredDocument],
        steps: Sequence[Pending | None],
        failed: Mapping[str, Exception],
        page: _Page,
    ) -> tuple[list[DocumentWrite], list[int]]:
        """A batch's writes (see the module docstring), sealed; and their indexes in ``todo``."""
        writes: list[DocumentWrite] = []
        written: list[int] = []
        for index, (document, step) in enumerate(zip(todo, steps, strict=True)):
            try:
                if step is not None and step.new is not None and step.new in failed:
                    raise failed[step.new]
                fields, dek_id = work.retry.call(self.seal, collection, document, step)
            except ITEM_ERRORS as exc:
                self._item_failed(work, collection, document, step, exc, page)
                continue
            writes.append(DocumentWrite(document, fields, dek_id))
            written.append(index)
        return writes, written

    def _write_batch(
        self,
        work: ShardWork,
        collection: str,
        docs: BatchDocumentStore,
        todo: Sequence[StoredDocument],
        steps: Sequence[Pending | None],
        writes: Sequence[DocumentWrite],
        written: Sequence[int],
        page: _Page,
    ) -> None:
        """A batch's sealed writes, then what each committed step leaves to do."""
        outcome: list[dict[str, str] | None] = [None] * len(todo)  # audit items, in page order
        lost = set(work.retry.call(docs.replace_many, writes)) if writes else set()
        again = [i for i in written if todo[i].id in lost]
        won = [i for i in written if todo[i].id not in lost]
        shredded = work.retry.call(
            self.shredded_meanwhile, [s for i in won if (s := steps[i]) is not None]
        )
        committed: list[Pending] = []
        for index in won:
            document, step = todo[index], steps[index]
            if step is not None and step.old in shredded:
                page.failures.append(
                    Failure(
                        item=f"{collection}/{document.id}",
                        reason=f"DekMissingError: {DekMissingError(step.old)}",
                        shard=work.shard[0],
                    )
                )
                continue
            page.changed += 1
            outcome[index] = self.audit_item(document, step)
            if step is not None:
                committed.append(step)
        if shredded:  # the shred stands: the document stays unreadable, under no DEK
            self.drop_deks([s.new for i in won if (s := steps[i]) and s.old in shredded and s.new])
        self.settle_committed_many(committed)
        for index in again:  # changed or deleted since the scan: one at a time, read again
            record = functools.partial(outcome.__setitem__, index)
            self._migrate_item(work, collection, todo[index], steps[index], page, record, lost=True)
        page.migrated = [item for item in outcome if item is not None]

    def _item_failed(
        self,
        work: ShardWork,
        collection: str,
        document: StoredDocument,
        step: Pending | None,
        exc: Exception,
        page: _Page,
    ) -> None:
        """One document's step failed: a failure, or a skip if it was deleted meanwhile."""
        if self._deleted(work, collection, document.id):
            page.skipped += 1  # deleted meanwhile (its DEK with it): nothing to migrate
        else:
            page.failures.append(
                Failure(
                    item=f"{collection}/{document.id}",
                    reason=f"{type(exc).__name__}: {exc}",
                    shard=work.shard[0],
                )
            )
        self._settle_one(work, step)

    def _migrate_one(
        self,
        work: ShardWork,
        collection: str,
        document: StoredDocument,
        step: Pending | None,
        *,
        lost: bool = False,
    ) -> int:
        """Migrate with compare-and-swap, re-reading the document after each lost write.

        ``lost``: a batched write of this document already lost (the first round).
        """
        docs = self.collections[collection]
        for conflicts in range(MAX_CONFLICT_ROUNDS + 1):
            try:
                if not (lost and conflicts == 0):
                    work.retry.call(self.migrate, collection, document, step)
                    return conflicts
            except ConcurrentUpdateError:
                pass
            work.note("conflict", item=f"{collection}/{document.id}")
            try:
                document = work.retry.call(docs.get, document.id)
            except NotFoundError:
                raise Skip() from None
            if not self.select(collection, [document]):
                raise Skip() from None
        raise ConcurrentUpdateError(f"document {document.id} kept changing during the migration")

    def _deleted(self, work: ShardWork, collection: str, document_id: str) -> bool:
        """Whether the document is gone now (an application deleted it during the step)."""
        try:
            work.retry.call(self.collections[collection].get, document_id)
        except NotFoundError:
            return True
        return False

    def _settle(self, work: ShardWork) -> None:
        """Finish or undo the steps a crashed run left pending (see the module docstring)."""
        if not work.pending:
            return
        committed: dict[str, list[dict[str, str]]] = {}
        for text in work.pending:
            step = Pending.decode(text)
            if self._settle_one(work, step):
                item = {"id": step.document, "dekId": step.new, "previousDekId": step.old}
                committed.setdefault(step.collection, []).append(
                    {k: v for k, v in item.items() if v is not None}
                )
        work.note("settled", count=len(work.pending))
        work.checkpoint(cursor=work.cursor, delta=Counters(), pending=())
        for collection, items in committed.items():
            work.documents_done(collection, items, settled=True)

    def _settle_one(self, work: ShardWork, step: Pending | None) -> bool:
        """Committed (the document points at the new DEK): finish; otherwise drop the new DEK.

        Whether the step had been committed.
        """
        if step is None or step.new is None:
            return False
        docs = self.collections[step.collection]
        try:
            document: StoredDocument | None = work.retry.call(docs.get, step.document)
        except NotFoundError:
            document = None
        if document is not None and document.dek_id == step.new:
            self.settle_committed(step)
            return True
        self.drop_dek(step.new)
        return False

    # -- helpers for the modes -----------------------------------------------------------------

    def create_dek(self, dek_id: str, version: str) -> None:
        """A fresh DEK named ``dek_id``, wrapped under ``version``, stored and cached.

        With the KEK layout, "under MEK version V" means under the active KEK when that
        KEK is on V (the DEK's effective version is then V), as the application's own new
        DEKs are.
        """
        dek = os.urandom(32)
        wrapped = self.provider.wrap(
            dek, context=dek_context(self.product, dek_id), version=self.wrap_version(version)
        )
        NewDek.of(dek_id, mek_name=self.provider.mek_name, wrapped=wrapped).create_in(self.store)
        self.encryptor.remember(bytes.fromhex(dek_id), dek, wrapped.mek_version)

    def _create_deks(self, work: ShardWork, dek_ids: Sequence[str]) -> dict[str, Exception]:
        """:meth:`create_dek` for a page, the rows in one store batch; the wraps that failed.

        Each DEK is wrapped on its own (a failed wrap fails its document only, as one at a
        time); those wrapped are stored together, then cached.
        """
        if not dek_ids:
            return {}
        version = self.wrap_version(self.target)
        failed: dict[str, Exception] = {}
        made: list[tuple[NewDek, bytes]] = []
        if isinstance(self.provider, BatchWrapper):  # in process: one call for the page
            made, failed = self._wrap_page(work, dek_ids, version)
            dek_ids = ()
        for dek_id in dek_ids:
            dek = os.urandom(32)
            try:
                wrapped = work.retry.call(
                    self.provider.wrap,
                    dek,
                    context=dek_context(self.product, dek_id),
                    version=version,
                )
            except ITEM_ERRORS as exc:
                failed[dek_id] = exc
                continue
            new = NewDek.of(dek_id, mek_name=self.provider.mek_name, wrapped=wrapped)
            made.append((new, dek))
        if made:
            work.retry.call(self.store.create_many, [new for new, _ in made])
        remember = self.encryptor.remember
        for new, dek in made:
            remember(bytes.fromhex(new.dek_id), dek, new.mek_version)
        return failed

    def _wrap_page(
        self, work: ShardWork, dek_ids: Sequence[str], version: str
    ) -> tuple[list[tuple[NewDek, bytes]], dict[str, Exception]]:
        """Fresh DEKs for ``dek_ids`` wrapped in one ``wrap_many`` call; those that failed."""
        keys = os.urandom(32 * len(dek_ids))  # one system call for the page's DEKs
        deks = [keys[i : i + 32] for i in range(0, len(keys), 32)]
        prefix = dek_context_prefix(self.product)
        results = work.retry.call(
            wrap_many,
            self.provider,
            [(dek, prefix + dek_id.encode()) for dek, dek_id in zip(deks, dek_ids, strict=True)],
            version=version,
        )
        mek_name = self.provider.mek_name
        made: list[tuple[NewDek, bytes]] = []
        failed: dict[str, Exception] = {}
        for dek_id, dek, wrapped in zip(dek_ids, deks, results, strict=True):
            if isinstance(wrapped, WrappedDek):
                new = NewDek.of(dek_id, mek_name=mek_name, wrapped=wrapped)
                made.append((new, dek))
            elif isinstance(wrapped, ITEM_ERRORS):
                failed[dek_id] = wrapped
            else:  # what would stop the run for one DEK stops it for the page
                raise wrapped
        return made, failed

    def wrap_version(self, version: str) -> str:
        """Where a new DEK for MEK version ``version`` goes (the active KEK, with the tier)."""
        tier = self.runtime.kek_tier
        if tier is None or tier.layout != "kek" or version.startswith(KEK_PREFIX):
            return version
        kek = tier.dek_version("")
        return kek if tier.effective_version(kek) == version else version

    def effective_version(self, version: str) -> str:
        """A DEK row's MEK version, seen through its KEK (itself if the KEK is gone)."""
        tier = self.runtime.kek_tier
        if tier is None or not version.startswith(KEK_PREFIX):
            return version
        try:
            return tier.effective_version(version)
        except NotFoundError:
            return version

    def drop_dek(self, dek_id: str) -> None:
        """Delete a DEK this run made or replaced (named in the run's document events)."""
        self.encryptor.cache.invalidate(bytes.fromhex(dek_id))
        self.store.delete(dek_id)

    def drop_deks(self, dek_ids: Sequence[str]) -> None:
        """:meth:`drop_dek` for several, in one store batch."""
        if not dek_ids:
            return
        invalidate = self.encryptor.cache.invalidate
        for dek_id in dek_ids:
            invalidate(bytes.fromhex(dek_id))
        self.store.delete_many(dek_ids)

    def require_enabled(self, version: str) -> None:
        """``ConfigurationError`` unless ``version`` exists and is enabled."""
        states = {v.version: v.enabled for v in self.provider.versions()}
        if not states.get(version, False):
            state = "disabled" if version in states else "unknown"
            raise ConfigurationError(f"target MEK version {version!r} is {state}")

    def has_plaintext(self, collection: str, document: StoredDocument) -> bool:
        return any(
            v is not None and not token.is_token(v)
            for v in _values(document, self.fields[collection])
        )

    def has_tokens(self, collection: str, document: StoredDocument) -> bool:
        return any(token.is_token(v) for v in _values(document, self.fields[collection]))


class _Page:
    """What a page's migration counted, failed and migrated."""

    def __init__(self) -> None:
        self.changed = self.skipped = self.conflicts = 0
        self.failures: list[Failure] = []
        self.migrated: list[dict[str, str]] = []

    def result(self) -> tuple[Counters, list[Failure], list[dict[str, str]]]:
        delta = Counters(changed=self.changed, skipped=self.skipped, failed=len(self.failures))
        return delta + Counters(conflicts=self.conflicts), self.failures, self.migrated


def page_item_done(
    runtime: ProductRuntime, mode: str, collection: str, item: Mapping[str, Any]
) -> bool:
    """Whether the write of one document a page announced (an item of its event) took
    effect: the document now is what the step makes it (for ``audit verify`` resolving the
    intent of a page interrupted on Cosmos DB). ``re-encrypt`` and ``encrypt`` name the
    DEK the document must be under (a fresh one: nothing else writes it); ``encrypt``
    also leaves no plaintext, ``decrypt`` no DEK and no token, ``reindex`` every index
    value on the announced version. A document deleted since is not counted."""
    docs = runtime.documents.get(collection)
    if docs is None:
        return False
    try:
        document = docs.get(str(item["id"]))
    except NotFoundError:
        return False
    if mode == "reindex":
        from field_encrypt.index_values import indexed_collections, needs_reindex

        version = int(item["indexKeyVersion"])
        specs = indexed_collections(runtime).get(collection, [])
        return not any(needs_reindex(document.fields, f.path, version) for f in specs)
    values = _values(document, runtime.encryptor.collections.get(collection, ()))
    if mode == "decrypt":
        return document.dek_id is None and not any(token.is_token(v) for v in values)
    if document.dek_id != item.get("dekId"):
        return False
    return mode != "encrypt" or all(v is None or token.is_token(v) for v in values)


def new_dek_id() -> str:
    return uuid.uuid4().hex


def _values(document: StoredDocument, paths: Sequence[str]) -> list[Any]:
    values = []
    for path in paths:
        node: Any = document.fields
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values.append(node)
    return values


def _position(cursor: str | None) -> tuple[int, str | None]:
    if not cursor:
        return 0, None
    index, inner = json.loads(cursor)
    return int(index), inner


def _encode(index: int, cursor: str | None) -> str:
    return json.dumps([index, cursor])
