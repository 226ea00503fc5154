"""``reindex``: move every blind-index value to the current index-key version; retire the old.

Rotating the index key (docs/queryable.md, "Rotating the index key"): ``index-keys create``
makes version ``v + 1``, the product's processes write ``v + 1`` values and look up both
(:meth:`~field_encrypt.index_keys.IndexKeyring.open`), and this job walks the indexed
collections with the machinery of the other document modes (``docwalk``: ledger, leases,
compare-and-swap, resume, progress, dry run, audit). A document is selected when an
indexed field has a value whose index value (``<field>__bi``, :mod:`field_encrypt.
index_values`) is missing, not an index value, or on another version than the current;
the job opens the document's fields with its DEK, recomputes the index values under the
current version and writes the document back with compare-and-swap (the DEK and the
tokens stay as they are). No DEK is created, so a crash leaves nothing to settle: a
resumed run re-reads its page and skips the documents already moved. Each page's
documents are recorded as ``document.reindexed``.

:func:`retire_index_version` is the gate: a version is deleted only when it is not the
current one and no stored index value is on it (``index-key.retired``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from field_encrypt.blind_index import BlindIndex
from field_encrypt.documents import StoredDocument, pages
from field_encrypt.errors import ConfigurationError, RotationError
from field_encrypt.index_keys import PROBE_WINDOW, IndexKeyring, reachable
from field_encrypt.index_values import indexed_collections, needs_reindex, tally, with_index_values
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.rotation.docwalk import DocumentJob, Pending
from field_encrypt.rotation.ledger import RunPlan
from field_encrypt.rotation.run import DryRun, MigrationOptions

__all__ = ["IndexRetirement", "ReindexJob", "index_value_counts", "retire_index_version"]


def keyring_of(runtime: ProductRuntime, provider: KeyProvider | None = None) -> IndexKeyring:
    """The product's index keyring, recording in its audit trail."""
    return IndexKeyring(
        product=runtime.encryptor.product,
        provider=provider if provider is not None else runtime.provider,
        store=runtime.dek_store,
        audit=runtime.audit,
    )


class ReindexJob(DocumentJob):
    """Recompute the index values not on the current index-key version."""

    mode: Final = "reindex"
    target = ""  # no DEK is created

    def __init__(
        self, runtime: ProductRuntime, options: MigrationOptions, *, provider: KeyProvider
    ) -> None:
        super().__init__(runtime, provider=provider)
        if options.old_version is not None or options.new_version is not None:
            raise ConfigurationError(
                "--mode reindex takes no MEK versions: it moves index values to the newest "
                "index-key version (field-encrypt index-keys list)"
            )
        self.indexed = indexed_collections(runtime)
        if not self.indexed:
            raise ConfigurationError(
                f"product {self.product!r} declares no indexed fields: nothing to reindex"
            )
        self.keyring = keyring_of(runtime, provider)
        versions = self.keyring.versions()
        if not versions:
            raise ConfigurationError(
                f"product {self.product!r} has no index key yet "
                f"(field-encrypt index-keys create --product {self.product})"
            )
        self.version = versions[-1]
        self.collections = {n: d for n, d in self.collections.items() if n in self.indexed}
        self.total_documents = sum(docs.count() for docs in self.collections.values())
        self.estimated_total = self.total_documents
        self.skipped_at_start = 0
        self.plan = RunPlan(
            mode=self.mode,
            from_version=None,
            to_version=f"index:{self.version}",
            shards=options.worker[1],
        )
        self._index: BlindIndex | None = None

    @property
    def index(self) -> BlindIndex:
        """The blind index of the current version (its root key unwrapped on first use)."""
        if self._index is None:
            fields = [f for specs in self.indexed.values() for f in specs]
            self._index = self.keyring.blind_index(fields, version=self.version)
        return self._index

    def check_ready(self) -> None:
        _ = self.index  # the current root key unwraps, or the run fails before any write

    def dry_run(self, max_rps: float | None) -> DryRun:
        counts: dict[str, dict[str, int]] = {}
        matched = 0
        for name, docs in self.collections.items():
            for page in pages(docs):
                matched += len(self.select(name, page.documents))
                for document in page.documents:
                    tally(counts, name, document.fields, self.indexed[name])
        by_version: dict[str, int] = {}
        for per in counts.values():
            for version, n in per.items():
                by_version[f"index:{version}"] = by_version.get(f"index:{version}", 0) + n
        calls = matched + 1  # one unwrap per document's DEK, one for the root key
        return DryRun(
            by_version=by_version,
            matched=matched,
            skipped=self.total_documents - matched,
            provider_calls=calls,
            estimated_seconds=calls / max_rps if max_rps else None,
        )

    def remaining(self) -> int:
        return sum(
            len(self.select(name, page.documents))
            for name, docs in self.collections.items()
            for page in pages(docs)
        )

    def select(self, collection: str, documents: list[StoredDocument]) -> list[StoredDocument]:
        specs = self.indexed.get(collection, [])
        return [
            d
            for d in documents
            if any(needs_reindex(d.fields, f.path, self.version) for f in specs)
        ]

    def seal(
        self, collection: str, document: StoredDocument, step: Pending | None
    ) -> tuple[dict[str, Any], str | None]:
        """The same tokens and DEK, with index values under the current index-key version."""
        plain = self.encryptor.decrypt_document(collection, document.id, document.fields)
        return with_index_values(self.index, collection, document.fields, plain), document.dek_id

    def audit_item(self, document: StoredDocument, step: Pending | None) -> dict[str, str]:
        return {"id": document.id, "indexKeyVersion": str(self.version)}


