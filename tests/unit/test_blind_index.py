"""Blind index values: normalisation, truncation, versions, tampering, and no key in sight."""

from __future__ import annotations

import hashlib

import pytest

from field_encrypt.blind_index import (
    BlindIndex,
    IndexedField,
    derive_index_key,
    format_value,
    normalise,
    parse_value,
    truncate,
)
from field_encrypt.errors import ConfigurationError, UnsupportedFormatError

ROOT_1 = hashlib.sha256(b"unit root 1").digest()
ROOT_2 = hashlib.sha256(b"unit root 2").digest()
TAGS = IndexedField(collection="notes", path="tags")


def _index(*fields: IndexedField, version: int = 1, **roots: bytes) -> BlindIndex:
    root_keys = {int(k[1:]): v for k, v in roots.items()} or {1: ROOT_1}
    return BlindIndex(
        product="notelett", fields=fields or (TAGS,), root_keys=root_keys, version=version
    )


# -- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("caf\u00e9", "cafe\u0301"),  # precomposed and decomposed e-acute (NFC)
        ("\u212b", "\u00c5"),  # ANGSTROM SIGN and A-ring (canonical equivalents)
        ("work", " work "),
        ("work", "\twork\n"),
        ("work", "\u00a0work\u2003"),  # Unicode spaces are stripped too
    ],
)
def test_equivalent_texts_share_a_value(a: str, b: str) -> None:
    """Canonically equivalent texts, and texts differing only in outer whitespace, match."""
    index = _index()
    assert index.value("notes", "tags", a) == index.value("notes", "tags", b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("work", "Work"),  # case is kept unless the field folds it
        ("work", "wo rk"),  # inner whitespace is kept
        ("fi", "\ufb01"),  # a compatibility ligature is not NFC-equivalent (no NFKC)
        ("1", "\u0661"),  # ARABIC-INDIC DIGIT ONE is another character
        ("work", "work\u200b"),  # a zero-width space is not whitespace to str.strip
    ],
)
def test_different_texts_do_not_match(a: str, b: str) -> None:
    """Only the documented normalisation applies: nothing else is merged."""
    index = _index()
    assert index.value("notes", "tags", a) != index.value("notes", "tags", b)


@pytest.mark.parametrize(
    ("a", "b"), [("Work", "work"), ("STRASSE", "straße"), ("ΣΊΣΥΦΟΣ", "σίσυφος"), (" Ǆ ", "ǆ")]
)
def test_casefold_matches_across_case(a: str, b: str) -> None:
    """With ``casefold`` the field matches across Unicode case, not only ASCII."""
    index = _index(IndexedField(collection="notes", path="tags", casefold=True))
    assert index.value("notes", "tags", a) == index.value("notes", "tags", b)


def test_normalise_is_documented_order() -> None:
    """NFC, then casefold and NFC again, then strip: the steps the format names."""
    assert normalise("  Cafe\u0301  ") == "Caf\u00e9"
    assert normalise("  Cafe\u0301  ", casefold=True) == "caf\u00e9"
    assert normalise("\u1e9e", casefold=True) == "ss"  # LATIN CAPITAL SHARP S


@pytest.mark.parametrize("value", [b"work", 1, None, ["work"]])
def test_non_text_is_refused(value: object) -> None:
    """Only text is indexed; anything else is a TypeError, never a silent str()."""
    with pytest.raises(TypeError, match="text values"):
        _index().value("notes", "tags", value)  # type: ignore[arg-type]


# -- truncation ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 16, 31, 32, 64, 128, 255, 256])
def test_truncation_keeps_the_leading_bits(bits: int) -> None:
    """A truncated value is the full HMAC's first ``bits`` bits, the rest of its byte zero."""
    full = parse_value(_index().value("notes", "tags", "work"))[1]
    short = _index(IndexedField(collection="notes", path="tags", bits=bits))
    mac = parse_value(short.value("notes", "tags", "work"))[1]
    assert len(mac) == (bits + 7) // 8
    as_int = int.from_bytes(mac, "big") >> (len(mac) * 8 - bits)
    assert as_int == int.from_bytes(full, "big") >> (256 - bits)
    assert int.from_bytes(mac, "big") & ((1 << (len(mac) * 8 - bits)) - 1) == 0
    assert truncate(full, bits) == mac


def test_truncation_trades_false_positives_for_leakage() -> None:
    """At 8 bits, 1000 distinct tags fall into at most 256 values: a lookup can match tags
    it was not asked for (the caller filters after decrypting), and the column tells less."""
    index = _index(IndexedField(collection="notes", path="tags", bits=8))
    values = {index.value("notes", "tags", f"tag-{i}") for i in range(1000)}
    assert len(values) <= 256
    full = _index()
    assert len({full.value("notes", "tags", f"tag-{i}") for i in range(1000)}) == 1000


@pytest.mark.parametrize("bits", [0, 257, -8, 8.0, True])
def test_bad_truncation_is_a_configuration_error(bits: object) -> None:
    """``bits`` outside 1..256 (or not an integer) is refused when the field is declared."""
    with pytest.raises(ConfigurationError, match=r"notes\.tags"):
        IndexedField(collection="notes", path="tags", bits=bits)  # type: ignore[arg-type]


