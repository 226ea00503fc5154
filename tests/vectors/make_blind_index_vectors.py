"""Write the blind-index known-answer vectors from docs/FORMAT.md, independently of the library.

Run ``python -m tests.vectors.make_blind_index_vectors`` to regenerate; the output is
deterministic. :func:`expected_value` follows the written format with the standard
library's ``hmac``, ``hashlib`` and ``unicodedata`` alone (HKDF written out from RFC 5869)
and never imports ``field_encrypt``, so the vectors check the library rather than repeat it.
The test suite also calls :func:`expected_value` on every vector, so a vector file edited by
hand is caught as well as a library that drifts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import unicodedata
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "blind_index"


def _lp(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with an absent salt (HashLen zero bytes)."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def expected_value(case: dict[str, Any]) -> str:
    """The index value of a vector's inputs, computed from the written format."""
    root_key = bytes.fromhex(case["root_key"])
    version = int(case["version"])
    info = (
        b"field-encrypt/blind-index/v1\x00"
        + _lp(case["product"])
        + _lp(case["collection"])
        + _lp(case["field_path"])
        + version.to_bytes(4, "big")
    )
    index_key = hkdf_sha256(root_key, info)
    text = unicodedata.normalize("NFC", case["value"])
    if case["casefold"]:
        text = unicodedata.normalize("NFC", text.casefold())
    text = text.strip()
    mac = hmac.new(index_key, b"\x01" + text.encode("utf-8"), hashlib.sha256).digest()
    bits = int(case["bits"])
    mac = mac[: (bits + 7) // 8]
    if bits % 8:
        mac = mac[:-1] + bytes((mac[-1] & (0xFF << (8 - bits % 8)) & 0xFF,))
    return f"bi1:{version}:{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


ROOT_A = bytes(range(32)).hex()
ROOT_B = hashlib.sha256(b"blind-index vector root key B").hexdigest()

_BASE: dict[str, Any] = {
    "root_key": ROOT_A,
    "version": 1,
    "product": "notelett",
    "collection": "notes",
    "field_path": "tags",
    "casefold": False,
    "bits": 256,
}

_CASES: list[tuple[str, dict[str, Any]]] = [
    ("ascii tag", {"value": "work"}),
    ("empty string", {"value": ""}),
    ("surrounding whitespace is stripped", {"value": "  work\t\n"}),
    ("case kept without casefold", {"value": "Work"}),
    ("casefold", {"value": "Work", "casefold": True}),
    ("casefold of sharp s", {"value": "Straße", "casefold": True}),
    ("NFC: precomposed e-acute", {"value": "caf\u00e9"}),
    ("NFC: e + combining acute", {"value": "cafe\u0301"}),
    ("non-BMP text", {"value": "\U0001f512 secret"}),
    ("nested field path", {"value": "work", "field_path": "meta.tags"}),
    ("other collection", {"value": "work", "collection": "archive"}),
    ("other product", {"value": "work", "product": "other"}),
    ("index-key version 2, same root key", {"value": "work", "version": 2}),
    ("index-key version 2, its own root key", {"value": "work", "version": 2, "root_key": ROOT_B}),
    ("large version", {"value": "work", "version": 4294967295}),
    ("truncated to 128 bits", {"value": "work", "bits": 128}),
    ("truncated to 32 bits", {"value": "work", "bits": 32}),
    ("truncated to 16 bits", {"value": "work", "bits": 16}),
    ("truncated to 12 bits (partial byte)", {"value": "work", "bits": 12}),
    ("truncated to 1 bit", {"value": "work", "bits": 1}),
    ("casefold and truncation", {"value": " WORK ", "casefold": True, "bits": 32}),
]

# Strings that are not index values: each must be refused as an unsupported format.
_INVALID = [
    ("empty", ""),
    ("no prefix", "1:AAAA"),
    ("wrong format marker", "bi2:1:AAAA"),
    ("version zero", "bi1:0:AAAA"),
    ("leading zero in version", "bi1:01:AAAA"),
    ("version above 2**32-1", "bi1:4294967296:AAAA"),
    ("negative version", "bi1:-1:AAAA"),
    ("missing mac", "bi1:1:"),
    ("missing version", "bi1::AAAA"),
    ("padding", "bi1:1:AA=="),
    ("standard base64 alphabet", "bi1:1:ab+/"),
    ("one base64 character", "bi1:1:A"),
    ("mac longer than 32 bytes", "bi1:1:" + "A" * 44),
    ("non-canonical low bits", "bi1:1:AB"),
    ("trailing space", "bi1:1:AAAA "),
    ("upper-case prefix", "BI1:1:AAAA"),
]


def build() -> dict[str, list[dict[str, Any]]]:
    generate = []
    for description, overrides in _CASES:
        case = {"description": description, **_BASE, **overrides}
        case["index_value"] = expected_value(case)
        generate.append(case)
    invalid = [{"description": d, "index_value": v} for d, v in _INVALID]
    return {"generate": generate, "invalid": invalid}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, cases in build().items():
        (HERE / f"{name}.json").write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
