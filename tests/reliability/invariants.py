"""The invariants every reliability suite checks, written once.

After any fault, kill, race or hostile input, a product's data must satisfy:

1. every document decrypts to its original plaintext (``expected``; documents the test
   deleted must be absent);
2. every DEK row holds a wrap that unwraps, under the version it names, to a 32-byte key;
3. no document points at a missing DEK, and every token in a document names the
   document's own DEK;
4. after a completed run, every DEK is on the target version and no DEK is unreferenced
   (a crashed document migration leaves no orphan once resumed);
5. on SQLite, ``PRAGMA integrity_check`` answers ``ok``.

The check reads through its own :class:`FieldEncryptor` with no cache, so a DEK that only
a warm cache could still open counts as lost. ``provider`` is the provider the data is
checked against: pass the real one (not a fault-injecting or killing wrapper).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from field_encrypt import DekCache, FieldEncryptError, FieldEncryptor, KeyProvider
from field_encrypt import token as tokens
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context


@dataclass
class InvariantReport:
    """What the check saw, and every violation it found (empty when all hold)."""

    documents: int = 0
    deks: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    unreferenced: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def assert_ok(self, where: str = "") -> InvariantReport:
        assert self.ok, f"invariants broken {where}:\n  " + "\n  ".join(self.problems[:20])
        return self


def check(
    runtime: ProductRuntime,
    expected: Mapping[str, Mapping[str, Any]] | None,
    *,
    provider: KeyProvider | None = None,
    deleted: frozenset[str] | set[str] = frozenset(),
    completed_on: str | None = None,
    skip_versions: frozenset[str] = frozenset(),
) -> InvariantReport:
    """Check every invariant; ``expected`` maps ``collection/id`` (or ``id`` for a product
    with one collection) to the document's plaintext fields. ``completed_on``: a run to
    this version has completed. ``skip_versions``: versions the test disabled on purpose
    (their wraps are not unwrapped)."""
    report = InvariantReport()
    provider = provider or runtime.provider
    product = runtime.encryptor.product
    reader = FieldEncryptor(
        product=product,
        provider=provider,
        store=runtime.dek_store,
        collections=runtime.encryptor.collections,
        cache=DekCache(max_entries=0),
        allow_plaintext=runtime.encryptor.allow_plaintext,
    )
    deks = _all_deks(runtime)
    report.deks = len(deks)
    for record in deks.values():
        report.by_version[record.mek_version] = report.by_version.get(record.mek_version, 0) + 1
        if record.mek_version in skip_versions:
            continue
        try:
            dek = provider.unwrap(
                record.wrapped,
                version=record.mek_version,
                context=dek_context(product, record.dek_id),
            )
        except FieldEncryptError as exc:
            report.problems.append(
                f"DEK {record.dek_id} does not unwrap under {record.mek_version}: {exc!r}"
            )
            continue
        if len(dek) != 32:
            report.problems.append(f"DEK {record.dek_id} unwraps to {len(dek)} bytes")
    single = len(runtime.documents) == 1
    seen: set[str] = set()
    referenced: set[str] = set()
    for name, docs in runtime.documents.items():
        cursor = None
        while True:
            page = docs.scan(cursor=cursor, limit=500)
            for document in page.documents:
                key = document.id if single else f"{name}/{document.id}"
                seen.add(key)
                report.documents += 1
                _check_document(reader, name, document, key, deks, expected, report, skip_versions)
                if document.dek_id:
                    referenced.add(document.dek_id)
            if page.cursor is None:
                break
            cursor = page.cursor
    if expected is not None:
        missing = sorted(set(expected) - seen)
        if missing:
            report.problems.append(f"documents lost: {missing[:5]} ({len(missing)})")
    resurrected = sorted(seen & set(deleted))
    if resurrected:
        report.problems.append(f"deleted documents are back: {resurrected[:5]}")
    report.unreferenced = len(set(deks) - referenced)
    if completed_on is not None:
        off = {v: n for v, n in report.by_version.items() if v != completed_on}
        if off:
            report.problems.append(f"run to {completed_on} completed but DEKs remain on {off}")
        if report.unreferenced:
            report.problems.append(f"{report.unreferenced} DEKs no document refers to")
    if isinstance(runtime.database, SqliteDatabase):
        ((result,),) = runtime.database.query("PRAGMA integrity_check")
        if result != "ok":
            report.problems.append(f"SQLite integrity_check: {result}")
    return report


def _check_document(
    reader: FieldEncryptor,
    collection: str,
    document: Any,
    key: str,
    deks: Mapping[str, Any],
    expected: Mapping[str, Mapping[str, Any]] | None,
    report: InvariantReport,
    skip_versions: frozenset[str],
) -> None:
    if document.dek_id and document.dek_id not in deks:
        report.problems.append(f"{key} points at missing DEK {document.dek_id}")
        return
    for value in _token_values(document.fields):
        named = tokens.read_header(tokens.as_binary(value)).dek_id.hex()
        if named != document.dek_id:
            report.problems.append(f"{key} holds a token of DEK {named}, not {document.dek_id}")
            return
    if document.dek_id and deks[document.dek_id].mek_version in skip_versions:
        return
    try:
        plain = reader.decrypt_document(collection, document.id, document.fields)
    except FieldEncryptError as exc:
        report.problems.append(f"{key} does not decrypt: {exc!r}")
        return
    if expected is None:
        return
    want = expected.get(key)
    if want is None:
        report.problems.append(f"{key} exists but the test never wrote it (or deleted it)")
        return
    got = {k: v for k, v in plain.items() if k in want}
    if got != dict(want):
        report.problems.append(f"{key} decrypts to something else than was written")


def _token_values(fields: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for value in fields.values():
        if isinstance(value, dict):
            out += _token_values(value)
        elif tokens.is_token(value):
            out.append(value)
    return out


def _all_deks(runtime: ProductRuntime) -> dict[str, Any]:
    deks = {}
    cursor = None
    while True:
        page = runtime.dek_store.scan(cursor=cursor, limit=1000)
        deks.update((r.dek_id, r) for r in page.records)
        if page.cursor is None:
            return deks
        cursor = page.cursor
