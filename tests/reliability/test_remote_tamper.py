"""Tamper sweeps of the production providers' wrapped DEKs, against the real servers.

A wrapped DEK from Key Vault (RSA-OAEP-256, 256 bytes here), from KMS (a ciphertext blob)
and from SoftHSM (AES-KWP, 56 bytes) is truncated and bit-flipped; every mutation must be
refused with ``DecryptionError`` (or a subclass), never unwrap, never raise anything else.
SoftHSM is local, so every truncation and every bit is tried. For the remote services the
sweep is bounded: every bit of the first and last 64 bytes, a seeded sample of the other
bits, and the truncations to every length that is a multiple of 8 plus the last 8.
``FIELD_ENCRYPT_SOAK=1`` tries every bit and every truncation there too.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from field_encrypt import DecryptionError, KeyProvider
from field_encrypt.providers.base import dek_context
from tests import figures
from tests.harnesses import HARNESS_FIXTURES
from tests.reliability.conftest import SOAK, scaled

EDGE = 64


def _bits(length: int, *, everything: bool, sample: int, seed: str) -> list[tuple[int, int]]:
    if everything:
        return [(i, b) for i in range(length) for b in range(8)]
    edges = set(range(min(EDGE, length))) | set(range(max(0, length - EDGE), length))
    chosen = [(i, b) for i in sorted(edges) for b in range(8)]
    middle = [(i, b) for i in range(length) if i not in edges for b in range(8)]
    rng = random.Random(seed)
    return chosen + rng.sample(middle, min(sample, len(middle)))


def _truncations(length: int, *, everything: bool) -> list[int]:
    if everything:
        return list(range(length))
    return sorted(set(range(0, length, 8)) | set(range(max(0, length - 8), length)))


def _mutations(data: bytes, *, everything: bool, seed: str) -> Iterator[bytes]:
    for length in _truncations(len(data), everything=everything):
        yield data[:length]
    for i, bit in _bits(len(data), everything=everything, sample=scaled(64, 10_000), seed=seed):
        yield data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


@pytest.mark.parametrize("kind", ["pkcs11", "akv", "aws-kms"])
def test_every_mutation_of_a_wrapped_dek_is_refused(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """Truncated or bit-flipped, a production provider's wrapped DEK never unwraps."""
    harness: Any = request.getfixturevalue(HARNESS_FIXTURES[kind])
    provider: KeyProvider = harness.make(1)
    context = dek_context("sample", os.urandom(16).hex())
    dek = os.urandom(32)
    wrapped = provider.wrap(dek, context=context)
    assert provider.unwrap(wrapped.ciphertext, version=wrapped.mek_version, context=context) == dek
    everything = kind == "pkcs11" or SOAK
    tried = 0
    for mutated in _mutations(wrapped.ciphertext, everything=everything, seed=kind):
        tried += 1
        with pytest.raises(DecryptionError):
            provider.unwrap(mutated, version=wrapped.mek_version, context=context)
    figures.record("tamper sweeps", **{f"{kind}_mutations_refused": tried})
    print(f"{kind}: {len(wrapped.ciphertext)}-byte wrapped DEK, {tried}/{tried} mutations refused")
