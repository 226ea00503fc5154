"""Tamper sweeps: every truncation and every single-bit flip of stored tokens and wrapped DEKs.

Each mutated value must be refused with the one documented error, ``DecryptionError``
(or a subclass), and never yield a value or any other exception type.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from field_encrypt import DecryptionError, FieldEncryptor
from field_encrypt import token as tokens
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.backends.sqlite.kek_store import SqliteKekStore
from field_encrypt.providers.base import KeyProvider, dek_context
from field_encrypt.providers.env import EnvKeyProvider
from field_encrypt.providers.kek_tier import KekTierProvider
from field_encrypt.providers.local import LocalKeyProvider

SIZES = [0, 1, 16, 100, 1000]


@pytest.fixture
def encryptor(tmp_path: Path) -> Iterator[FieldEncryptor]:
    database = SqliteDatabase(tmp_path / "db.sqlite")
    yield FieldEncryptor(
        product="p",
        provider=LocalKeyProvider(tmp_path / "ring.json", mek_name="m"),
        store=SqliteDekStore(database, product="p"),
        collections={"c": ["f"]},
        allow_plaintext=False,
        token_form="binary",
    )
    database.close()


def _mutations(data: bytes) -> Iterator[bytes]:
    for length in range(len(data)):
        yield data[:length]
    for i in range(len(data)):
        for bit in range(8):
            yield data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


def _refused(fe: FieldEncryptor, value: object) -> bool:
    try:
        fe.decrypt_document("c", "d", {"f": value})
    except DecryptionError:
        return True
    return False


@pytest.mark.parametrize("size", SIZES)
def test_binary_token_sweep(encryptor: FieldEncryptor, size: int) -> None:
    """Every truncation and bit flip of a binary token is refused (strict mode)."""
    raw = encryptor.encrypt_document("c", "d", {"f": "x" * size})["f"]
    mutations = list(_mutations(raw))
    refused = sum(_refused(encryptor, m) for m in mutations)
    assert refused == len(mutations) == len(raw) * 9
    print(f"binary token, plaintext {size} B: {refused}/{len(mutations)} mutations refused")


@pytest.mark.parametrize("size", SIZES)
def test_text_token_sweep(encryptor: FieldEncryptor, size: int) -> None:
    """Every truncation and bit flip of a text token's characters is refused (strict mode)."""
    encryptor.token_form = "text"
    text = encryptor.encrypt_document("c", "d", {"f": "x" * size})["f"]
    raw = text.encode("ascii")
    mutations = [m.decode("latin-1") for m in _mutations(raw)]
    survivors = [m for m in mutations if not _refused(encryptor, m)]
    assert survivors == [], "non-canonical base64 must not be a second spelling of a token"
    print(f"text token, plaintext {size} B: {len(mutations)}/{len(mutations)} mutations refused")


def _providers(tmp_path: Path) -> list[KeyProvider]:
    local = LocalKeyProvider(tmp_path / "ring.json", mek_name="m")
    env = EnvKeyProvider(mek_name="m", key=base64.b64encode(os.urandom(32)).decode())
    tier = KekTierProvider(
        local, SqliteKekStore(SqliteDatabase(tmp_path / "k.db"), product="p"), product="p"
    )
    return [local, env, tier]


def test_wrapped_dek_sweep(tmp_path: Path) -> None:
    """Every truncation and bit flip of a wrapped DEK fails to unwrap, for each in-process provider."""
    context = dek_context("p", "0" * 32)
    for provider in _providers(tmp_path):
        wrapped = provider.wrap(os.urandom(32), context=context)
        count = 0
        for mutated in _mutations(wrapped.ciphertext):
            count += 1
            with pytest.raises(DecryptionError):
                provider.unwrap(mutated, version=wrapped.mek_version, context=context)
        print(f"wrapped DEK ({provider.kind}): {count}/{count} mutations refused")


def test_header_parser_never_escapes_the_tree() -> None:
    """read_header on every prefix of a token raises only DecryptionError."""
    raw = tokens.seal(
        tokens.aead.cipher(os.urandom(32)),
        os.urandom(12),
        dek_id=os.urandom(16),
        mek_version="1",
        binding=b"",
        value="v",
    )
    for mutated in _mutations(raw):
        with contextlib.suppress(DecryptionError):
            tokens.read_header(mutated)
