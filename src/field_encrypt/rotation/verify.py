"""``verify``: is the rotation finished and is every document still readable?

Four findings, all of which must be zero for a clean result:

1. DEKs not wrapped under the given version (the runbook's
   ``SELECT VALUE COUNT(1) FROM c WHERE c.mekVersion != "<new>"``, expected 0), counted
   by :func:`field_encrypt.usage.dek_counts`: with the KEK tier a DEK is on its KEK's
   MEK version;
2. sampled documents that do not decrypt end to end (an even stride over the documents);
3. documents that refer to a DEK the dek_store does not have;
4. DEKs no document refers to (after ``decrypt`` this lists the DEKs it kept on purpose);
   index root keys (:mod:`field_encrypt.index_keys`) live in the dek_store too and are not
   DEKs of documents, so they are not counted here (they are counted in finding 1).

For a product with blind indexes it also reports, per indexed field, how many stored index
values are on each index-key version (and missing or invalid), and how many are on a
version other than the current one (what ``migrate --mode reindex`` still has to move and
what keeps ``index-keys retire`` refusing). These do not make the MEK check unclean: an
index-key rotation and an MEK rotation are independent.

It reads everything once and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from field_encrypt.documents import pages
from field_encrypt.errors import FieldEncryptError
from field_encrypt.index_keys import IndexKeyring, is_index_key_id
from field_encrypt.index_values import INVALID, MISSING, tally
from field_encrypt.products import ProductRuntime
from field_encrypt.usage import dek_counts  # the one count; re-exported by rotation

__all__ = ["VerifyReport", "dek_counts", "verify"]

EXAMPLES = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """What ``verify`` found; :attr:`clean` only when every finding is zero."""

    product: str
    mek_version: str
    by_version: dict[str, int]
    not_on_version: int
    documents: int
    sampled: int
    undecryptable: list[str] = field(default_factory=list)
    missing_deks: int = 0
    missing_examples: list[str] = field(default_factory=list)
    unreferenced_deks: int = 0
    unreferenced_examples: list[str] = field(default_factory=list)
    index_version: int | None = None
    """The current index-key version (``None``: no indexed fields, or no index key yet)."""
    index_values: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per indexed field, stored index values per version, ``missing`` and ``invalid``."""

    @property
    def old_index_values(self) -> dict[str, int]:
        """Per indexed field, index values on a version other than the current one."""
        return {
            name: sum(
                n
                for version, n in per.items()
                if version not in (MISSING, INVALID, str(self.index_version))
            )
            for name, per in self.index_values.items()
        }

    @property
    def clean(self) -> bool:
        return not (
            self.not_on_version or self.undecryptable or self.missing_deks or self.unreferenced_deks
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "mek_version": self.mek_version,
            "clean": self.clean,
            "deks_by_version": self.by_version,
            "deks_not_on_version": self.not_on_version,
            "documents": self.documents,
            "sampled": self.sampled,
            "undecryptable": len(self.undecryptable),
            "undecryptable_examples": self.undecryptable[:EXAMPLES],
            "documents_with_missing_dek": self.missing_deks,
            "missing_dek_examples": self.missing_examples,
            "unreferenced_deks": self.unreferenced_deks,
            "unreferenced_dek_examples": self.unreferenced_examples,
            "index_version": self.index_version,
            "index_values": self.index_values,
            "old_index_values": self.old_index_values,
        }


def verify(runtime: ProductRuntime, *, mek_version: str, sample: int = 100) -> VerifyReport:
    """Check the product's DEKs and documents against ``mek_version``."""
    store = runtime.dek_store
    encryptor = runtime.encryptor
    by_version = dek_counts(runtime)  # effective versions: a DEK under a KEK counts as its KEK's
    not_on = sum(n for v, n in by_version.items() if v != mek_version)
    total = sum(docs.count() for docs in runtime.documents.values())
    stride = max(1, total // sample) if sample > 0 else 0
    index_counts: dict[str, dict[str, int]] = {
        f"{spec.collection}.{spec.path}": {} for spec in runtime.indexed
    }
    referenced: set[str] = set()
    missing: list[str] = []
    undecryptable: list[str] = []
    sampled = seen = 0
    for name, docs in runtime.documents.items():
        for page in pages(docs):
            ids = [d.dek_id for d in page.documents if d.dek_id]
            present = store.get_many(ids)
            for document in page.documents:
                tally(index_counts, name, document.fields, runtime.indexed)
                item = f"{name}/{document.id}"
                if document.dek_id:
                    referenced.add(document.dek_id)
                    if document.dek_id not in present:
                        missing.append(item)
                        continue
                if stride and seen % stride == 0 and sampled < sample:
                    sampled += 1
                    try:
                        encryptor.decrypt_document(name, document.id, document.fields)
                    except FieldEncryptError as exc:
                        undecryptable.append(f"{item}: {type(exc).__name__}")
                seen += 1
    unreferenced: list[str] = []
    unreferenced_count = 0
    cursor: str | None = None
    while True:
        dek_page = store.scan(cursor=cursor, limit=2000)
        for record in dek_page.records:
            if record.dek_id not in referenced and not is_index_key_id(record.dek_id):
                unreferenced_count += 1
                if len(unreferenced) < EXAMPLES:
                    unreferenced.append(record.dek_id)
        if dek_page.cursor is None:
            break
        cursor = dek_page.cursor
    index_versions = (
        IndexKeyring(product=encryptor.product, provider=runtime.provider, store=store).versions()
        if runtime.indexed
        else []
    )
    return VerifyReport(
        product=encryptor.product,
        mek_version=mek_version,
        by_version=by_version,
        not_on_version=not_on,
        documents=total,
        sampled=sampled,
        undecryptable=undecryptable,
        missing_deks=len(missing),
        missing_examples=missing[:EXAMPLES],
        unreferenced_deks=unreferenced_count,
        unreferenced_examples=unreferenced,
        index_version=index_versions[-1] if index_versions else None,
        index_values=index_counts,
    )
