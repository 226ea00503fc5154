"""The compiled read path, when it is there: ``field_encrypt._gcm`` (``_gcm.c``).

It opens the field tokens (binary, or canonical text) of many documents in one call
(OpenSSL's AES-256-GCM from C), and only ever opens what the pure-Python path opens, to the
same value; at anything else it stops and the pure-Python path takes that document, with
the errors it always raised (docs/FORMAT.md, "Reading: the two read paths"). Without the
extension (no compiler or headers when the package was installed) or with
``FIELD_ENCRYPT_PURE_PYTHON=1`` when an encryptor is made, reads take the pure-Python path.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from field_encrypt._gcm import Key

PURE_PYTHON_ENV: Final = "FIELD_ENCRYPT_PURE_PYTHON"


OpenDocuments = Callable[
    [
        list[dict[str, Any]],
        list[str],
        bytes,
        tuple[tuple[str, bytes], ...],
        Callable[[bytes], "Key | None"],
        Callable[[bytes], object],
        int,
    ],
    int,
]
"""``_gcm.open_documents``: documents, their ids, prefix, fields, key_of, decode, start."""


@dataclass(frozen=True, slots=True)
class Reader:
    """The extension's two entry points (see ``_gcm.pyi``)."""

    key: Callable[[bytes], Key]
    open_documents: OpenDocuments


@functools.cache
def _load() -> Reader | None:
    """The extension, imported on first use (it loads libcrypto: no cost to a command that
    never reads a document); ``None`` when it was not built."""
    try:
        from field_encrypt import _gcm
    except ImportError:  # not built: the pure-Python path
        return None
    return Reader(key=_gcm.Key, open_documents=_gcm.open_documents)


def built() -> bool:
    """Whether the extension was built and imports."""
    return _load() is not None


def forced_off() -> bool:
    """Whether ``FIELD_ENCRYPT_PURE_PYTHON`` asks for the pure-Python path."""
    return os.environ.get(PURE_PYTHON_ENV, "").strip().lower() not in ("", "0", "false", "no")


def reader() -> Reader | None:
    """The compiled path for an encryptor made now, or ``None``: the pure-Python path."""
    return None if forced_off() else _load()
