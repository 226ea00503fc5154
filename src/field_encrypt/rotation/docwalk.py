"""The loop the document modes share (``re-encrypt``, ``encrypt``, ``decrypt``).

It walks every encrypted collection of the product, shard by shard, in pages; a mode
says which documents it selects and how it migrates one. Crash safety rests on one
rule: **a new DEK is named in the ledger before it is created**, and a page's new DEKs
stay "pending" until the page is checkpointed. A run that resumes first settles each
pending item by reading its document: committed (the document points at the new DEK)
means finish the step (re-encrypt deletes the old DEK); not committed means delete the
leftover new DEK. So no document ever points at a missing DEK, and no orphan DEK made
by a crashed run survives its resume.

Each page's migrated documents are recorded in the audit trail after the page's
checkpoint (``document.reencrypted`` or ``document.backfilled``: ids and dekIds), and so
are steps settled on resume. DEKs a run deletes (the old DEK of a re-encrypted document,
a crashed step's leftover) are named there, not as separate ``dek.shredded`` events.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt import token, tracing
from field_encrypt.backends.base import KEK_PREFIX
from field_encrypt.documents import DocumentStore, StoredDocument
from field_encrypt.errors import (
    ConcurrentUpdateError,
    ConfigurationError,
    DecryptionError,
    KeyProviderError,
    NotFoundError,
    UnsupportedFormatError,
)
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider, dek_context
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

    def migrate(self, collection: str, document: StoredDocument, step: Pending | None) -> None:
        """Migrate one document (compare-and-swap); raise :class:`Skip` if it is moot."""
        raise NotImplementedError

    def settle_committed(self, step: Pending) -> None:
        """What is left to do once a pending step's document is known to be committed."""

    def audit_item(self, document: StoredDocument, step: Pending | None) -> dict[str, str]:
        """How a migrated document is named in the audit trail (ids only, never values)."""
        return {"id": document.id}

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
                delta, failures, migrated = self._migrate_page(work, name, todo, steps)
                done = page.cursor is None
                work.checkpoint(
                    cursor=_encode(index + 1, None) if done else _encode(index, page.cursor),
                    delta=delta
                    + Counters(matched=len(todo), skipped=len(page.documents) - len(todo)),
                    failures=failures,
                )
                work.documents_done(name, migrated)
                if done:
                    break
                cursor = page.cursor

    def _migrate_page(
        self,
        work: ShardWork,
        collection: str,
        todo: Sequence[StoredDocument],
        steps: Sequence[Pending | None],
    ) -> tuple[Counters, list[Failure], list[dict[str, str]]]:
        changed = skipped = conflicts = 0
        failures: list[Failure] = []
        migrated: list[dict[str, str]] = []
        for document, step in zip(todo, steps, strict=True):
            try:
                if step is not None and step.new is not None:
                    work.retry.call(self.create_dek, step.new, self.target)
                conflicts += self._migrate_one(work, collection, document, step)
                changed += 1
                migrated.append(self.audit_item(document, step))
                if step is not None:
                    self.settle_committed(step)
            except Skip:
                skipped += 1
                self._settle_one(work, step)
            except ITEM_ERRORS as exc:
                if self._deleted(work, collection, document.id):
                    skipped += 1  # deleted meanwhile (its DEK with it): nothing to migrate
                    self._settle_one(work, step)
                    continue
                failures.append(
                    Failure(
                        item=f"{collection}/{document.id}",
                        reason=f"{type(exc).__name__}: {exc}",
                        shard=work.shard[0],
                    )
                )
                self._settle_one(work, step)
        delta = Counters(changed=changed, skipped=skipped, failed=len(failures))
        return delta + Counters(conflicts=conflicts), failures, migrated

    def _migrate_one(
        self, work: ShardWork, collection: str, document: StoredDocument, step: Pending | None
    ) -> int:
        """Migrate with compare-and-swap, re-reading the document after each lost write."""
        docs = self.collections[collection]
        for conflicts in range(MAX_CONFLICT_ROUNDS + 1):
            try:
                work.retry.call(self.migrate, collection, document, step)
                return conflicts
            except ConcurrentUpdateError:
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
        self.store.create(
            dek_id=dek_id,
            mek_name=self.provider.mek_name,
            mek_version=wrapped.mek_version,
            wrapped=wrapped.ciphertext,
            algorithm=wrapped.algorithm,
        )
        self.encryptor.cache.put(bytes.fromhex(dek_id), AESGCM(dek), wrapped.mek_version)

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
