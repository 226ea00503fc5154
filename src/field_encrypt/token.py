"""The field token format, version 1 (specified in docs/FORMAT.md).

Binary layout (the token itself)::

    version (1 byte, 0x01) | dekId (16) | len(mekVersion) (1) | mekVersion (ASCII) |
    nonce (12) | AES-256-GCM ciphertext | tag (16)

Stores with a binary column keep those bytes as they are; JSON documents keep the text
form ``"fe1:" + base64(binary)``. The associated data is the header (version through
mekVersion) followed by the field's binding (:func:`binding`), so every header byte is
authenticated and a token opens only in the product, collection, document and field it
was sealed for. The plaintext starts with one type byte (``TYPE_*``).

Everything here is pure: keys and nonces are arguments.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt import aead
from field_encrypt.errors import DecryptionError, UnsupportedFormatError

VERSION: Final = 1
PREFIX: Final = "fe1:"
DEK_ID_SIZE: Final = 16
MIN_SIZE: Final = 1 + DEK_ID_SIZE + 1 + 1 + aead.NONCE_SIZE + aead.TAG_SIZE + 1

# Plaintext type byte: how the decrypted bytes become a value again.
TYPE_STR: Final = 0x73  # "s": UTF-8 text
TYPE_BYTES: Final = 0x62  # "b": raw bytes
TYPE_JSON: Final = 0x6A  # "j": any other JSON value, as compact UTF-8 JSON


@dataclass(frozen=True, slots=True)
class TokenHeader:
    """What a token says about itself, readable without any key."""

    dek_id: bytes
    mek_version: str


# -- binding (associated data) ------------------------------------------------------------


def lp(text: str) -> bytes:
    """``text`` as UTF-8, prefixed by its length in two big-endian bytes."""
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("binding component longer than 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def binding(product: str, collection: str, document_id: str, field_path: str) -> bytes:
    """The associated data that ties a token to one field of one document."""
    return lp(product) + lp(collection) + lp(document_id) + lp(field_path)


# -- values ---------------------------------------------------------------------------------


def encode_value(value: object) -> bytes:
    """The typed plaintext of a field value."""
    if isinstance(value, str):
        return bytes((TYPE_STR,)) + value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes((TYPE_BYTES,)) + bytes(value)
    return bytes((TYPE_JSON,)) + json.dumps(value, separators=(",", ":")).encode()


def decode_value(plaintext: bytes) -> object:
    """Inverse of :func:`encode_value`."""
    kind = plaintext[0] if plaintext else -1
    if kind == TYPE_STR:
        return plaintext[1:].decode()
    if kind == TYPE_BYTES:
        return plaintext[1:]
    if kind == TYPE_JSON:
        return json.loads(plaintext[1:])
    raise DecryptionError()


# -- seal and open ----------------------------------------------------------------------------


def header(dek_id: bytes, mek_version: str) -> bytes:
    """The binary header of a version-1 token."""
    if len(dek_id) != DEK_ID_SIZE:
        raise ValueError("dekId must be 16 bytes")
    version = mek_version.encode("ascii")
    if not 0 < len(version) < 256:
        raise ValueError("mekVersion must be 1 to 255 ASCII characters")
    return bytes((VERSION,)) + dek_id + bytes((len(version),)) + version


def seal(
    cipher: AESGCM, nonce: bytes, *, dek_id: bytes, mek_version: str, binding: bytes, value: object
) -> bytes:
    """A version-1 token (binary form). Deterministic in its arguments, for known answers."""
    head = header(dek_id, mek_version)
    return head + nonce + aead.seal(cipher, nonce, encode_value(value), head + binding)


def open_(cipher: AESGCM, raw: bytes, binding: bytes) -> object:
    """The value sealed in binary token ``raw``; :class:`DecryptionError` if anything differs.

    This is the hot path of every read: it slices inline instead of building a header.
    """
    if len(raw) < MIN_SIZE or raw[0] != VERSION:
        _reject(raw)
    end = 18 + raw[17]
    if len(raw) < end + 29 or end == 18:
        raise DecryptionError()
    try:
        plaintext = cipher.decrypt(raw[end : end + 12], raw[end + 12 :], raw[:end] + binding)
    except InvalidTag:
        raise DecryptionError() from None
    if plaintext[0] == TYPE_STR:
        return plaintext[1:].decode()
    return decode_value(plaintext)


def read_header(raw: bytes) -> TokenHeader:
    """The dekId and mekVersion of a binary token, without any key."""
    if len(raw) < MIN_SIZE or raw[0] != VERSION:
        _reject(raw)
    end = 18 + raw[17]
    if len(raw) < end + 29 or end == 18:
        raise DecryptionError()
    try:
        mek_version = raw[18:end].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError() from None
    return TokenHeader(dek_id=raw[1:17], mek_version=mek_version)


def _reject(raw: bytes) -> None:
    if len(raw) >= 1 and raw[0] != VERSION:
        raise UnsupportedFormatError(f"field token format version {raw[0]} is not supported")
    raise DecryptionError()


# -- text form ------------------------------------------------------------------------------


def to_text(raw: bytes) -> str:
    """The text form of a binary token, for JSON documents."""
    return PREFIX + binascii.b2a_base64(raw, newline=False).decode("ascii")


_B64_INDEX: Final = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)}  # fmt: skip


def from_text(text: str) -> bytes:
    """The binary token inside a text token.

    Only the canonical encoding is accepted: base64 leaves unused bits in the last
    character before ``=`` padding, and a text whose unused bits are not zero would
    otherwise be a second spelling of the same token.
    """
    if not text.startswith(PREFIX):
        raise UnsupportedFormatError("not a field-encrypt token")
    try:
        raw = binascii.a2b_base64(text[len(PREFIX) :], strict_mode=True)
    except (binascii.Error, ValueError):
        raise DecryptionError() from None
    if text[-1] == "=":
        unused = 0x0F if text[-2] == "=" else 0x03
        if _B64_INDEX.get(text[-3 if unused == 0x0F else -2], 0) & unused:
            raise DecryptionError()
    return raw


def is_token(value: object) -> bool:
    """Whether a stored field value is a token (binary or text) rather than plaintext."""
    if value.__class__ is bytes:
        return len(value) > 0 and value[0] == VERSION
    return isinstance(value, str) and value.startswith(PREFIX)


def as_binary(value: str | bytes) -> bytes:
    """A stored token in binary form, whichever form it was stored in."""
    if isinstance(value, bytes):
        return value
    return from_text(value)
