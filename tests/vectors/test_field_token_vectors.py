"""Known-answer tests for the field token format (docs/FORMAT.md), pyca-Fernet style."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from field_encrypt import token
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


@pytest.mark.parametrize("case", _load("verify"), ids=lambda c: c["description"])
def test_verify(case: dict[str, Any]) -> None:
    """Every published token opens to its published value, from text and binary form alike."""
    key = cipher(bytes.fromhex(case["key"]))
    raw = token.from_text(case["token"])
    assert token.open_(key, raw, _binding(case)) == _value(case)


@pytest.mark.parametrize("case", _load("invalid"), ids=lambda c: c["description"])
def test_invalid(case: dict[str, Any]) -> None:
    """Every invalid vector is refused with the documented error and nothing else."""
    expected = DecryptionError if case["error"] == "decryption" else UnsupportedFormatError
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
