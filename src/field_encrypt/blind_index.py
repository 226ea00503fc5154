"""Blind indexes: equality lookups on encrypted fields without decrypting them.

A field's index value is a keyed PRF of its normalised plaintext, stored next to the
field's token (which stays randomised AES-GCM). Equal plaintexts give equal index values,
so a database can find "every note tagged ``x``" by an ordinary indexed equality query on
the index column, and nothing else: the index key never leaves this process.

The computation, specified in docs/FORMAT.md ("Blind index values") and pinned by
known-answer vectors (tests/vectors/blind_index/)::

    root_key   = 32 random bytes per index-key version, wrapped by the MEK like a DEK
                 (:class:`~field_encrypt.index_keys.IndexKeyring`); never derived from a DEK
    index_key  = HKDF-SHA256(ikm=root_key, salt=none, length=32,
                             info="field-encrypt/blind-index/v1" 00 lp(product)
                                  lp(collection) lp(field) u32be(version))
    message    = 01 || UTF-8(normalise(value))
    mac        = HMAC-SHA256(index_key, message), truncated to ``bits`` (default 256)
    value      = "bi1:" version ":" base64url(mac, no padding)

``normalise`` is Unicode NFC, then ``casefold`` and NFC again when the field asks for it,
then stripping leading and trailing whitespace. Truncation keeps the first ``bits`` bits
(the last byte's unused low bits are zero): fewer bits means more plaintexts share a
value, which leaks less and costs false positives that the caller removes after
decrypting (see docs/queryable.md for the figures).

What this leaks, stated plainly: within one (product, collection, field), anyone who can
read the index column learns which documents have equal values and how often each value
occurs (frequency), never the values themselves. Different fields, collections, products
and index-key versions give unrelated index values.

This module is pure: it takes root keys as arguments and does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from field_encrypt import token
from field_encrypt.errors import ConfigurationError, UnsupportedFormatError

__all__ = [
    "MAX_VERSION",
    "PREFIX",
    "BlindIndex",
    "IndexedField",
    "check_version",
    "compute",
    "derive_index_key",
    "format_value",
    "index_key_version_of",
    "normalise",
    "parse_value",
    "truncate",
]

PREFIX = "bi1:"
"""What every index value starts with: the format marker (format version 1)."""
INFO_LABEL = b"field-encrypt/blind-index/v1\x00"
"""The first bytes of the HKDF ``info``: the domain of index keys, format version 1."""
_TYPE_STR = b"\x01"  # the message's type byte: a text value (room for other types later)
MAX_VERSION = 0xFFFFFFFF
"""The highest index-key version (it is a u32 in the HKDF ``info``)."""
_VALUE = re.compile(r"bi1:([1-9][0-9]{0,9}):([A-Za-z0-9_-]{2,43})")


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexedField:
    """How one field of one collection is indexed.

    ``casefold`` makes the lookup case-insensitive (Unicode case folding, not just ASCII).
    ``bits`` truncates the index value (1..256; 256, the default, keeps the whole HMAC).
    Changing either changes every index value of the field: that is a re-index.
    """

    collection: str
    path: str
    casefold: bool = False
    bits: int = 256

    def __post_init__(self) -> None:
        if not self.collection or not self.path:
            raise ConfigurationError("an indexed field needs a collection and a field path")
        if (
            not isinstance(self.bits, int)
            or isinstance(self.bits, bool)
            or not 1 <= self.bits <= 256
        ):
            raise ConfigurationError(
                f"bits of the blind index on {self.collection}.{self.path} must be an "
                f"integer from 1 to 256, not {self.bits!r}"
            )


def normalise(value: str, *, casefold: bool = False) -> str:
    """The form of ``value`` that is indexed: NFC, optionally case-folded, stripped."""
    if not isinstance(value, str):
        raise TypeError(f"a blind index covers text values, not {type(value).__name__}")
    text = unicodedata.normalize("NFC", value)
    if casefold:
        text = unicodedata.normalize("NFC", text.casefold())
    return text.strip()


def derive_index_key(
    root_key: bytes, *, product: str, collection: str, path: str, version: int
) -> bytes:
    """The 32-byte HMAC key of one field under one index-key version (HKDF-SHA256)."""
    check_version(version)
    if len(root_key) != 32:
        raise ConfigurationError("an index root key is 32 bytes")
    info = (
        INFO_LABEL
        + token.lp(product)
        + token.lp(collection)
        + token.lp(path)
        + version.to_bytes(4, "big")
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root_key)


def compute(index_key: bytes, normalised: str, *, bits: int = 256) -> bytes:
    """HMAC-SHA256 of the normalised value under ``index_key``, truncated to ``bits``."""
    mac = hmac.HMAC(index_key, hashes.SHA256())
    mac.update(_TYPE_STR + normalised.encode())
    return truncate(mac.finalize(), bits)


def truncate(mac: bytes, bits: int) -> bytes:
    """The first ``bits`` bits of ``mac``; the last byte's unused low bits are zero."""
    whole, rest = divmod(bits, 8)
    if not rest:
        return mac[:whole]
    return mac[:whole] + bytes((mac[whole] & (0xFF << (8 - rest)) & 0xFF,))


