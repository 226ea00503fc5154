"""``re-encrypt``: every selected document gets a fresh DEK (recovery, or a compromised DEK).

Per document: name the new DEK in the ledger, create it under the target MEK version,
open the fields with the old DEK and seal them with the new one, write the document
with compare-and-swap, and only then delete the old DEK. The order is what makes it
crash-safe (``docwalk`` settles whatever a crash leaves half done). A page takes each of
those steps for all its documents at once where the stores allow (``docwalk``): its new
DEKs in one batch, its documents in one batch, its old DEKs deleted in one batch; the old
DEKs' rows, read once per page to select the documents, are unwrapped from that read.

A document is selected when its DEK is wrapped under a version other than the target
(with ``--old-mek-version``, under that version): create a new MEK version first, and a
re-run after completion finds nothing to do. It assumes one DEK per document, as
:class:`~field_encrypt.envelope.FieldEncryptor` creates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from field_encrypt.backends.base import DekRecord
from field_encrypt.documents import StoredDocument
from field_encrypt.errors import ConfigurationError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.rotation.docwalk import DocumentJob, Pending, new_dek_id
from field_encrypt.rotation.ledger import RunPlan
from field_encrypt.rotation.run import DryRun, MigrationOptions
from field_encrypt.usage import count_not_on, dek_counts


class ReencryptJob(DocumentJob):
    """Fresh DEKs for the documents whose DEK is off the target version."""

    mode: Final = "re-encrypt"

    def __init__(
        self, runtime: ProductRuntime, options: MigrationOptions, *, provider: KeyProvider
    ) -> None:
        super().__init__(runtime, provider=provider)
        if not self.encryptor.enabled:
            raise ConfigurationError("re-encrypt needs FIELD_ENCRYPT_ENABLED=true")
        self.only = options.old_version
        self.target = options.new_version or provider.current_version()
        self.counts = dek_counts(runtime)  # effective versions (a DEK under a KEK: its KEK's)
        if self.only is not None:
            self.estimated_total = self.counts.get(self.only, 0)
        else:
            self.estimated_total = sum(n for v, n in self.counts.items() if v != self.target)
        self.skipped_at_start = 0  # documents left alone are counted as the scan meets them
        self._records: dict[str, DekRecord] = {}  # the DEK rows of the page select last read
        self._generation = 0
        self.plan = RunPlan(
            mode=self.mode, from_version=self.only, to_version=self.target, shards=options.worker[1]
        )

    def dry_run(self, max_rps: float | None) -> DryRun:
        calls = 2 * self.estimated_total  # wrap the new DEK, unwrap the old
        return DryRun(
            by_version=dict(self.counts),
            matched=self.estimated_total,
            skipped=sum(self.counts.values()) - self.estimated_total,
            provider_calls=calls,
            estimated_seconds=calls / max_rps if max_rps else None,
        )

    def check_ready(self) -> None:
        self.require_enabled(self.target)

    def remaining(self) -> int:
        if self.only is not None:
            return dek_counts(self.runtime).get(self.only, 0)
        return count_not_on(self.runtime, self.target)

    def select(self, collection: str, documents: list[StoredDocument]) -> list[StoredDocument]:
        generation = self.encryptor.cache.generation  # before the rows are read
        records = self.store.get_many([d.dek_id for d in documents if d.dek_id])
        self._records, self._generation = records, generation  # for seal: no second read
        selected: list[StoredDocument] = []
        for document in documents:
            if document.dek_id is None:
                continue
            record = records.get(document.dek_id)
            version = None if record is None else self.effective_version(record.mek_version)
            if version is None or (
                version != self.target and (self.only is None or version == self.only)
            ):  # a missing DEK: selected, so the failure is named
                selected.append(document)
        # The page's old DEKs unwrapped in one provider call (in-process providers): seal
        # then finds each in the cache. One that fails is unwrapped again, alone, by seal.
        self.encryptor.load_records(
            [r for d in selected if d.dek_id and (r := records.get(d.dek_id)) is not None],
            generation=generation,
        )
        return selected

    def pending_for(self, collection: str, document: StoredDocument) -> Pending | None:
        return Pending(collection, document.id, new_dek_id(), document.dek_id)

    def seal(
        self, collection: str, document: StoredDocument, step: Pending | None
    ) -> tuple[dict[str, Any], str | None]:
        assert step is not None and step.new is not None
        record = self._records.get(document.dek_id) if document.dek_id else None
        if record is not None:  # the old DEK's row, read by select: unwrap it from there
            self.encryptor.load_record(record, generation=self._generation)
        plain = self.encryptor.decrypt_document(collection, document.id, document.fields)
        sealed = self.encryptor.encrypt_document(collection, document.id, plain, dek_id=step.new)
        return sealed, step.new

    def settle_committed(self, step: Pending) -> None:
        if step.old is not None and step.old != step.new:
            self.drop_dek(step.old)

    def shredded_meanwhile(self, steps: Sequence[Pending]) -> set[str]:
        # The page read the old DEKs once, before sealing its documents (and a batch writes
        # later than one document at a time would): one read now finds a DEK an application
        # shredded in between, so the document is not left readable under its new DEK.
        olds = [s.old for s in steps if s.old is not None and s.old != s.new]
        if not olds:
            return set()
        return set(olds) - set(self.store.get_many(olds))

    def settle_committed_many(self, steps: Sequence[Pending]) -> None:
        self.drop_deks([s.old for s in steps if s.old is not None and s.old != s.new])

    def audit_item(self, document: StoredDocument, step: Pending | None) -> dict[str, str]:
        item = {"id": document.id}
        if step is not None and step.new is not None:
            item["dekId"] = step.new
        if document.dek_id is not None:
            item["previousDekId"] = document.dek_id
        return item
