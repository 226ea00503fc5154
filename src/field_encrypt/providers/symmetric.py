"""Wrapping under in-process AES-256 MEK versions, shared by the ``env`` and ``local`` providers.

Wrap format: ``nonce (12) | AES-256-GCM(MEK, dek, aad=context) | tag (16)``, algorithm
``A256GCM``. A wrong MEK, a flipped byte or a different dekId binding fails to unwrap.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt.errors import (
    DecryptionError,
    FieldEncryptError,
    KeyProviderError,
    KeyVersionDisabledError,
    KeyVersionNotFoundError,
)
from field_encrypt.providers.base import WrappedDek, wrapped_dek_of

ALGORITHM = "A256GCM"


def open_sealed(cipher: AESGCM, ciphertext: bytes, context: bytes) -> bytes:
    """The 32-byte DEK in ``nonce (12) || sealed DEK and tag (48)`` under ``cipher``;
    :class:`DecryptionError` (fixed message) for any other length or a failed tag."""
    if len(ciphertext) != 12 + 32 + 16:
        raise DecryptionError()
    try:
        return cipher.decrypt(ciphertext[:12], ciphertext[12:], context)
    except InvalidTag:
        raise DecryptionError() from None


class SymmetricKeyring:
    """MEK versions held in memory as ready ciphers, with their enabled state."""

    __slots__ = ("_ciphers", "_enabled", "_mek_name")

    def __init__(self, mek_name: str, keys: Mapping[str, bytes], enabled: Mapping[str, bool]):
        self._mek_name = mek_name
        self._ciphers = {version: AESGCM(key) for version, key in keys.items()}
        self._enabled = dict(enabled)

    def __repr__(self) -> str:
        return f"SymmetricKeyring(mek_name={self._mek_name!r}, versions={list(self._ciphers)!r})"

    def cipher(self, version: str) -> AESGCM:
        try:
            cipher = self._ciphers[version]
        except KeyError:
            raise KeyVersionNotFoundError(
                f"MEK {self._mek_name!r} has no version {version!r}"
            ) from None
        if not self._enabled.get(version, False):
            raise KeyVersionDisabledError(f"MEK {self._mek_name!r} version {version!r} is disabled")
        return cipher

    def wrap(self, dek: bytes, *, context: bytes, version: str) -> WrappedDek:
        nonce = os.urandom(12)
        sealed = self.cipher(version).encrypt(nonce, dek, context)
        return WrappedDek(mek_version=version, ciphertext=nonce + sealed, algorithm=ALGORITHM)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        return open_sealed(self.cipher(version), ciphertext, context)

    def wrap_many(
        self, deks: Sequence[tuple[bytes, bytes]], *, version: str
    ) -> list[WrappedDek | FieldEncryptError]:
        """``wrap`` of each ``(dek, context)``, the version looked up once (``BatchWrapper``)."""
        try:
            encrypt = self.cipher(version).encrypt
        except FieldEncryptError as exc:
            return [exc for _ in deks]
        nonces = os.urandom(12 * len(deks))  # one system call for the batch's nonces
        out: list[WrappedDek | FieldEncryptError] = []
        append = out.append
        start = 0
        for dek, context in deks:
            nonce = nonces[start : start + 12]
            start += 12
            append(wrapped_dek_of(version, nonce + encrypt(nonce, dek, context), ALGORITHM))
        return out

    def unwrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]]
    ) -> list[bytes | FieldEncryptError]:
        """``unwrap`` of each ``(wrapped, version, context)``, each version looked up once."""
        ciphers: dict[str, AESGCM] = {}
        out: list[bytes | FieldEncryptError] = []
        append = out.append
        for wrapped, version, context in items:
            try:
                source = ciphers.get(version)
                if source is None:
                    source = ciphers[version] = self.cipher(version)
                if len(wrapped) != 60:
                    raise DecryptionError()
                append(source.decrypt(wrapped[:12], wrapped[12:], context))
            except InvalidTag:
                append(DecryptionError())
            except FieldEncryptError as exc:
                append(exc)
        return out

    def rewrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]], *, to_version: str
    ) -> list[WrappedDek | FieldEncryptError]:
        """Unwrap, wrap under ``to_version``, and check each new wrap, with keys looked up once."""
        target = self.cipher(to_version)
        encrypt, check = target.encrypt, target.decrypt
        compare = hmac.compare_digest
        out: list[WrappedDek | FieldEncryptError] = []
        append = out.append
        nonces = os.urandom(12 * len(items))  # one system call for the batch's nonces
        start = 0
        for (_, _, context), dek in zip(items, self.unwrap_many(items), strict=True):
            nonce = nonces[start : start + 12]
            start += 12
            if not isinstance(dek, bytes):
                append(dek)  # the item's unwrap failed: its error, in its place
                continue
            try:
                sealed = encrypt(nonce, dek, context)
                if not compare(check(nonce, sealed, context), dek):
                    raise KeyProviderError("the new wrap does not unwrap to the same DEK")
                append(wrapped_dek_of(to_version, nonce + sealed, ALGORITHM))
            except InvalidTag:
                append(DecryptionError())
            except FieldEncryptError as exc:
                append(exc)
        return out
