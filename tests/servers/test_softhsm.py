"""SoftHSM2 tokens from the harness wrap and unwrap DEKs with RFC 5649 inside the token.

These tests also pin what a PKCS#11 provider can rely on with SoftHSM 2.6 and python-pkcs11:
which calls work for AES key wrap with padding, which are refused, and how a MEK version can be
marked retired or disabled so that the token itself enforces it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

pkcs11 = pytest.importorskip("pkcs11")

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass  # noqa: E402
from pkcs11.exceptions import (  # noqa: E402
    AttributeReadOnly,
    AttributeSensitive,
    MechanismInvalid,
    PKCS11Error,
)

from tests.servers.softhsm import SoftHsmError, SoftHsmToken  # noqa: E402

KWP = Mechanism.AES_KEY_WRAP_PAD  # 0x210A: SoftHSM's RFC 5649 mechanism

# RFC 5649 section 6 (192-bit KEK) and NIST SP 800-38F KWP-AE-256 (CAVS 21.4) vectors:
# (KEK, key data, wrapped).
RFC5649_KEK = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"
VECTORS = [
    (
        RFC5649_KEK,
        "c37b7e6492584340bed12207808941155068f738",
        "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
    ),
    (RFC5649_KEK, "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
    (
        "3517f0efa7f0c4d74f91af83ece5e7503bcc5ab82907a6e4b7ed34d87b69ab1d",
        "897e0456b289ad31",
        "0b06a9b635d50cda9d4210cb3a71f990",
    ),
    (
        "e9bb7f44c7baafbf392ab912589a2f8db53268106eafb74689bb1833136e6113",
        "ffe952604834bff899e63658f34246815c91597eb40a21729e0a8a959b61f2",
        "15b9f06fbc765e5e3d55d6b824616f21921d2a6918ee7bf1406b524274e170b4a78333ca5ee92af5",
    ),
]


@pytest.fixture
def hsm() -> Iterator[SoftHsmToken]:
    with SoftHsmToken() as token:
        yield token


@pytest.fixture
def session(hsm: SoftHsmToken) -> Iterator[pkcs11.Session]:
    lib = pkcs11.lib(str(hsm.module_path))
    lib.reinitialize()  # SoftHSM reads SOFTHSM2_CONF at C_Initialize
    try:
        token = lib.get_token(token_label=hsm.token_label)
        with token.open(user_pin=hsm.user_pin, rw=True) as opened:
            yield opened
    finally:
        lib.finalize()  # now, not whenever the object is collected


def generate_mek(session: pkcs11.Session, label: str) -> pkcs11.SecretKey:
    """A persistent, non-extractable AES-256 key that may only wrap and unwrap."""
    return session.generate_key(
        KeyType.AES,
        256,
        label=label,
        store=True,
        capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
        template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
    )


def session_secret(
    session: pkcs11.Session, value: bytes, key_type: KeyType = KeyType.AES, **attrs: bool
) -> pkcs11.SecretKey:
    """Import ``value`` as a session (non-token) secret key object."""
    template = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: key_type,
        Attribute.VALUE: value,
        Attribute.TOKEN: False,
        Attribute.EXTRACTABLE: True,
        Attribute.SENSITIVE: False,
    }
    template.update({Attribute[name.upper()]: flag for name, flag in attrs.items()})
    return session.create_object(template)


def wrap_dek(mek: pkcs11.SecretKey, dek: bytes) -> bytes:
    """The recipe that works: import the DEK as an extractable session key, C_WrapKey it."""
    dek_object = session_secret(mek.session, dek)
    try:
        return mek.wrap_key(dek_object, mechanism=KWP)
    finally:
        dek_object.destroy()


def unwrap_dek(mek: pkcs11.SecretKey, wrapped: bytes, key_type: KeyType = KeyType.AES) -> bytes:
    """C_UnwrapKey into a readable session key (SENSITIVE false), read CKA_VALUE, destroy it."""
    dek_object = mek.unwrap_key(
        ObjectClass.SECRET_KEY,
        key_type,
        wrapped,
        mechanism=KWP,
        capabilities=MechanismFlag(0),
        template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    )
    try:
        value: bytes = dek_object[Attribute.VALUE]
        return value
    finally:
        dek_object.destroy()


def test_token_lifecycle_and_environment() -> None:
    """The token is seen through SOFTHSM2_CONF while open; exit restores the env, deletes it."""
    before = os.environ.get("SOFTHSM2_CONF")
    with SoftHsmToken(token_label="lifecycle") as hsm:
        assert os.environ["SOFTHSM2_CONF"] == str(hsm.conf_path) == hsm.env["SOFTHSM2_CONF"]
        slots = subprocess.run(
            ["softhsm2-util", "--show-slots"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **hsm.env},
        ).stdout
        assert "lifecycle" in slots
        with pytest.raises(SoftHsmError), SoftHsmToken():
            pass
        root = hsm.root
    assert os.environ.get("SOFTHSM2_CONF") == before
    assert not root.exists()


def test_mek_is_non_extractable_and_found_by_label(session: pkcs11.Session) -> None:
    """A generated MEK cannot be read or made extractable, and is found again by its label."""
    generate_mek(session, "mek-v1")
    mek = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="mek-v1")

    assert mek[Attribute.TOKEN] and mek[Attribute.SENSITIVE]
    assert not mek[Attribute.EXTRACTABLE] and mek[Attribute.NEVER_EXTRACTABLE]
    assert not mek[Attribute.ENCRYPT] and not mek[Attribute.DECRYPT]
    with pytest.raises(AttributeSensitive):
        mek[Attribute.VALUE]
    with pytest.raises(AttributeReadOnly):
        mek[Attribute.EXTRACTABLE] = True
    with pytest.raises(pkcs11.NoSuchKey):
        session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="mek-v9")


def test_wraps_and_unwraps_a_dek_inside_the_token(session: pkcs11.Session) -> None:
    """C_WrapKey/C_UnwrapKey with AES_KEY_WRAP_PAD round-trips a 32-byte DEK to the caller."""
    mek = generate_mek(session, "mek-v1")
    dek = os.urandom(32)

    wrapped = wrap_dek(mek, dek)

    assert len(wrapped) == 40  # RFC 5649: 8-byte integrity block + 32 bytes
    assert unwrap_dek(mek, wrapped) == dek
    assert unwrap_dek(mek, wrapped, KeyType.GENERIC_SECRET) == dek


def test_routes_that_softhsm_refuses(session: pkcs11.Session) -> None:
    """No C_Encrypt/C_Decrypt with the wrap mechanisms, no KWP (0x210B), no default-read-back."""
    mek = generate_mek(session, "mek-v1")
    encrypting_mek = session_secret(session, os.urandom(32), encrypt=True, decrypt=True, wrap=True)
    dek = os.urandom(32)

    with pytest.raises(MechanismInvalid):
        encrypting_mek.encrypt(dek, mechanism=KWP)
    with pytest.raises(MechanismInvalid):
        encrypting_mek.decrypt(wrap_dek(encrypting_mek, dek), mechanism=KWP)
    with pytest.raises(MechanismInvalid):
        mek.wrap_key(session_secret(session, dek), mechanism=Mechanism.AES_KEY_WRAP_KWP)

    # python-pkcs11's default unwrap template leaves the key unreadable (not extractable).
    unreadable = mek.unwrap_key(
        ObjectClass.SECRET_KEY, KeyType.AES, wrap_dek(mek, dek), mechanism=KWP
    )
    with pytest.raises(AttributeSensitive):
        unreadable[Attribute.VALUE]


def test_tampered_wrapped_dek_is_refused(session: pkcs11.Session) -> None:
    """Flipping one byte of a wrapped DEK makes C_UnwrapKey fail (SoftHSM: CKR_GENERAL_ERROR)."""
    mek = generate_mek(session, "mek-v1")
    wrapped = bytearray(wrap_dek(mek, os.urandom(32)))
    wrapped[5] ^= 0x01
    with pytest.raises(PKCS11Error):
        unwrap_dek(mek, bytes(wrapped))


@pytest.mark.parametrize(("kek", "key", "wrapped"), VECTORS)
def test_unwrap_matches_rfc5649_and_nist_vectors(
    session: pkcs11.Session, kek: str, key: str, wrapped: str
) -> None:
    """The token's AES_KEY_WRAP_PAD unwraps the published RFC 5649 / NIST KWP vectors."""
    kek_object = session_secret(session, bytes.fromhex(kek), wrap=True, unwrap=True)
    plain = unwrap_dek(kek_object, bytes.fromhex(wrapped), KeyType.GENERIC_SECRET)
    assert plain.hex() == key


