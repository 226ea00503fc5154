"""Where a stored document keeps its blind-index values: a sibling field ``<field>__bi``.

An indexed field ``path`` (``"ssn"``, ``"profile.note"``) keeps its index value next to it,
in the same object, under the name ``path`` + ``"__bi"`` (``"ssn__bi"``,
``"profile": {"note__bi": ...}``) (docs/FORMAT.md, "Where index values are stored"):

* a text field: one index value, ``"bi1:<version>:<mac>"``;
* a list of texts (a note's tags): the list of its distinct index values, sorted
  (:meth:`~field_encrypt.blind_index.BlindIndex.values`);
* a field with no value (missing, ``None``, not text): no sibling; an empty list's
  sibling is the empty list (nothing to count, nothing to re-index).

The sibling is written by the application in the same write as the field (compute it from
the plaintext with :func:`with_index_values`) and rewritten by ``migrate --mode reindex``
when it is missing or on an older index-key version. A product whose documents are its
own tables (NoteLett) may keep index values elsewhere; this layout is what the generic
document stores and the rotation tools use.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from field_encrypt.blind_index import BlindIndex, IndexedField, index_key_version_of
from field_encrypt.errors import ConfigurationError, UnsupportedFormatError

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime

__all__ = [
    "INVALID",
    "MISSING",
    "SUFFIX",
    "field_versions",
    "indexed_collections",
    "needs_reindex",
    "sibling",
    "tally",
    "with_index_values",
]

SUFFIX: Final = "__bi"
MISSING: Final = "missing"
"""A count key: the field has a value but no index value."""
INVALID: Final = "invalid"
"""A count key: the stored index value is not one (a reindex recomputes it)."""


def sibling(path: str) -> str:
    """The path of the index value of field ``path``."""
    return path + SUFFIX


def with_index_values(
    index: BlindIndex, collection: str, stored: Mapping[str, Any], plaintext: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of ``stored`` with the index value of each indexed field of ``collection``
    computed from ``plaintext`` (the same document, decrypted) under the current version."""
    out = copy.deepcopy(dict(stored))
    for (name, path), _spec in index.fields.items():
        if name != collection:
            continue
        value = _get(plaintext, path)
        computed: str | list[str] | None = None
        if isinstance(value, str):
            computed = index.value(name, path, value)
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            computed = list(index.values(name, path, value))
        _set(out, sibling(path), computed)
    return out


def field_versions(fields: Mapping[str, Any], path: str) -> list[str] | None:
    """What the field's stored index value is on: each value's version (as text),
    ``[MISSING]`` or ``[INVALID]``; ``None`` when the field has no value to index, ``[]``
    when its sibling is an empty list (a list field with no values)."""
    if _get(fields, path) is None:
        return None
    stored = _get(fields, sibling(path))
    if stored is None:
        return [MISSING]
    values = stored if isinstance(stored, list) else [stored]
    if not values:
        return []  # a list field with no values (a note without tags): nothing indexed
    out = []
    for value in values:
        try:
            out.append(str(index_key_version_of(value)))
        except UnsupportedFormatError:
            out.append(INVALID)
    return out


def needs_reindex(fields: Mapping[str, Any], path: str, version: int) -> bool:
    """Whether the field has a value whose index value is missing, invalid or not on
    ``version``."""
    found = field_versions(fields, path)
    return found is not None and any(v != str(version) for v in found)


def tally(
    counts: dict[str, dict[str, int]],
    collection: str,
    fields: Mapping[str, Any],
    indexed: Iterable[IndexedField],
) -> None:
    """Add one document's index values to ``counts``: ``"collection.path"`` -> what it is
    on (a version, :data:`MISSING`, :data:`INVALID`) -> how many values."""
    for spec in indexed:
        if spec.collection != collection:
            continue
        found = field_versions(fields, spec.path)
        if found is None:
            continue
        per = counts.setdefault(f"{collection}.{spec.path}", {})
        for version in found:
            per[version] = per.get(version, 0) + 1


def _get(fields: Mapping[str, Any], path: str) -> Any:
    node: Any = fields
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _set(fields: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = fields
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is None:
                return
            child = node[part] = {}
        node = child
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


def indexed_collections(runtime: ProductRuntime) -> dict[str, list[IndexedField]]:
    """The product's indexed fields per collection; a field of an unknown collection, or
    not encrypted, is a :class:`ConfigurationError`."""
    by_collection: dict[str, list[IndexedField]] = {}
    for spec in runtime.indexed:
        paths = runtime.encryptor.collections.get(spec.collection)
        if spec.collection not in runtime.documents or paths is None:
            raise ConfigurationError(
                f"indexed field {spec.collection}.{spec.path}: the product has no encrypted "
                f"collection {spec.collection!r}"
            )
        if spec.path not in paths:
            raise ConfigurationError(
                f"indexed field {spec.collection}.{spec.path} is not an encrypted field"
            )
        by_collection.setdefault(spec.collection, []).append(spec)
    return by_collection
