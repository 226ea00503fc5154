"""``encrypt`` (backfill plaintext documents) and ``decrypt`` (back an adoption out).

``encrypt`` seals every configured field that still holds plaintext; a document without
a DEK gets one (named in the ledger first, see ``docwalk``), a document that has one
keeps it. ``decrypt`` writes the plaintext back and clears the document's dekId; it does
not delete the DEKs (a restored backup of the encrypted documents would need them), so
``verify`` lists them as unreferenced until they are removed on purpose.
Both are idempotent: a document already in the desired state is skipped.
"""

from __future__ import annotations

from typing import Any, Final

from field_encrypt.documents import StoredDocument, pages
from field_encrypt.errors import ConfigurationError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.rotation.docwalk import DocumentJob, Pending, new_dek_id
from field_encrypt.rotation.ledger import RunPlan
from field_encrypt.rotation.run import DryRun, MigrationOptions
from field_encrypt.usage import dek_counts


class _Backfill(DocumentJob):
    def __init__(
        self, runtime: ProductRuntime, options: MigrationOptions, *, provider: KeyProvider
    ) -> None:
        super().__init__(runtime, provider=provider)
        self.total_documents = sum(docs.count() for docs in self.collections.values())
        self.estimated_total = self.total_documents
        self.skipped_at_start = 0

    def dry_run(self, max_rps: float | None) -> DryRun:
        matched = sum(
            len(self.select(name, page.documents))
            for name, docs in self.collections.items()
            for page in pages(docs)
        )
        return DryRun(
            by_version=dek_counts(self.runtime),
            matched=matched,
            skipped=self.total_documents - matched,
            provider_calls=matched,
            estimated_seconds=matched / max_rps if max_rps else None,
        )

    def remaining(self) -> None:
        return None


class EncryptJob(_Backfill):
    """Seal the plaintext fields of every document."""

    mode: Final = "encrypt"

    def __init__(
        self, runtime: ProductRuntime, options: MigrationOptions, *, provider: KeyProvider
    ) -> None:
        super().__init__(runtime, options, provider=provider)
        if not self.encryptor.enabled:
            raise ConfigurationError("the encrypt backfill needs FIELD_ENCRYPT_ENABLED=true")
        if options.old_version is not None:
            raise ConfigurationError("--old-mek-version does not apply to --mode encrypt")
        self.target = options.new_version or provider.current_version()
        self.plan = RunPlan(
            mode=self.mode, from_version=None, to_version=self.target, shards=options.worker[1]
        )

    def check_ready(self) -> None:
        self.require_enabled(self.target)

    def select(self, collection: str, documents: list[StoredDocument]) -> list[StoredDocument]:
        return [d for d in documents if self.has_plaintext(collection, d)]

    def pending_for(self, collection: str, document: StoredDocument) -> Pending | None:
        if document.dek_id is not None:
            return None
        return Pending(collection, document.id, new_dek_id(), None)

    def seal(
        self, collection: str, document: StoredDocument, step: Pending | None
    ) -> tuple[dict[str, Any], str | None]:
        dek_id = document.dek_id or (step.new if step is not None else None)
        assert dek_id is not None
        sealed = self.encryptor.encrypt_document(
            collection, document.id, document.fields, dek_id=dek_id
        )
        return sealed, dek_id

    def audit_item(self, document: StoredDocument, step: Pending | None) -> dict[str, str]:
        dek_id = document.dek_id or (step.new if step is not None else None)
        return {"id": document.id, "dekId": dek_id} if dek_id else {"id": document.id}


class DecryptJob(_Backfill):
    """Write every encrypted field back as plaintext."""

    mode: Final = "decrypt"
    target = ""

    def __init__(
        self, runtime: ProductRuntime, options: MigrationOptions, *, provider: KeyProvider
    ) -> None:
        super().__init__(runtime, options, provider=provider)
        if options.old_version is not None or options.new_version is not None:
            raise ConfigurationError("--mode decrypt takes no MEK versions")
        self.plan = RunPlan(
            mode=self.mode, from_version=None, to_version=None, shards=options.worker[1]
        )

    def check_ready(self) -> None:
        pass

    def select(self, collection: str, documents: list[StoredDocument]) -> list[StoredDocument]:
        return [d for d in documents if d.dek_id is not None or self.has_tokens(collection, d)]

    def seal(
        self, collection: str, document: StoredDocument, step: Pending | None
    ) -> tuple[dict[str, Any], str | None]:
        return self.encryptor.decrypt_document(collection, document.id, document.fields), None

    def audit_item(self, document: StoredDocument, step: Pending | None) -> dict[str, str]:
        if document.dek_id is None:
            return {"id": document.id}
        return {"id": document.id, "previousDekId": document.dek_id}
