"""AES-256-GCM seal and open: the pure core. Keys and nonces are arguments, never drawn here."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt.errors import DecryptionError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


def cipher(key: bytes) -> AESGCM:
    """An AES-256-GCM cipher for ``key`` (32 bytes). Build once per key, reuse per field."""
    if len(key) != KEY_SIZE:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    return AESGCM(key)


def seal(aead: AESGCM, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Ciphertext with the 16-byte tag appended."""
    return aead.encrypt(nonce, plaintext, associated_data)


def open_(aead: AESGCM, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Plaintext, or :class:`DecryptionError` when the tag does not verify."""
    try:
        return aead.decrypt(nonce, ciphertext, associated_data)
    except InvalidTag:
        raise DecryptionError() from None