def format_value(version: int, mac: bytes) -> str:
    """``bi1:<version>:<base64url of mac, no padding>``."""
    check_version(version)
    return f"{PREFIX}{version}:{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def parse_value(value: str) -> tuple[int, bytes]:
    """The index-key version and the MAC bytes of an index value.

    Anything that is not exactly a version-1 index value (a leading zero, padding,
    a character outside base64url, a version above 2**32 - 1) is an
    :class:`~field_encrypt.errors.UnsupportedFormatError`.
    """
    match = _VALUE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise UnsupportedFormatError("not a blind index value")
    version = int(match[1])
    if version > MAX_VERSION:
        raise UnsupportedFormatError("not a blind index value")
    text = match[2]
    try:
        mac = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise UnsupportedFormatError("not a blind index value") from None
    if format_value(version, mac) != value:  # a non-canonical encoding (stray low bits)
        raise UnsupportedFormatError("not a blind index value")
    return version, mac


def index_key_version_of(value: str) -> int:
    """The index-key version a stored index value was computed under."""
    return parse_value(value)[0]


class BlindIndex:
    """Index values for the indexed fields of one product.

    ``root_keys`` maps each index-key version in use to its 32-byte root key (from
    :meth:`~field_encrypt.index_keys.IndexKeyring.root_keys`); ``version`` is the one new
    values are computed under. During a re-index several versions are present and
    :meth:`lookup_values` gives one value per version, current first, so a query that
    matches any of them finds documents on both sides of the migration.
    Derived keys are computed once per field and version and kept only in memory.
    """

    def __init__(
        self,
        *,
        product: str,
        fields: Iterable[IndexedField],
        root_keys: Mapping[int, bytes],
        version: int,
    ) -> None:
        if not product:
            raise ConfigurationError("a product name is required")
        self.product = product
        self.fields: dict[tuple[str, str], IndexedField] = {}
        for f in fields:
            if (f.collection, f.path) in self.fields:
                raise ConfigurationError(f"{f.collection}.{f.path} is indexed twice")
            self.fields[(f.collection, f.path)] = f
        if version not in root_keys:
            raise ConfigurationError(f"no root key for the current index-key version {version}")
        for v, key in root_keys.items():
            check_version(v)
            if len(key) != 32:
                raise ConfigurationError(f"the root key of index-key version {v} is not 32 bytes")
        self.version = version
        self.versions = (version, *sorted((v for v in root_keys if v != version), reverse=True))
        self._keys = _Keys(
            {
                (f.collection, f.path, v): derive_index_key(
                    root_keys[v],
                    product=product,
                    collection=f.collection,
                    path=f.path,
                    version=v,
                )
                for f in self.fields.values()
                for v in self.versions
            }
        )

    def __repr__(self) -> str:
        return (
            f"BlindIndex(product={self.product!r}, fields={len(self.fields)}, "
            f"version={self.version}, versions={list(self.versions)})"
        )

    def value(self, collection: str, path: str, value: str) -> str:
        """The index value of ``value`` under the current index-key version (for a write)."""
        return self._value(self._field(collection, path), self.version, value)

    def lookup_values(self, collection: str, path: str, value: str) -> tuple[str, ...]:
        """The index values ``value`` may be stored under: one per version, current first."""
        spec = self._field(collection, path)
        return tuple(self._value(spec, v, value) for v in self.versions)

    def values(self, collection: str, path: str, values: Iterable[str]) -> tuple[str, ...]:
        """The sorted, distinct index values of a multi-valued field (a note's tags)."""
        spec = self._field(collection, path)
        return tuple(sorted({self._value(spec, self.version, v) for v in values}))

    def same(self, collection: str, path: str, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are equal once normalised as the field normalises them.

        What a caller checks on each decrypted candidate of a lookup on a truncated index,
        to drop the false positives.
        """
        spec = self._field(collection, path)
        return normalise(a, casefold=spec.casefold) == normalise(b, casefold=spec.casefold)

    def is_current(self, index_value: str) -> bool:
        """Whether a stored index value is on the current index-key version."""
        return index_key_version_of(index_value) == self.version

    def _value(self, spec: IndexedField, version: int, value: str) -> str:
        key = self._keys.of[(spec.collection, spec.path, version)]
        mac = compute(key, normalise(value, casefold=spec.casefold), bits=spec.bits)
        return format_value(version, mac)

    def _field(self, collection: str, path: str) -> IndexedField:
        try:
            return self.fields[(collection, path)]
        except KeyError:
            raise ConfigurationError(f"{collection}.{path} has no blind index configured") from None


@dataclass(frozen=True, slots=True)
class _Keys:
    """The derived keys, kept out of every repr."""

    of: dict[tuple[str, str, int], bytes] = field(repr=False)


def check_version(version: int) -> None:
    """Refuse anything but an index-key version: an integer from 1 to 2**32 - 1."""
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_VERSION:
        raise ConfigurationError(
            f"an index-key version is an integer from 1 to {MAX_VERSION}, not {version!r}"
        )
