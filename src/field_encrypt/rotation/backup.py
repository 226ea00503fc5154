"""``backup`` and ``restore`` of a product's dek_store, as JSON lines with a checksum.

The file: a header line, one line per DEK (its wrap in base64: useless without the MEK,
but keep the file as private as the database), and a trailer with the row count and the
SHA-256 of every byte before it. ``restore`` refuses a file whose checksum, count,
format or product does not match, before it writes anything.

The restore rule: **restore only adds DEKs that are missing; it never changes a row
that exists.** A dekId's DEK never changes, only its wrap, so an existing row is as
good as the backed-up one or newer (rewrapped since the backup); rows that differ are
counted as ``kept`` and named. A backup is read page by page from the live store, not
from one snapshot: rows created while it runs may or may not be in it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from field_encrypt.errors import RotationError
from field_encrypt.products import ProductRuntime
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
    identical: int
    kept: int
    kept_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "rows": self.rows,
            "inserted": self.inserted,
            "identical": self.identical,
            "kept": self.kept,
            "kept_examples": self.kept_examples,
        }


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
    """Add the backed-up DEKs that the store is missing (see the module docstring)."""
    store = runtime.dek_store
    product = runtime.encryptor.product
    rows = _read_checked(Path(path), product)
    inserted = identical = kept = 0
    kept_examples: list[str] = []
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        existing = store.get_many([r["dek_id"] for r in chunk])
        for row in chunk:
            wrapped = base64.b64decode(row["wrapped"], validate=True)
            live = existing.get(row["dek_id"])
            if live is None:
                store.create(
                    dek_id=row["dek_id"],
                    mek_name=row["mek_name"],
                    mek_version=row["mek_version"],
                    wrapped=wrapped,
                    algorithm=row["algorithm"],
                )
                inserted += 1
            elif live.wrapped == wrapped and live.mek_version == row["mek_version"]:
                identical += 1
            else:
                kept += 1
                if len(kept_examples) < EXAMPLES:
                    kept_examples.append(row["dek_id"])
    return RestoreReport(
        product=product,
        rows=len(rows),
        inserted=inserted,
        identical=identical,
        kept=kept,
        kept_examples=kept_examples,
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
