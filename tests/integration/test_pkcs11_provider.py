"""The pkcs11 provider against a SoftHSM2 token: what the contract suite cannot see."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pkcs11 = pytest.importorskip("pkcs11")

from cryptography.hazmat.primitives.keywrap import (  # noqa: E402
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)
from pkcs11 import Attribute, KeyType, ObjectClass  # noqa: E402
from pkcs11.exceptions import AttributeSensitive  # noqa: E402

from field_encrypt.errors import (  # noqa: E402
    ConfigurationError,
    DecryptionError,
    KeyProviderUnavailableError,
    KeyVersionDisabledError,
)
from field_encrypt.providers.base import dek_context  # noqa: E402
from field_encrypt.providers.pkcs11 import Pkcs11KeyProvider  # noqa: E402
from tests.harnesses import Pkcs11Harness  # noqa: E402

CTX = dek_context("notelett", "0" * 32)

# A known answer, computed once with pyca's RFC 5649 implementation (itself checked against
# the RFC and NIST KWP vectors in tests/servers/test_softhsm.py) and pinned here:
# KEK = bytes(range(32)), DEK = bytes(range(32, 64)), context = CTX.
KAT_KEK = bytes(range(32))
KAT_DEK = bytes(range(32, 64))
KAT_WRAPPED = (
    "141161466ac026b7d4a2109181c640e53aaf4cd1a7456f12"
    "d3ed1071f515c198370ad49e0ab2e808bafbed4c61d2e605"
    "11a04a5bfbde3bd7"
)


@pytest.fixture
def session(pkcs11_harness: Pkcs11Harness) -> Iterator[Any]:
    """A second session of this process on the token: it shares the providers' login (PKCS#11
    keeps login per application) and, opened without a PIN, never logs them out on close."""
    hsm = pkcs11_harness.hsm
    token = pkcs11.lib(str(hsm.module_path)).get_token(token_label=hsm.token_label)
    with token.open(rw=True) as opened:
        yield opened


def version_key(session: Any, provider: Pkcs11KeyProvider, version: str) -> Any:
    return session.get_key(
        ObjectClass.SECRET_KEY, KeyType.AES, label=f"{provider.mek_name}-v{version}"
    )


def test_mek_versions_are_non_extractable_wrap_only_keys(
    pkcs11_harness: Pkcs11Harness, session: Any
) -> None:
    """A created version is a sensitive, never-extractable AES-256 token key that may wrap and
    unwrap only; its value cannot be read."""
    provider = pkcs11_harness.provider()
    created = provider.create_version()
    key = version_key(session, provider, created.version)

    assert key[Attribute.TOKEN] and key[Attribute.SENSITIVE] and key[Attribute.PRIVATE]
    assert not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
    assert key[Attribute.VALUE_LEN] == 32
    assert key[Attribute.WRAP] and key[Attribute.UNWRAP]
    assert not key[Attribute.ENCRYPT] and not key[Attribute.DECRYPT]
    with pytest.raises(AttributeSensitive):
        key[Attribute.VALUE]


def test_wrap_is_rfc5649_of_the_dek_and_its_context_digest(
    pkcs11_harness: Pkcs11Harness, session: Any
) -> None:
    """With a known MEK in the token, the provider's wrap is exactly RFC 5649 (AES key wrap with
    padding) of dek || SHA-256(context)[:16], a pinned known answer; and it unwraps what pyca
    wraps the same way."""
    provider = pkcs11_harness.provider()
    session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: KAT_KEK,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.LABEL: f"{provider.mek_name}-v1",
            Attribute.WRAP: True,
            Attribute.UNWRAP: True,
        }
    )
    expected = aes_key_wrap_with_padding(KAT_KEK, KAT_DEK + hashlib.sha256(CTX).digest()[:16])

    wrapped = provider.wrap(KAT_DEK, context=CTX)

    assert (wrapped.mek_version, wrapped.algorithm) == ("1", "AES-KWP+CTX")
    assert wrapped.ciphertext == expected
    assert wrapped.ciphertext.hex() == KAT_WRAPPED
    assert aes_key_unwrap_with_padding(KAT_KEK, wrapped.ciphertext)[:32] == KAT_DEK
    other = os.urandom(32)
    by_pyca = aes_key_wrap_with_padding(KAT_KEK, other + hashlib.sha256(CTX).digest()[:16])
    assert provider.unwrap(by_pyca, version="1", context=CTX) == other


def test_disabling_clears_the_flags_and_the_token_refuses(
    pkcs11_harness: Pkcs11Harness, session: Any
) -> None:
    """set_enabled(False) clears CKA_WRAP and CKA_UNWRAP and the version is refused; a version
    disabled by another process is refused by the token itself (CKR_KEY_FUNCTION_NOT_PERMITTED),
    also as KeyVersionDisabledError; enabling restores it."""
    provider = pkcs11_harness.make(1)
    dek = os.urandom(32)
    wrapped = provider.wrap(dek, context=CTX)

    assert provider.set_enabled("1", False).enabled is False
    key = version_key(session, provider, "1")
    assert not key[Attribute.WRAP] and not key[Attribute.UNWRAP]
    with pytest.raises(KeyVersionDisabledError):
        provider.unwrap(wrapped.ciphertext, version="1", context=CTX)
    provider.set_enabled("1", True)
    assert provider.unwrap(wrapped.ciphertext, version="1", context=CTX) == dek

    key[Attribute.WRAP] = key[Attribute.UNWRAP] = False  # another process disables it
    with pytest.raises(KeyVersionDisabledError) as info:
        provider.unwrap(wrapped.ciphertext, version="1", context=CTX)
    assert "0x68" in str(info.value.cause)
    with pytest.raises(KeyVersionDisabledError):
        provider.wrap(dek, context=CTX, version="1")
    assert [v.enabled for v in provider.versions()] == [False]
    key[Attribute.WRAP] = key[Attribute.UNWRAP] = True  # and enables it again
    assert provider.unwrap(wrapped.ciphertext, version="1", context=CTX) == dek


def test_no_session_objects_are_left_behind(pkcs11_harness: Pkcs11Harness, session: Any) -> None:
    """Every imported or unwrapped DEK object is destroyed, after failures too."""
    provider = pkcs11_harness.make(2, disabled=frozenset({0}))
    for _ in range(5):
        wrapped = provider.wrap(os.urandom(32), context=CTX)
        provider.unwrap(wrapped.ciphertext, version=wrapped.mek_version, context=CTX)
        with pytest.raises(DecryptionError):
            provider.unwrap(wrapped.ciphertext, version=wrapped.mek_version, context=b"other")
        with pytest.raises(KeyVersionDisabledError):
            provider.wrap(os.urandom(32), context=CTX, version="1")
    leftovers = list(session.get_objects({Attribute.TOKEN: False}))
    assert leftovers == []


def test_threads_share_the_provider_safely(pkcs11_harness: Pkcs11Harness) -> None:
    """Concurrent wraps, unwraps and rewraps from many threads all give the right DEKs."""
    provider = pkcs11_harness.make(2)
    old, new = (v.version for v in provider.versions())

    def cycle(_: int) -> bool:
        dek = os.urandom(32)
        first = provider.wrap(dek, context=CTX, version=old)
        moved = provider.rewrap(first.ciphertext, from_version=old, context=CTX, to_version=new)
        return provider.unwrap(moved.ciphertext, version=new, context=CTX) == dek

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(cycle, range(64)))


def test_a_dropped_session_is_reopened(pkcs11_harness: Pkcs11Harness) -> None:
    """If the token drops the session, the call fails as transient and the next one reopens it."""
    provider = pkcs11_harness.make(1)
    wrapped = provider.wrap(dek := os.urandom(32), context=CTX)
    connection = provider._connection
    assert connection is not None
    connection._session.close()  # the token forgets the session (and the login)

    with pytest.raises(KeyProviderUnavailableError):
        provider.unwrap(wrapped.ciphertext, version="1", context=CTX)
    assert provider.unwrap(wrapped.ciphertext, version="1", context=CTX) == dek


def test_bad_configuration_fails_at_construction(pkcs11_harness: Pkcs11Harness) -> None:
    """A wrong PIN, an unknown token, a missing module or a mechanism the token lacks is a
    ConfigurationError naming the setting, never the PIN."""
    hsm = pkcs11_harness.hsm
    keep_open = pkcs11_harness.provider()  # the token is open in this process
    base = {
        "module": str(hsm.module_path),
        "token_label": hsm.token_label,
        "pin": hsm.user_pin,
        "mek_name": "m",
    }
    cases: list[tuple[dict[str, str], str]] = [
        ({"pin": "wrong-pin-0000"}, "FIELD_ENCRYPT_PKCS11_PIN"),
        ({"token_label": "no-such-token"}, "FIELD_ENCRYPT_PKCS11_TOKEN"),
        ({"module": "/nonexistent/libpkcs11.so"}, "FIELD_ENCRYPT_PKCS11_MODULE"),
        ({"mechanism": "AES_KEY_WRAP_KWP"}, "FIELD_ENCRYPT_PKCS11_MECHANISM"),
        ({"mechanism": "AES_GCM"}, "FIELD_ENCRYPT_PKCS11_MECHANISM"),
    ]
    for change, setting in cases:
        with pytest.raises(ConfigurationError) as info:
            Pkcs11KeyProvider(**{**base, **change})  # type: ignore[arg-type]
        assert setting in str(info.value)
        assert "wrong-pin" not in str(info.value) and hsm.user_pin not in str(info.value)
    keep_open.close()
