"""The ``env`` provider: MEK versions from environment variables, for non-production.

``FIELD_ENCRYPT_KEY`` (base64 of 32 bytes) is the current version, named by
``FIELD_ENCRYPT_KEY_VERSION`` (default ``"1"``). Older versions can be supplied in
``FIELD_ENCRYPT_PREVIOUS_KEYS`` as ``version=base64`` pairs separated by commas, and
marked disabled in ``FIELD_ENCRYPT_DISABLED_VERSIONS``, so a rotation can be rehearsed
from the environment alone. The environment cannot be changed from here: creating or
enabling a version is done by changing those variables and restarting.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from field_encrypt.errors import ConfigurationError, FieldEncryptError, KeyVersionNotFoundError
from field_encrypt.providers.base import KeyVersion, RewrapByUnwrapping, WrappedDek
from field_encrypt.providers.symmetric import SymmetricKeyring

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_KEYGEN = "python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())'"
"""A command that prints a fresh key, for the messages that ask for one."""


class EnvKeyProvider(RewrapByUnwrapping):
    """Read-only MEK versions taken from the environment at construction."""

    kind = "env"
    remote = False

    def __init__(
        self,
        *,
        mek_name: str,
        key: str,
        key_version: str = "1",
        previous_keys: str = "",
        disabled_versions: Iterable[str] = (),
    ) -> None:
        self.mek_name = mek_name
        keys = {
            v: _decode_key(f"FIELD_ENCRYPT_PREVIOUS_KEYS[{v}]", k) for v, k in _pairs(previous_keys)
        }
        if key_version in keys:
            raise ConfigurationError(
                f"FIELD_ENCRYPT_PREVIOUS_KEYS repeats the current version {key_version!r}"
            )
        keys[key_version] = _decode_key("FIELD_ENCRYPT_KEY", key)
        disabled = set(disabled_versions)
        if key_version in disabled:
            raise ConfigurationError("the current version cannot be listed as disabled")
        self._order = list(keys)
        self._current = key_version
        self._enabled: Mapping[str, bool] = {v: v not in disabled for v in keys}
        self._keyring = SymmetricKeyring(mek_name, keys, self._enabled)

    def __repr__(self) -> str:
        return f"EnvKeyProvider(mek_name={self.mek_name!r}, versions={self._order!r})"

    def versions(self) -> list[KeyVersion]:
        return [
            KeyVersion(
                version=v, enabled=self._enabled[v], created_at=_EPOCH, current=v == self._current
            )
            for v in self._order
        ]

    def current_version(self) -> str:
        return self._current

    def create_version(self) -> KeyVersion:
        raise ConfigurationError(
            "the env provider cannot create versions: move FIELD_ENCRYPT_KEY to "
            "FIELD_ENCRYPT_PREVIOUS_KEYS, set a new FIELD_ENCRYPT_KEY and "
            "FIELD_ENCRYPT_KEY_VERSION, and restart"
        )

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        if version not in self._enabled:
            raise KeyVersionNotFoundError(f"MEK {self.mek_name!r} has no version {version!r}")
        raise ConfigurationError(
            "the env provider cannot change version states: edit FIELD_ENCRYPT_DISABLED_VERSIONS "
            "and restart"
        )

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        return self._keyring.wrap(dek, context=context, version=version or self._current)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        return self._keyring.unwrap(ciphertext, version=version, context=context)

    def wrap_many(
        self, deks: Sequence[tuple[bytes, bytes]], *, version: str | None = None
    ) -> list[WrappedDek | FieldEncryptError]:
        """Wrap a batch in process (see ``BatchWrapper``)."""
        return self._keyring.wrap_many(deks, version=version or self._current)

    def unwrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]]
    ) -> list[bytes | FieldEncryptError]:
        """Unwrap a batch in process (see ``BatchWrapper``)."""
        return self._keyring.unwrap_many(items)

    def rewrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]], *, to_version: str
    ) -> list[WrappedDek | FieldEncryptError]:
        """Rewrap a batch in process, each new wrap checked (see ``BatchRewrapper``)."""
        return self._keyring.rewrap_many(items, to_version=to_version)


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        version, sep, key = item.partition("=")
        if not sep or not version.strip():
            raise ConfigurationError(
                "FIELD_ENCRYPT_PREVIOUS_KEYS must be comma-separated version=base64 pairs"
            )
        pairs.append((version.strip(), key.strip()))
    return pairs


def _decode_key(name: str, value: str) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            f"{name} is not valid base64: it must be base64 of 32 random bytes, "
            f"e.g. the output of {_KEYGEN}"
        ) from None
    if len(key) != 32:
        raise ConfigurationError(
            f"{name} must decode to 32 bytes, not {len(key)}: e.g. the output of {_KEYGEN}"
        )
    return key
