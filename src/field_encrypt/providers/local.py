"""The ``local`` provider: a keyring file holding every MEK version and its state.

For laptops and CI, to rehearse the whole runbook (create a version, rewrap, disable)
without a cloud. The file (``FIELD_ENCRYPT_KEYRING``) is JSON, written atomically
(temporary file, fsync, rename) with 0600 permissions, under an exclusive ``flock`` so
two processes never lose each other's change. Other processes pick up a change within
``refresh_seconds``. Not for production: the MEKs sit on disk in the clear.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from field_encrypt.errors import ConfigurationError, FieldEncryptError, KeyVersionNotFoundError
from field_encrypt.providers.base import KeyVersion, RewrapByUnwrapping, WrappedDek
from field_encrypt.providers.symmetric import SymmetricKeyring

_FORMAT = 1


@dataclass(slots=True, kw_only=True)
class _Version:
    version: str
    enabled: bool
    created_at: dt.datetime
    key: bytes = field(repr=False)


class LocalKeyProvider(RewrapByUnwrapping):
    """MEK versions ``"1"``, ``"2"``... in a keyring file; the newest is current."""

    kind = "local"
    remote = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mek_name: str,
        create: bool = True,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.mek_name = mek_name
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self._versions: list[_Version] = []
        self._keyring = SymmetricKeyring(mek_name, {}, {})
        if self.path.is_dir():
            raise ConfigurationError(
                f"the keyring {self.path} is a directory (FIELD_ENCRYPT_KEYRING names a file)"
            )
        if self.path.is_symlink() and not self.path.exists():
            raise ConfigurationError(
                f"the keyring {self.path} is a symlink to nothing: fix the link or "
                "FIELD_ENCRYPT_KEYRING"
            )
        if not self.path.exists():
            if not create:
                raise ConfigurationError(
                    f"the keyring {self.path} does not exist, and nothing was created: check "
                    "FIELD_ENCRYPT_KEYRING, or create it with `field-encrypt init --product PRODUCT`"
                )
            with self._locked():
                if not self.path.exists():
                    self._write([_new_version("1")])
        self._load()

    def __repr__(self) -> str:
        return f"LocalKeyProvider(path={str(self.path)!r}, mek_name={self.mek_name!r})"

    # -- reading -----------------------------------------------------------------------

    def versions(self) -> list[KeyVersion]:
        self._refresh()
        current = self._versions[-1].version
        return [
            KeyVersion(
                version=v.version,
                enabled=v.enabled,
                created_at=v.created_at,
                current=v.version == current,
            )
            for v in self._versions
        ]

    def current_version(self) -> str:
        self._refresh()
        return self._versions[-1].version

    # -- managing ----------------------------------------------------------------------

    def create_version(self) -> KeyVersion:
        with self._locked():
            self._load()
            version = _new_version(str(int(self._versions[-1].version) + 1))
            self._write([*self._versions, version])
            self._load()
        return next(v for v in self.versions() if v.version == version.version)

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        with self._locked():
            self._load()
            if not any(v.version == version for v in self._versions):
                raise KeyVersionNotFoundError(f"MEK {self.mek_name!r} has no version {version!r}")
            for v in self._versions:
                if v.version == version:
                    v.enabled = enabled
            self._write(self._versions)
            self._load()
        return next(v for v in self.versions() if v.version == version)

    # -- crypto ------------------------------------------------------------------------

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        self._refresh()
        target = version if version is not None else self._versions[-1].version
        return self._keyring.wrap(dek, context=context, version=target)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        self._refresh()
        return self._keyring.unwrap(ciphertext, version=version, context=context)

    def wrap_many(
        self, deks: Sequence[tuple[bytes, bytes]], *, version: str | None = None
    ) -> list[WrappedDek | FieldEncryptError]:
        """Wrap a batch in process, the keyring checked once (see ``BatchWrapper``)."""
        self._refresh()
        target = version if version is not None else self._versions[-1].version
        return self._keyring.wrap_many(deks, version=target)

    def unwrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]]
    ) -> list[bytes | FieldEncryptError]:
        """Unwrap a batch in process, the keyring checked once (see ``BatchWrapper``)."""
        self._refresh()
        return self._keyring.unwrap_many(items)

    def rewrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]], *, to_version: str
    ) -> list[WrappedDek | FieldEncryptError]:
        """Rewrap a batch in process, each new wrap checked (see ``BatchRewrapper``)."""
        self._refresh()
        return self._keyring.rewrap_many(items, to_version=to_version)

    def refresh(self) -> None:
        """Read the keyring again on the next call, whatever ``refresh_seconds`` says (the
        product's key-state epoch moved: a version was disabled or enabled)."""
        self._checked_at = float("-inf")

    # -- the file ----------------------------------------------------------------------

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._refresh_seconds:
            return
        self._checked_at = now
        if self._file_stamp() != self._stamp:
            self._load()

    def _file_stamp(self) -> tuple[int, int]:
        st = self.path.stat()
        return (st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        try:
            stamp = self._file_stamp()
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the keyring {self.path} (FIELD_ENCRYPT_KEYRING): "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        try:
            data = json.loads(text)
            if data.get("format") != _FORMAT:
                raise ConfigurationError(
                    f"keyring {self.path}: unknown format {data.get('format')!r}"
                )
            versions = [
                _Version(
                    version=str(v["version"]),
                    enabled=bool(v["enabled"]),
                    created_at=dt.datetime.fromisoformat(v["created_at"]),
                    key=base64.b64decode(v["key"], validate=True),
                )
                for v in data["versions"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"keyring {self.path} is not a valid keyring file") from exc
        if not versions or any(len(v.key) != 32 for v in versions):
            raise ConfigurationError(f"keyring {self.path} holds no valid 32-byte keys")
        self._versions = versions
        self._keyring = SymmetricKeyring(
            self.mek_name,
            {v.version: v.key for v in versions},
            {v.version: v.enabled for v in versions},
        )
        self._stamp = stamp
        self._checked_at = self._clock()

    def _write(self, versions: list[_Version]) -> None:
        data: dict[str, Any] = {
            "format": _FORMAT,
            "mek_name": self.mek_name,
            "versions": [
                {
                    "version": v.version,
                    "enabled": v.enabled,
                    "created_at": v.created_at.isoformat(),
                    "key": base64.b64encode(v.key).decode(),
                }
                for v in versions
            ],
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(data, indent=2).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _new_version(version: str) -> _Version:
    return _Version(
        version=version,
        enabled=True,
        created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        key=os.urandom(32),
    )