def test_wrap_matches_nist_vector_and_pyca(session: pkcs11.Session) -> None:
    """Wrapping a key whose length is a multiple of 8 gives exactly the RFC 5649 output."""
    kek, key, wrapped = VECTORS[2]
    kek_object = session_secret(session, bytes.fromhex(kek), wrap=True, unwrap=True)
    key_object = session_secret(session, bytes.fromhex(key), KeyType.GENERIC_SECRET)
    assert kek_object.wrap_key(key_object, mechanism=KWP).hex() == wrapped

    kek_256, dek = os.urandom(32), os.urandom(32)
    kek_object = session_secret(session, kek_256, wrap=True, unwrap=True)
    assert wrap_dek(kek_object, dek) == aes_key_wrap_with_padding(kek_256, dek)


def test_wrap_zero_pads_keys_that_are_not_a_multiple_of_8(session: pkcs11.Session) -> None:
    """SoftHSM 2.6 quirk: C_WrapKey pads the key with zeros to 8 bytes first, so the output is
    RFC 5649 of the padded key, not of the key (irrelevant for 32-byte DEKs)."""
    kek, key, wrapped = VECTORS[0]
    kek_object = session_secret(session, bytes.fromhex(kek), wrap=True, unwrap=True)
    key_object = session_secret(session, bytes.fromhex(key), KeyType.GENERIC_SECRET)

    got = kek_object.wrap_key(key_object, mechanism=KWP)

    assert got.hex() != wrapped
    assert got == aes_key_wrap_with_padding(bytes.fromhex(kek), bytes.fromhex(key) + bytes(4))


def test_version_state_is_enforced_through_wrap_and_unwrap_flags(session: pkcs11.Session) -> None:
    """A retired version (CKA_WRAP false) still unwraps; a disabled one (CKA_UNWRAP false too)
    is refused by the token; the flags persist for later sessions."""
    mek = generate_mek(session, "mek-v1")
    wrapped = wrap_dek(mek, dek := os.urandom(32))

    mek[Attribute.WRAP] = False  # retired: no new wraps
    with pytest.raises(PKCS11Error):  # CKR_KEY_FUNCTION_NOT_PERMITTED (0x68)
        wrap_dek(mek, os.urandom(32))
    assert unwrap_dek(mek, wrapped) == dek

    mek[Attribute.UNWRAP] = False  # disabled: nothing
    with pytest.raises(PKCS11Error):
        unwrap_dek(mek, wrapped)

    with session.token.open() as later:  # the login is shared by the application's sessions
        seen = later.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="mek-v1")
        assert (seen[Attribute.WRAP], seen[Attribute.UNWRAP]) == (False, False)

    mek[Attribute.UNWRAP] = True  # re-enabled for reading
    assert unwrap_dek(mek, wrapped) == dek
