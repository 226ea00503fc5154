"""The context binding of wraps without associated data, and the KMS encryption context."""

from __future__ import annotations

import hashlib
import os

import pytest

from field_encrypt.errors import DecryptionError
from field_encrypt.providers import binding
from field_encrypt.providers.base import dek_context

CTX = dek_context("notelett", "ab" * 16)


def test_seal_is_the_dek_then_the_context_digest() -> None:
    """seal gives dek || SHA-256(context)[:16], and open_ gives the DEK back."""
    dek = os.urandom(32)
    sealed = binding.seal(dek, CTX)
    assert sealed == dek + hashlib.sha256(CTX).digest()[:16]
    assert binding.open_(sealed, CTX) == dek


def test_open_refuses_another_context_a_flipped_byte_or_a_wrong_length() -> None:
    """Any other context, any flipped digest byte, or any other length is DecryptionError."""
    sealed = binding.seal(os.urandom(32), CTX)
    with pytest.raises(DecryptionError):
        binding.open_(sealed, dek_context("notelett", "cd" * 16))
    for i in range(32, 48):
        tampered = sealed[:i] + bytes([sealed[i] ^ 1]) + sealed[i + 1 :]
        with pytest.raises(DecryptionError):
            binding.open_(tampered, CTX)
    for length in (0, 47, 49):
        with pytest.raises(DecryptionError):
            binding.open_(sealed[:length] if length < 48 else sealed + b"\0", CTX)


def test_seal_takes_32_byte_deks_only() -> None:
    """A DEK is 32 bytes; anything else is a programming error, refused before any I/O."""
    with pytest.raises(ValueError, match="32 bytes"):
        binding.seal(os.urandom(31), CTX)


def test_kms_encryption_context_is_readable_and_injective() -> None:
    """A DEK context becomes product and dekId; anything else its base64; they never collide."""
    aws_kms = pytest.importorskip("field_encrypt.providers.aws_kms")
    contexts = [
        dek_context("notelett", "ab" * 16),
        dek_context("notelett", "cd" * 16),
        dek_context("other", "ab" * 16),
        b"field-encrypt/dek/v1\x00notelett",
        b"field-encrypt/dek/v1\x00a\x00b\x00c",
        b"field-encrypt/kek/v1\x00notelett\x00" + b"ab" * 16,
        b"",
    ]
    mapped = [aws_kms.encryption_context(c) for c in contexts]
    assert mapped[0] == {"field-encrypt:product": "notelett", "field-encrypt:dekId": "ab" * 16}
    assert mapped[5] == {"field-encrypt:product": "notelett", "field-encrypt:kekId": "ab" * 16}
    assert len({tuple(sorted(m.items())) for m in mapped}) == len(contexts)