def index_value_counts(runtime: ProductRuntime) -> dict[str, dict[str, int]]:
    """Per indexed field (``"collection.path"``), how many stored index values are on each
    version (``"1"``), missing or invalid (:mod:`field_encrypt.index_values`). Reads only."""
    indexed = indexed_collections(runtime)
    counts: dict[str, dict[str, int]] = {
        f"{spec.collection}.{spec.path}": {} for specs in indexed.values() for spec in specs
    }
    for name, specs in indexed.items():
        for page in pages(runtime.documents[name]):
            for document in page.documents:
                tally(counts, name, document.fields, specs)
    return counts


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexRetirement:
    """What :func:`retire_index_version` did."""

    product: str
    version: int
    current: int
    counts: Mapping[str, Mapping[str, int]]

    def as_dict(self) -> dict[str, object]:
        return {
            "product": self.product,
            "retired": self.version,
            "current": self.current,
            "index_values": {k: dict(v) for k, v in self.counts.items()},
        }


def retire_index_version(runtime: ProductRuntime, version: int) -> IndexRetirement:
    """Delete index root key ``version`` once nothing needs it (the gate).

    Refused (:class:`RotationError`) while it is the current version, while any stored
    index value is still on it, or when the current version would then be out of reach of
    :meth:`~field_encrypt.index_keys.IndexKeyring.versions` (:func:`~field_encrypt.
    index_keys.reachable`); a version that does not exist is a :class:`ConfigurationError`.
    Processes must have stopped writing under it (they write under the newest version once
    they re-open the index, :meth:`~field_encrypt.index_keys.IndexKeyring.open`).
    """
    keyring = keyring_of(runtime)
    product = runtime.encryptor.product
    versions = keyring.versions()
    if version not in versions:
        raise ConfigurationError(
            f"index-key version {version} of product {product!r} does not exist "
            f"(present: {', '.join(map(str, versions)) or 'none'})"
        )
    current = versions[-1]
    if version == current:
        raise RotationError(
            f"refusing to retire index-key version {version}: it is the current one "
            "(create a newer version and reindex first)"
        )
    counts = index_value_counts(runtime)
    left = {name: per.get(str(version), 0) for name, per in counts.items()}
    if any(left.values()):
        named = ", ".join(f"{name}: {n}" for name, n in left.items() if n)
        raise RotationError(
            f"refusing to retire index-key version {version}: {sum(left.values())} index "
            f"values are still on it ({named}); run field-encrypt migrate --mode reindex "
            f"--product {product} first"
        )
    if reachable(v for v in versions if v != version)[-1:] != [current]:
        raise RotationError(
            f"refusing to retire index-key version {version}: without it {PROBE_WINDOW} or "
            f"more versions in a row below the current one ({current}) would be missing, and "
            f"versions are found in windows of {PROBE_WINDOW} (keep it; docs/queryable.md)"
        )
    keyring.delete(version, via="index-keys retire", data={"current": current})
    return IndexRetirement(product=product, version=version, current=current, counts=counts)
