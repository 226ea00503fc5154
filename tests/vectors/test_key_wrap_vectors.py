"""Official vectors for the key-wrap algorithms the providers use.

* **AES key wrap with padding** (RFC 5649, NIST SP 800-38F KWP), what the ``pkcs11``
  provider wraps DEKs with: every NIST CAVP ``KWP_AE_256`` (wrap) and ``KWP_AD_256``
  (unwrap, including the vectors that must FAIL) vector through pyca's
  ``aes_key_wrap_with_padding``, and through SoftHSM with the provider's own mechanism. A
  failing unwrap must raise an error the provider turns into ``DecryptionError``.
  SoftHSM 2.6's ``CKM_AES_KEY_WRAP_PAD`` agrees with KWP only for plaintexts whose length
  is a multiple of 8 bytes (the vectors of 1, 9 and 31 bytes differ); the provider only
  ever wraps 48 bytes (DEK and binding digest), so its wraps are KWP: the test pins both.
* **RSA-OAEP with SHA-256 and MGF1-SHA-256**, what the ``akv`` provider wraps DEKs with
  in process (and Key Vault's ``RSA-OAEP-256`` unwraps): every vector of pyca's
  ``oaep-sha256-sha256.txt`` decrypts to its message with the provider's own padding
  object, every message encrypts and decrypts back, and vectors made with other hashes
  (SHA-1, and SHA-256 with MGF1-SHA-1) do not decrypt with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cryptography_vectors
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from tests import figures

VECTORS = Path(cryptography_vectors.__file__).parent


def _kwp(name: str) -> list[dict[str, str]]:
    """The COUNT blocks of a CAVP KWP file, as dicts (``FAIL`` as a key when present)."""
    blocks: list[dict[str, str]] = []
    for line in (VECTORS / "keywrap" / "kwtestvectors" / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("COUNT"):
            blocks.append({})
        elif blocks and line == "FAIL":
            blocks[-1]["FAIL"] = ""
        elif blocks and " = " in line:
            key, _, value = line.partition(" = ")
            blocks[-1][key] = value
    return blocks


def test_kwp_256_vectors_with_pyca() -> None:
    """Every KWP-AE-256 vector wraps to C, every KWP-AD-256 vector unwraps to P or fails."""
    wrapped = unwrapped = refused = 0
    for v in _kwp("KWP_AE_256.txt"):
        got = aes_key_wrap_with_padding(bytes.fromhex(v["K"]), bytes.fromhex(v["P"]))
        assert got == bytes.fromhex(v["C"])
        wrapped += 1
    for v in _kwp("KWP_AD_256.txt"):
        key, ciphertext = bytes.fromhex(v["K"]), bytes.fromhex(v["C"])
        if "FAIL" in v:
            with pytest.raises(InvalidUnwrap):
                aes_key_unwrap_with_padding(key, ciphertext)
            refused += 1
        else:
            assert aes_key_unwrap_with_padding(key, ciphertext) == bytes.fromhex(v["P"])
            unwrapped += 1
    figures.record("vectors", kwp_pyca=wrapped + unwrapped + refused)
    print(f"KWP-256 (pyca): {wrapped} wraps, {unwrapped} unwraps, {refused} refused")


@pytest.fixture(scope="module")
def session(softhsm: Any) -> Iterator[Any]:
    import pkcs11

    token = pkcs11.lib(str(softhsm.module_path)).get_token(token_label=softhsm.token_label)
    with token.open(user_pin=softhsm.user_pin, rw=True) as opened:
        yield opened


def _aes(session: Any, key: bytes) -> Any:
    from pkcs11 import Attribute, KeyType, ObjectClass

    return session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: key,
            Attribute.TOKEN: False,
            Attribute.WRAP: True,
            Attribute.UNWRAP: True,
        }
    )


def test_kwp_256_vectors_through_softhsm_with_the_providers_mechanism(session: Any) -> None:
    """The pkcs11 provider's mechanism in a real token agrees with every NIST KWP vector."""
    from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
    from pkcs11 import exceptions as p11

    from field_encrypt.providers.pkcs11 import _DECRYPTION_ERRORS, MECHANISMS

    mechanism = MECHANISMS["AES_KEY_WRAP_PAD"]
    wrapped = unwrapped = refused = 0
    differs: set[int] = set()
    for v in _kwp("KWP_AE_256.txt"):
        plaintext = bytes.fromhex(v["P"])
        mek = _aes(session, bytes.fromhex(v["K"]))
        secret = session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                Attribute.VALUE: plaintext,
                Attribute.TOKEN: False,
                Attribute.EXTRACTABLE: True,
                Attribute.SENSITIVE: False,
            }
        )
        try:
            agrees = mek.wrap_key(secret, mechanism=mechanism) == bytes.fromhex(v["C"])
        finally:
            secret.destroy()
            mek.destroy()
        if len(plaintext) % 8 == 0:
            assert agrees, f"KWP-AE COUNT with {len(plaintext)}-byte plaintext"
            wrapped += 1
        elif not agrees:
            differs.add(len(plaintext))
    template = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
    for v in _kwp("KWP_AD_256.txt"):
        mek = _aes(session, bytes.fromhex(v["K"]))
        ciphertext = bytes.fromhex(v["C"])
        aligned = "FAIL" in v or len(bytes.fromhex(v["P"])) % 8 == 0
        try:
            key = mek.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                ciphertext,
                mechanism=mechanism,
                capabilities=MechanismFlag(0),
                template=template,
            )
        except p11.PKCS11Error as exc:
            if "FAIL" in v:
                assert isinstance(exc, _DECRYPTION_ERRORS), type(exc)
                refused += 1
            else:
                assert not aligned, f"a valid {len(v['P']) // 2}-byte KWP vector was refused"
                differs.add(len(v["P"]) // 2)
            continue
        finally:
            mek.destroy()
        value = bytes(key[Attribute.VALUE])
        key.destroy()
        assert "FAIL" not in v or not aligned, "a KWP vector that must fail was accepted"
        if aligned:
            assert value == bytes.fromhex(v["P"])
            unwrapped += 1
        elif value != bytes.fromhex(v["P"]):
            differs.add(len(value))
    assert differs <= {1, 9, 31}, differs  # never the 8-byte multiples the provider uses
    assert wrapped == 200 and refused == 100, (wrapped, refused)
    figures.record("vectors", kwp_softhsm=wrapped + unwrapped + refused)
    print(
        f"KWP-256 (SoftHSM): {wrapped} wraps, {unwrapped} unwraps, {refused} refused; "
        f"plaintext lengths where SoftHSM differs from KWP: {sorted(differs)}"
    )


# -- RSA-OAEP-256 ------------------------------------------------------------------------------


def _oaep(path: Path) -> list[tuple[rsa.RSAPrivateKey, bytes, bytes]]:
    """(private key, message, ciphertext) from a pyca/NIST OAEP vector file."""
    fields: dict[str, int] = {}
    out: list[tuple[rsa.RSAPrivateKey, bytes, bytes]] = []
    key: rsa.RSAPrivateKey | None = None
    section = ""
    pending: str | None = None
    message = b""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("# Private key"):
            section, fields = "private", {}
            continue
        if line.startswith("# Public key"):
            section = "public"
            continue
        if line.startswith("# ") and line.endswith(":"):
            pending = line[2:-1]
            continue
        if pending is None or not line or line.startswith("#"):
            pending = None if line.startswith("#") else pending
            continue
        value = line.replace(" ", "")
        if section == "private" and pending in (
            "Modulus", "Public exponent", "Exponent", "Prime 1", "Prime 2",
            "Prime exponent 1", "Prime exponent 2", "Coefficient",
        ):  # fmt: skip
            fields[pending] = int(value, 16)
            if pending == "Coefficient":
                key = rsa.RSAPrivateNumbers(
                    p=fields["Prime 1"],
                    q=fields["Prime 2"],
                    d=fields["Exponent"],
                    dmp1=fields["Prime exponent 1"],
                    dmq1=fields["Prime exponent 2"],
                    iqmp=fields["Coefficient"],
                    public_numbers=rsa.RSAPublicNumbers(
                        fields["Public exponent"], fields["Modulus"]
                    ),
                ).private_key()
                section = "examples"
        elif pending == "Message":
            message = bytes.fromhex(value)
        elif pending == "Encryption" and key is not None:
            out.append((key, message, bytes.fromhex(value)))
        pending = None
    return out


def test_rsa_oaep_sha256_vectors_with_the_akv_providers_padding() -> None:
    """The akv provider's padding (the one its wrap uses) opens every OAEP-SHA-256 vector,
    and round-trips each message under the vector's key."""
    from field_encrypt.providers.azure_key_vault import _OAEP_256

    vectors = _oaep(VECTORS / "asymmetric" / "RSA" / "oaep-custom" / "oaep-sha256-sha256.txt")
    assert len(vectors) >= 60
    for key, message, ciphertext in vectors:
        assert key.decrypt(ciphertext, _OAEP_256) == message
        assert key.decrypt(key.public_key().encrypt(message, _OAEP_256), _OAEP_256) == message
    figures.record("vectors", rsa_oaep_256=len(vectors))
    print(f"RSA-OAEP-256: {len(vectors)} vectors decrypt and round-trip")


@pytest.mark.parametrize(
    "name",
    ["oaep-sha256-sha1.txt", "oaep-sha1-sha256.txt", "oaep-sha512-sha256.txt"],
)  # fmt: skip
def test_other_oaep_hashes_do_not_open_with_the_akv_padding(name: str) -> None:
    """Vectors made with another hash or MGF1 hash are refused: the parameters are pinned."""
    from field_encrypt.providers.azure_key_vault import _OAEP_256

    vectors = _oaep(VECTORS / "asymmetric" / "RSA" / "oaep-custom" / name)
    assert vectors
    for key, _message, ciphertext in vectors:
        with pytest.raises(ValueError):
            key.decrypt(ciphertext, _OAEP_256)
    figures.record("vectors", rsa_oaep_other_hashes_refused=len(vectors))
