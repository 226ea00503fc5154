"""Where a document keeps its index values (``<field>__bi``) and how they are counted."""

from __future__ import annotations

from field_encrypt.blind_index import BlindIndex, IndexedField
from field_encrypt.index_values import (
    INVALID,
    MISSING,
    field_versions,
    needs_reindex,
    tally,
    with_index_values,
)

FIELDS = [
    IndexedField(collection="c", path="ssn"),
    IndexedField(collection="c", path="profile.note", casefold=True),
    IndexedField(collection="c", path="tags"),
    IndexedField(collection="other", path="x"),
]


def _index(version: int) -> BlindIndex:
    keys = {v: bytes([v]) * 32 for v in range(1, version + 1)}
    return BlindIndex(product="p", fields=FIELDS, root_keys=keys, version=version)


def test_values_go_beside_their_fields_and_the_stored_document_is_not_changed() -> None:
    """Text: one value; nested: in the same object; a list: its sorted distinct values;
    no value: no sibling (a stale one is removed); other collections' fields untouched."""
    index = _index(1)
    stored = {"ssn": "tok", "profile": {"note": "tok"}, "tags": ["t", "t"], "x": "tok"}
    stored["old__bi"] = "kept"
    plain = {"ssn": "1", "profile": {"note": "Hi"}, "tags": ["b", "a", "b"], "x": "y"}
    out = with_index_values(index, "c", stored, plain)
    assert out["ssn__bi"] == index.value("c", "ssn", "1")
    assert out["profile"]["note__bi"] == index.value("c", "profile.note", "hi")
    assert out["tags__bi"] == sorted({index.value("c", "tags", "a"), index.value("c", "tags", "b")})
    assert "x__bi" not in out and out["old__bi"] == "kept"
    assert "ssn__bi" not in stored and "note__bi" not in stored["profile"]
    cleared = with_index_values(index, "c", {**out, "ssn": None}, {"ssn": None})
    assert "ssn__bi" not in cleared and "tags__bi" not in cleared


def test_what_needs_a_reindex_and_what_is_counted() -> None:
    """Missing, invalid or older values need a reindex; a field with no value does not."""
    old, new = _index(1), _index(2)
    plain = {"ssn": "1", "profile": {"note": "n"}, "tags": ["a", "b"]}
    v1 = with_index_values(old, "c", plain, plain)
    v2 = with_index_values(new, "c", plain, plain)
    assert field_versions(v1, "ssn") == ["1"] and needs_reindex(v1, "ssn", 2)
    assert not needs_reindex(v2, "ssn", 2) and not needs_reindex(v2, "tags", 2)
    mixed = {**v2, "tags__bi": [v1["tags__bi"][0], v2["tags__bi"][1]]}
    assert needs_reindex(mixed, "tags", 2)
    assert field_versions({"ssn": "1"}, "ssn") == [MISSING]
    assert field_versions({"ssn": "1", "ssn__bi": "bi1:01:AA"}, "ssn") == [INVALID]
    assert needs_reindex({"ssn": "1", "ssn__bi": "nope"}, "ssn", 2)
    assert field_versions({}, "ssn") is None and not needs_reindex({}, "ssn", 2)
    counts: dict[str, dict[str, int]] = {}
    for doc in (v1, v2, {"ssn": "1"}, {}):
        tally(counts, "c", doc, FIELDS)
    assert counts == {
        "c.ssn": {"1": 1, "2": 1, MISSING: 1},
        "c.profile.note": {"1": 1, "2": 1},
        "c.tags": {"1": 2, "2": 2},
    }


def test_an_empty_list_has_nothing_to_index() -> None:
    """A list field with no values (a note without tags) has the empty list as its index
    values: nothing counted, nothing to reindex, never ``missing``; a missing sibling of a
    (sealed) list is still ``missing``."""
    index = _index(2)
    empty = with_index_values(index, "c", {"tags": "tok"}, {"tags": []})
    assert empty["tags__bi"] == []
    assert field_versions(empty, "tags") == []
    assert not needs_reindex(empty, "tags", 2)
    counts: dict[str, dict[str, int]] = {}
    tally(counts, "c", empty, FIELDS)
    assert counts == {"c.tags": {}}
    assert field_versions({"tags": "tok"}, "tags") == [MISSING]
