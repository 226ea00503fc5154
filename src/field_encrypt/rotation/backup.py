"""``backup`` and ``restore`` of a product's dek_store, as JSON lines with a checksum.

The file: a header line, one line per DEK (its wrap in base64: useless without the MEK,
but keep the file as private as the database), and a trailer with the row count and the
SHA-256 of every byte before it. ``restore`` refuses a file whose checksum, count,
format or product does not match, before it writes anything.

The restore rule: **restore adds the DEKs that are missing and repairs the rows that no
longer unwrap; it never changes a row that unwraps.** A dekId's DEK never changes, only
its wrap, so an existing row that unwraps is as good as the backed-up one or newer
(rewrapped since the backup): rows that differ are counted as ``kept`` and named. Every
backed-up DEK's live row is unwrapped through the provider (one unwrap each); a row that
does not unwrap (a corrupted wrap, a garbled version) is replaced by the backed-up wrap,
if that one unwraps, with compare-and-swap (a concurrent writer wins), and counted as
``repaired``. Each row written is recorded as ``dek.restored`` in the audit trail, in the
same unit as the write (:func:`~field_encrypt.audit.recorded`). The
DEKs that still do not unwrap afterwards are counted as ``unreadable`` and named.
A backup is read page by page from the live store, not from one snapshot: rows created
while it runs may or may not be in it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from field_encrypt.audit import DEK_RESTORED, Recording, recorded
from field_encrypt.backends.base import DekRecord, WrapUpdate
from field_encrypt.errors import (
    AlreadyExistsError,
    DecryptionError,
    KeyProviderError,
    KeyProviderUnavailableError,
    RotationError,
)
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import dek_context
from field_encrypt.rotation.ledger import BackupRecord, RunLedger

FORMAT: Final = "field-encrypt/dek-backup"
VERSION: Final = 1
EXAMPLES: Final = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreReport:
    """What ``restore`` did."""

    product: str
    rows: int
    inserted: int
    """Missing rows added from the backup."""
    repaired: int = 0
    """Rows that did not unwrap, replaced by their backed-up wrap."""
    identical: int
    kept: int
    """Rows that differ from the backup and unwrap (rewrapped since): left as they are."""
    unreadable: int = 0
    """Backed-up DEKs whose row still does not unwrap (nor does the backup's)."""
    kept_examples: list[str] = field(default_factory=list)
    unreadable_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backup(
    runtime: ProductRuntime,
    ledger: RunLedger,
    path: str | os.PathLike[str],
    *,
    clock: Callable[[], float] = time.time,
) -> BackupRecord:
    """Write the product's dek_store to ``path`` (atomically, mode 0600) and record it."""
    store = runtime.dek_store
    product = runtime.encryptor.product
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    count = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:

        def emit(obj: dict[str, Any]) -> None:
            line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
            digest.update(line)
            out.write(line)

        emit({"format": FORMAT, "version": VERSION, "product": product, "created_at": clock()})
        cursor: str | None = None
        while True:
            page = store.scan(cursor=cursor, limit=2000)
            for r in page.records:
                emit(
                    {
                        "dek_id": r.dek_id,
                        "mek_name": r.mek_name,
                        "mek_version": r.mek_version,
                        "wrapped": base64.b64encode(r.wrapped).decode(),
                        "algorithm": r.algorithm,
                        "updated_at": r.updated_at.timestamp(),
                    }
                )
                count += 1
            if page.cursor is None:
                break
            cursor = page.cursor
        checksum = digest.hexdigest()
        out.write(json.dumps({"count": count, "sha256": checksum}).encode() + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    record = BackupRecord(
        product=product, at=clock(), path=str(target), count=count, checksum=checksum
    )
    ledger.record_backup(record)
    return record


def restore(runtime: ProductRuntime, path: str | os.PathLike[str]) -> RestoreReport:
    """Add the missing DEKs and repair the unreadable ones (see the module docstring)."""
    store = runtime.dek_store
    product = runtime.encryptor.product
    rows = _read_checked(Path(path), product)
    counts = {"inserted": 0, "repaired": 0, "identical": 0, "kept": 0}
    kept_examples: list[str] = []
    unreadable: list[str] = []
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        existing = store.get_many([r["dek_id"] for r in chunk])
        for row in chunk:
            outcome, readable = _restore_row(runtime, row, existing.get(row["dek_id"]))
            if not readable:
                unreadable.append(row["dek_id"])
            if outcome is None:
                continue
            counts[outcome] += 1
            if outcome == "kept" and len(kept_examples) < EXAMPLES:
                kept_examples.append(row["dek_id"])
    return RestoreReport(
        product=product,
        rows=len(rows),
        kept_examples=kept_examples,
        unreadable=len(unreadable),
        unreadable_examples=unreadable[:EXAMPLES],
        **counts,
    )


def _restore_row(
    runtime: ProductRuntime, row: dict[str, Any], live: DekRecord | None
) -> tuple[str | None, bool]:
    """Restore one backed-up row: what happened (inserted, repaired, identical, kept, or
    ``None`` for nothing possible) and whether the row now in the store unwraps."""
    store = runtime.dek_store
    dek_id = row["dek_id"]
    wrapped = base64.b64decode(row["wrapped"], validate=True)
    if live is None:
        try:  # the failed insert rolls the unit back (an intent left is dropped later)
            with _restoring(runtime, dek_id, row["mek_version"], wrapped, "missing"):
                store.create(
                    dek_id=dek_id,
                    mek_name=row["mek_name"],
                    mek_version=row["mek_version"],
                    wrapped=wrapped,
                    algorithm=row["algorithm"],
                )
        except AlreadyExistsError:  # created since it was read: judge the row now there
            return _restore_row(runtime, row, store.get(dek_id))
        return "inserted", _unwraps(runtime, dek_id, wrapped, row["mek_version"])
    same = live.wrapped == wrapped and live.mek_version == row["mek_version"]
    if _unwraps(runtime, dek_id, live.wrapped, live.mek_version):
        return ("identical" if same else "kept"), True
    if same or not _unwraps(runtime, dek_id, wrapped, row["mek_version"]):
        return None, False
    update = WrapUpdate(
        record=live, mek_version=row["mek_version"], wrapped=wrapped, algorithm=row["algorithm"]
    )
    with _restoring(runtime, dek_id, row["mek_version"], wrapped, "unreadable") as event:
        if store.replace_wraps([update]):
            event.cancel()
    if event.cancelled:  # lost the compare-and-swap: judge the row now there
        return _restore_row(runtime, row, store.get_many([dek_id]).get(dek_id))
    runtime.encryptor.cache.invalidate(bytes.fromhex(dek_id))
    return "repaired", True


def _unwraps(runtime: ProductRuntime, dek_id: str, wrapped: bytes, version: str) -> bool:
    """Whether a wrap opens under the provider (a transient failure propagates)."""
    context = dek_context(runtime.encryptor.product, dek_id)
    try:
        runtime.provider.unwrap(wrapped, version=version, context=context)
    except KeyProviderUnavailableError:
        raise
    except (DecryptionError, KeyProviderError):
        return False
    return True


def _restoring(
    runtime: ProductRuntime, dek_id: str, version: str, wrapped: bytes, reason: str
) -> AbstractContextManager[Recording]:
    """The unit of one row written and its ``dek.restored`` (:func:`recorded`; the
    reconciler tells the act by the row's wrap, named by its SHA-256, never the wrap)."""
    return recorded(
        runtime.audit,
        DEK_RESTORED,
        subject=f"dek/{dek_id}",
        data={"dekId": dek_id, "mekVersion": version, "reason": reason},
        check={"wrappedSha256": hashlib.sha256(wrapped).hexdigest()},
    )


def _read_checked(path: Path, product: str) -> list[dict[str, Any]]:
    """The DEK rows of a backup file, after every check has passed."""
    lines = path.read_bytes().splitlines(keepends=True)
    if len(lines) < 2:
        raise RotationError(f"refusing to restore {path}: not a dek_store backup (too short)")
    try:
        header = json.loads(lines[0])
        trailer = json.loads(lines[-1])
        body = [json.loads(line) for line in lines[1:-1]]
    except ValueError:
        raise RotationError(f"refusing to restore {path}: a line is not JSON") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise RotationError(f"refusing to restore {path}: not a version-{VERSION} dek_store backup")
    actual = hashlib.sha256(b"".join(lines[:-1])).hexdigest()
    if trailer.get("sha256") != actual or trailer.get("count") != len(body):
        raise RotationError(
            f"refusing to restore {path}: checksum mismatch (the file is damaged or was edited)"
        )
    if header.get("product") != product:
        raise RotationError(
            f"refusing to restore {path}: it is a backup of product {header.get('product')!r}, "
            f"not {product!r}"
        )
    return body
