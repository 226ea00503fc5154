"""Known-answer tests for blind index values (docs/FORMAT.md, "Blind index values")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from field_encrypt.blind_index import (
    BlindIndex,
    IndexedField,
    compute,
    derive_index_key,
    format_value,
    normalise,
    parse_value,
)
from field_encrypt.errors import UnsupportedFormatError
from tests.vectors.make_blind_index_vectors import build, expected_value

HERE = Path(__file__).parent / "blind_index"


def _load(name: str) -> list[dict[str, Any]]:
    return json.loads((HERE / f"{name}.json").read_text())


@pytest.mark.parametrize("case", _load("generate"), ids=lambda c: c["description"])
def test_generate(case: dict[str, Any]) -> None:
    """The library's pure core gives each vector's index value from its root key and inputs."""
    index_key = derive_index_key(
        bytes.fromhex(case["root_key"]),
        product=case["product"],
        collection=case["collection"],
        path=case["field_path"],
        version=case["version"],
    )
    mac = compute(index_key, normalise(case["value"], casefold=case["casefold"]), bits=case["bits"])
    assert format_value(case["version"], mac) == case["index_value"]


@pytest.mark.parametrize("case", _load("generate"), ids=lambda c: c["description"])
def test_blind_index_recipe(case: dict[str, Any]) -> None:
    """BlindIndex, the layer applications call, gives the same value as the vector."""
    index = BlindIndex(
        product=case["product"],
        fields=[
            IndexedField(
                collection=case["collection"],
                path=case["field_path"],
                casefold=case["casefold"],
                bits=case["bits"],
            )
        ],
        root_keys={case["version"]: bytes.fromhex(case["root_key"])},
        version=case["version"],
    )
    assert index.value(case["collection"], case["field_path"], case["value"]) == case["index_value"]


@pytest.mark.parametrize("case", _load("generate"), ids=lambda c: c["description"])
def test_vector_is_the_written_format(case: dict[str, Any]) -> None:
    """Each stored value is what the format, computed with hmac and hashlib alone, gives."""
    assert expected_value(case) == case["index_value"]


@pytest.mark.parametrize("case", _load("generate"), ids=lambda c: c["description"])
def test_parse(case: dict[str, Any]) -> None:
    """Every published value parses back to its version and re-formats byte for byte."""
    version, mac = parse_value(case["index_value"])
    assert version == case["version"]
    assert len(mac) == (case["bits"] + 7) // 8
    assert format_value(version, mac) == case["index_value"]


@pytest.mark.parametrize("case", _load("invalid"), ids=lambda c: c["description"])
def test_invalid(case: dict[str, Any]) -> None:
    """Every invalid vector is refused as an unsupported format, with a fixed message."""
    with pytest.raises(UnsupportedFormatError, match=r"^not a blind index value$"):
        parse_value(case["index_value"])


def test_vector_files_are_current() -> None:
    """The files on disk are exactly what the generator writes (regenerate after a change)."""
    built = build()
    assert _load("generate") == built["generate"]
    assert _load("invalid") == built["invalid"]


def test_vectors_cover_what_the_format_distinguishes() -> None:
    """The vectors pin the properties the docs promise, not just single values."""
    by = {c["description"]: c["index_value"] for c in _load("generate")}
    assert by["ascii tag"] == by["surrounding whitespace is stripped"]
    assert by["NFC: precomposed e-acute"] == by["NFC: e + combining acute"]
    assert by["case kept without casefold"] != by["ascii tag"]
    assert by["casefold"] == by["ascii tag"]  # "Work" folds to "work"
    distinct = [
        by["ascii tag"],
        by["nested field path"],
        by["other collection"],
        by["other product"],
        by["index-key version 2, same root key"],
        by["index-key version 2, its own root key"],
    ]
    assert len({v.split(":")[2] for v in distinct}) == len(distinct)
    full = parse_value(by["ascii tag"])[1]
    assert parse_value(by["truncated to 128 bits"])[1] == full[:16]
    assert parse_value(by["truncated to 32 bits"])[1] == full[:4]
    assert parse_value(by["truncated to 12 bits (partial byte)"])[1] == full[:1] + bytes(
        (full[1] & 0xF0,)
    )
