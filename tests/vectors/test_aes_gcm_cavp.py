"""NIST CAVP AES-256-GCM decryption vectors (gcmDecrypt256.rsp) through the project's AEAD layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cryptography_vectors
import pytest

from field_encrypt import aead
from field_encrypt.errors import DecryptionError

RSP = Path(cryptography_vectors.__file__).parent / "ciphers" / "AES" / "GCM" / "gcmDecrypt256.rsp"


def _vectors() -> Iterator[dict[str, str]]:
    params: dict[str, str] = {}
    case: dict[str, str] = {}
    for line in RSP.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            name, _, value = line.strip("[]").partition(" = ")
            params[name] = value
        elif line.startswith("Count"):
            case = {"Count": line.split(" = ")[1], **params}
        elif " = " in line or line.endswith("="):
            name, _, value = line.partition(" =")
            case[name.strip()] = value.strip()
        elif line == "FAIL":
            case["FAIL"] = "1"
        if "PT" in case or "FAIL" in case:
            if case.get("IVlen") == "96" and case.get("Taglen") == "128":
                yield case
            case = {}


VECTORS = list(_vectors())


def test_the_vector_file_was_read() -> None:
    """The parser found the 96-bit-IV, 128-bit-tag vectors, both passing and failing."""
    assert len(VECTORS) > 100
    assert any("FAIL" in v for v in VECTORS)
    assert any("PT" in v for v in VECTORS)


@pytest.mark.parametrize(
    "vector", VECTORS, ids=lambda v: f"{v['PTlen']}-{v['AADlen']}-{v['Count']}"
)
def test_cavp_decrypt(vector: dict[str, str]) -> None:
    """Our open_ returns the published plaintext, or DecryptionError where NIST says FAIL."""
    key = aead.cipher(bytes.fromhex(vector["Key"]))
    nonce = bytes.fromhex(vector["IV"])
    sealed = bytes.fromhex(vector["CT"]) + bytes.fromhex(vector["Tag"])
    aad = bytes.fromhex(vector["AAD"])
    if "FAIL" in vector:
        with pytest.raises(DecryptionError):
            aead.open_(key, nonce, sealed, aad)
    else:
        assert aead.open_(key, nonce, sealed, aad) == bytes.fromhex(vector["PT"])
        assert aead.seal(key, nonce, bytes.fromhex(vector["PT"]), aad) == sealed
