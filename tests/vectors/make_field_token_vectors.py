"""Write the field-token known-answer vectors from docs/FORMAT.md, independently of token.py.

Run ``python -m tests.vectors.make_field_token_vectors`` to regenerate; the output is
deterministic. The builder below follows the written format with ``AESGCM`` alone and never
imports ``field_encrypt``, so the vectors check the library rather than repeat it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = Path(__file__).parent / "field_token"


def _det(label: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def _lp(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _build(case: dict[str, object]) -> str:
    key = bytes.fromhex(str(case["key"]))
    nonce = bytes.fromhex(str(case["nonce"]))
    dek_id = bytes.fromhex(str(case["dek_id"]))
    version = str(case["mek_version"]).encode("ascii")
    head = b"\x01" + dek_id + bytes([len(version)]) + version
    binding = b"".join(
        _lp(str(case[k])) for k in ("product", "collection", "document_id", "field_path")
    )
    kind, value = str(case["type"]), case["value"]
    if kind == "str":
        plaintext = b"s" + str(value).encode()
    elif kind == "bytes":
        plaintext = b"b" + bytes.fromhex(str(value))
    else:
        plaintext = b"j" + json.dumps(value, separators=(",", ":")).encode()
    sealed = AESGCM(key).encrypt(nonce, plaintext, head + binding)
    return "fe1:" + base64.b64encode(head + nonce + sealed).decode()


def _cases() -> list[dict[str, object]]:
    values: list[tuple[str, object]] = [
        ("str", ""),
        ("str", "Shopping list"),
        ("str", "Ünïcødé ✓ 漢字 🙂"),
        ("str", "x" * 1000),
        ("bytes", "00ff10"),
        ("json", {"a": [1, 2, 3], "b": None}),
        ("json", 42),
    ]
    versions = ["1", "2", "0123456789abcdef0123456789abcdef", "arn:aws:kms:us-east-1:1:key/x"]
    cases = []
    for i, (kind, value) in enumerate(values):
        cases.append(
            {
                "description": f"{kind} value #{i}",
                "key": _det(f"key{i}", 32).hex(),
                "nonce": _det(f"nonce{i}", 12).hex(),
                "dek_id": _det(f"dek{i}", 16).hex(),
                "mek_version": versions[i % len(versions)],
                "product": "notelett",
                "collection": "notes",
                "document_id": f"note-{i}",
                "field_path": "body" if i % 2 else "meta.title",
                "type": kind,
                "value": value,
            }
        )
    return cases


def _noncanonical(token: str) -> str:
    """The same bytes spelled with a non-zero unused bit before the '=' padding."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = len(token) - len(token.rstrip("="))
    assert pad, "the chosen vector's token must end in padding"
    i = len(token) - pad - 1
    return token[:i] + alphabet[alphabet.index(token[i]) | 1] + token[i + 1 :]


def _invalid(cases: list[dict[str, object]]) -> list[dict[str, object]]:
    base = dict(cases[1])
    token = _build(base)
    raw = base64.b64decode(token[4:])

    def text(data: bytes) -> str:
        return "fe1:" + base64.b64encode(data).decode()

    flipped_tag = raw[:-1] + bytes([raw[-1] ^ 1])
    flipped_version_byte = raw[:18] + bytes([raw[18] ^ 1]) + raw[19:]
    other_dek = raw[:1] + bytes([raw[1] ^ 0x80]) + raw[2:]
    out: list[tuple[str, str, str, dict[str, object]]] = [
        ("tag bit flipped", text(flipped_tag), "decryption", {}),
        ("mekVersion byte flipped", text(flipped_version_byte), "decryption", {}),
        ("dekId bit flipped", text(other_dek), "decryption", {}),
        ("truncated", text(raw[:-5]), "decryption", {}),
        ("too short", text(raw[:20]), "decryption", {}),
        ("unknown format version", text(b"\x02" + raw[1:]), "unsupported", {}),
        ("not base64", "fe1:@@@@", "decryption", {}),
        ("non-canonical base64 padding bits", _noncanonical(token), "decryption", {}),
        ("wrong document", token, "decryption", {"document_id": "note-999"}),
        ("wrong field", token, "decryption", {"field_path": "title"}),
        ("wrong collection", token, "decryption", {"collection": "drafts"}),
        ("wrong product", token, "decryption", {"product": "other"}),
        ("wrong key", token, "decryption", {"key": _det("other", 32).hex()}),
    ]
    result = []
    for description, bad, error, override in out:
        case = {k: base[k] for k in ("key", "product", "collection", "document_id", "field_path")}
        case.update(override)
        result.append({"description": description, "token": bad, "error": error, **case})
    return result


def main() -> None:
    HERE.mkdir(exist_ok=True)
    cases = _cases()
    generate = [{**c, "token": _build(c)} for c in cases]
    verify = [
        {k: v for k, v in c.items() if k not in ("nonce", "dek_id", "mek_version")}
        for c in generate
    ]
    for name, data in (
        ("generate", generate),
        ("verify", verify),
        ("invalid", _invalid(cases)),
    ):
        (HERE / f"{name}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
