"""The context binding for wraps that carry no associated data (RSA-OAEP, AES key wrap).

Such a wrap seals ``dek || SHA-256(context)[:16]`` (48 bytes for a 32-byte DEK) instead of
the DEK alone, and unwrapping checks the digest in constant time. A wrapped DEK copied to
another row or product therefore unwraps to a digest that does not match, and fails with
:class:`~field_encrypt.errors.DecryptionError` like any other tampering.
"""

from __future__ import annotations

import hashlib
import hmac

from field_encrypt.errors import DecryptionError

DEK_SIZE = 32
DIGEST_SIZE = 16
SEALED_SIZE = DEK_SIZE + DIGEST_SIZE


def seal(dek: bytes, context: bytes) -> bytes:
    """``dek`` followed by the first 16 bytes of SHA-256 of ``context``."""
    if len(dek) != DEK_SIZE:
        raise ValueError(f"a DEK is {DEK_SIZE} bytes")
    return dek + _digest(context)


def open_(sealed: bytes, context: bytes) -> bytes:
    """The DEK inside ``sealed``; :class:`DecryptionError` unless it was sealed for ``context``."""
    if len(sealed) != SEALED_SIZE or not hmac.compare_digest(sealed[DEK_SIZE:], _digest(context)):
        raise DecryptionError()
    return sealed[:DEK_SIZE]


def _digest(context: bytes) -> bytes:
    return hashlib.sha256(context).digest()[:DIGEST_SIZE]
