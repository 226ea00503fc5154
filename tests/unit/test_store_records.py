"""The stores' fast record builder gives exactly what the dataclass' constructor gives."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from field_encrypt.backends.base import DekRecord, dek_record_of_row

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def test_dek_record_of_row_equals_the_constructor() -> None:
    """Same fields, equal, same repr (no wrap in it), and still immutable."""
    built = dek_record_of_row("d1", "p", "mek", "2", b"wrap", "A256GCM", NOW, NOW, "3", 7)
    expected = DekRecord(
        dek_id="d1", product="p", mek_name="mek", mek_version="2", wrapped=b"wrap",
        algorithm="A256GCM", created_at=NOW, updated_at=NOW, revision="3", row=7,
    )  # fmt: skip
    assert built == expected and repr(built) == repr(expected)
    assert dataclasses.astuple(built) == dataclasses.astuple(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.mek_version = "9"  # type: ignore[misc]
