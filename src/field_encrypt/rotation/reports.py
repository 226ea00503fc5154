"""The plain-data form of the rotation's reports (``as_dict``: ``--json`` and report files)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def plain(value: Any) -> Any:
    """``value`` as JSON-able data: a report by its own ``as_dict``, a tuple as a list."""
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def report_dict(
    report: Any, *, rename: Mapping[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A dataclass report's fields in their order, each :func:`plain`, keyed by field name
    (or as ``rename`` says), then ``extra`` (a key already there keeps its place)."""
    keys = rename or {}
    out = {keys.get(f.name, f.name): plain(getattr(report, f.name)) for f in fields(report)}
    out.update(extra)
    return out