# -- versions, fields, separation -------------------------------------------------------


def test_lookup_covers_every_version_current_first() -> None:
    """During a re-index a lookup gives the current version's value, then the older ones."""
    old = _index(v1=ROOT_1)
    both = _index(version=2, v1=ROOT_1, v2=ROOT_2)
    stored_old = old.value("notes", "tags", "work")
    lookup = both.lookup_values("notes", "tags", "work")
    assert lookup[0] == both.value("notes", "tags", "work")
    assert lookup[0].startswith("bi1:2:") and lookup[1] == stored_old
    assert both.versions == (2, 1)
    assert not both.is_current(stored_old) and both.is_current(lookup[0])


def test_separation_between_fields_and_products() -> None:
    """The same text in another field, collection or product gives an unrelated value."""
    a = IndexedField(collection="notes", path="tags")
    b = IndexedField(collection="notes", path="labels")
    c = IndexedField(collection="archive", path="tags")
    index = _index(a, b, c)
    other = BlindIndex(product="other", fields=[a], root_keys={1: ROOT_1}, version=1)
    values = {
        index.value("notes", "tags", "work"),
        index.value("notes", "labels", "work"),
        index.value("archive", "tags", "work"),
        other.value("notes", "tags", "work"),
    }
    assert len(values) == 4


@pytest.mark.parametrize("position", range(32))
def test_each_root_key_byte_matters(position: int) -> None:
    """Flipping any single bit of the root key changes the index value."""
    flipped = bytearray(ROOT_1)
    flipped[position] ^= 0x01
    assert _index(v1=bytes(flipped)).value("notes", "tags", "work") != _index().value(
        "notes", "tags", "work"
    )


def test_a_tampered_stored_value_is_refused_or_matches_nothing() -> None:
    """A single flipped character of a stored value either fails to parse or differs."""
    index = _index()
    good = index.value("notes", "tags", "work")
    for i in range(len(good)):
        for replacement in ("A", "_", "=", " "):
            if good[i] == replacement:
                continue
            bad = good[:i] + replacement + good[i + 1 :]
            try:
                parse_value(bad)
            except UnsupportedFormatError:
                continue
            assert bad not in index.lookup_values("notes", "tags", "work")


def test_configuration_errors_name_what_is_wrong() -> None:
    """Unknown fields, duplicates, missing or malformed root keys and bad versions are
    refused at construction or call, naming what to fix."""
    with pytest.raises(ConfigurationError, match=r"notes\.body has no blind index"):
        _index().value("notes", "body", "x")
    with pytest.raises(ConfigurationError, match="indexed twice"):
        _index(TAGS, TAGS)
    with pytest.raises(ConfigurationError, match="current index-key version 2"):
        _index(version=2)
    with pytest.raises(ConfigurationError, match="not 32 bytes"):
        _index(v1=b"short")
    with pytest.raises(ConfigurationError, match="index-key version"):
        _index(v0=ROOT_1, version=0)
    with pytest.raises(ConfigurationError, match="index-key version"):
        format_value(2**32, b"\x00")
    with pytest.raises(ConfigurationError, match="32 bytes"):
        derive_index_key(b"", product="p", collection="c", path="f", version=1)


def test_no_key_material_in_repr_or_errors() -> None:
    """Neither the root key nor any derived key appears in a repr or an error message."""
    index = _index(version=2, v1=ROOT_1, v2=ROOT_2)
    derived = [
        derive_index_key(k, product="notelett", collection="notes", path="tags", version=v)
        for v, k in ((1, ROOT_1), (2, ROOT_2))
    ]
    texts = [repr(index), repr(index._keys), str(vars(IndexedField))]
    try:
        index.value("notes", "missing", "x")
    except ConfigurationError as exc:
        texts.append(str(exc))
    try:
        _index(v1=ROOT_1[:31])
    except ConfigurationError as exc:
        texts.append(str(exc))
    for text in texts:
        for key in (ROOT_1, ROOT_2, ROOT_1[:31], *derived):
            assert key.hex() not in text and repr(key) not in text
    assert "version=2" in repr(index)


def test_multi_valued_fields_and_the_false_positive_check() -> None:
    """A list of tags gives its distinct values, sorted; ``same`` tells a true match (under
    the field's normalisation) from a truncated index's false positive."""
    folded = IndexedField(collection="notes", path="tags", casefold=True, bits=8)
    index = _index(folded)
    tags = index.values("notes", "tags", ["Work", "work ", "home"])
    assert len(tags) == 2 and list(tags) == sorted(tags)
    assert set(tags) == {index.value("notes", "tags", "work"), index.value("notes", "tags", "home")}
    assert index.same("notes", "tags", " WORK", "work")
    collision = next(
        f"tag-{i}"
        for i in range(10_000)
        if index.value("notes", "tags", f"tag-{i}") == index.value("notes", "tags", "work")
    )
    assert not index.same("notes", "tags", collision, "work")
