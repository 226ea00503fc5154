"""Known-answer tests for the field token format (docs/FORMAT.md), pyca-Fernet style."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import compiled, token
from field_encrypt.aead import cipher
from field_encrypt.errors import DecryptionError, UnsupportedFormatError

HERE = Path(__file__).parent / "field_token"


def _load(name: str) -> list[dict[str, Any]]:
    return json.loads((HERE / f"{name}.json").read_text())


def _value(case: dict[str, Any]) -> object:
    return bytes.fromhex(case["value"]) if case["type"] == "bytes" else case["value"]


def _binding(case: dict[str, Any]) -> bytes:
    return token.binding(
        case["product"], case["collection"], case["document_id"], case["field_path"]
    )


@pytest.mark.parametrize("case", _load("generate"), ids=lambda c: c["description"])
def test_generate(case: dict[str, Any]) -> None:
    """Sealing the vector's inputs with the vector's key and nonce gives its token byte for byte."""
    raw = token.seal(
        cipher(bytes.fromhex(case["key"])),
        bytes.fromhex(case["nonce"]),
        dek_id=bytes.fromhex(case["dek_id"]),
        mek_version=case["mek_version"],
        binding=_binding(case),
        value=_value(case),
    )
    assert token.to_text(raw) == case["token"]


PATHS = [
    "pure",
    pytest.param(
        "compiled",
        marks=pytest.mark.skipif(not compiled.built(), reason="field_encrypt._gcm is not built"),
    ),
]


def _open_compiled(case: dict[str, Any], raw: bytes | str) -> dict[str, Any] | None:
    """The vector's token (binary or text) opened by the compiled path; ``None`` where it
    stops (and the pure-Python path, which raises the errors, takes the document)."""
    from field_encrypt import _gcm

    key = _gcm.Key(bytes.fromhex(case["key"]))
    doc: dict[str, Any] = {"field": raw}
    opened = _gcm.open_documents(
        [doc],
        [case["document_id"]],
        token.lp(case["product"]) + token.lp(case["collection"]),
        (("field", token.lp(case["field_path"])),),
        lambda _dek_id: key,
        token.decode_value,
        0,
    )
    return doc if opened == 1 else None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", _load("verify"), ids=lambda c: c["description"])
def test_verify(case: dict[str, Any], path: str) -> None:
    """Every published token opens to its published value, from text and binary form alike,
    on the pure-Python and the compiled read path."""
    raw = token.from_text(case["token"])
    if path == "compiled":
        assert _open_compiled(case, raw) == {"field": _value(case)}
        assert _open_compiled(case, case["token"]) == {"field": _value(case)}
        return
    key = cipher(bytes.fromhex(case["key"]))
    assert token.open_(key, raw, _binding(case)) == _value(case)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", _load("invalid"), ids=lambda c: c["description"])
def test_invalid(case: dict[str, Any], path: str) -> None:
    """Every invalid vector is refused with the documented error and nothing else (the
    compiled path opens none of them: it stops, and the pure-Python path raises)."""
    expected = DecryptionError if case["error"] == "decryption" else UnsupportedFormatError
    if path == "compiled":
        assert _open_compiled(case, case["token"]) is None
        try:
            raw = token.from_text(case["token"])
        except (DecryptionError, UnsupportedFormatError):
            raw = None  # not a binary token at all: nothing reaches the compiled path
        if raw is not None:
            assert _open_compiled(case, raw) is None
    with pytest.raises(expected):
        token.open_(
            cipher(bytes.fromhex(case["key"])), token.from_text(case["token"]), _binding(case)
        )


def test_header_is_readable_without_a_key() -> None:
    """The dekId and mekVersion of a token are readable without decrypting it."""
    case = _load("generate")[2]
    header = token.read_header(token.from_text(case["token"]))
    assert header.dek_id.hex() == case["dek_id"]
    assert header.mek_version == case["mek_version"]
