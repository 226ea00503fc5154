"""The plain-data form of the rotation's reports: the keys and their order a `--json`
reader sees, nested reports as their own dicts."""

from __future__ import annotations

from field_encrypt.rotation.compromise import CompromiseReport
from field_encrypt.rotation.preflight import Check
from field_encrypt.rotation.reports import plain, report_dict
from field_encrypt.rotation.retire import RetireReport
from field_encrypt.rotation.schedule import Advance


def test_a_compromise_report_keeps_its_keys_and_renames_reencrypt() -> None:
    """CompromiseReport.as_dict: fields in order, ``re_encrypt`` for ``reencrypt``, the
    retire report as its own dict, ``stopped_at`` last."""
    retire = RetireReport(product="p", version="1", retired=True)
    report = CompromiseReport(
        product="p", version="1", dek_exposed=False, recorded_now=True,
        created_version="2", current_version="2", retire=retire,
    )  # fmt: skip
    data = report.as_dict()
    assert list(data) == [
        "product", "version", "dek_exposed", "recorded_now", "created_version",
        "current_version", "rewrap", "re_encrypt", "retire", "stopped_at",
    ]  # fmt: skip
    assert data["retire"] == retire.as_dict()
    assert (data["rewrap"], data["re_encrypt"], data["stopped_at"]) == (None, None, None)


def test_an_advance_lists_its_stages_and_checks() -> None:
    """Advance.as_dict: tuples become lists, checks their dicts, ``state`` stays last."""
    check = Check(name="backup", ok=False, detail="none")
    advance = Advance(
        product="p", outcome="blocked", stage="preflight", summary="blocked",
        entered=("preflight",), blocked_by="preflight", checks=(check,),
    )  # fmt: skip
    data = advance.as_dict()
    assert list(data) == [
        "product", "outcome", "stage", "summary", "entered", "blocked_by", "checks",
        "rewrap", "retire", "state",
    ]  # fmt: skip
    assert data["entered"] == ["preflight"]
    assert data["checks"] == [{"check": "backup", "ok": False, "detail": "none"}]
    assert data["state"] is None


def test_report_dict_replaces_a_field_in_place() -> None:
    """An extra value for a field's key replaces the field's value where it stands."""
    check = Check(name="n", ok=True, detail="d")
    assert list(report_dict(check, ok="yes")) == ["name", "ok", "detail"]
    assert report_dict(check, ok="yes")["ok"] == "yes"
    assert plain((check,)) == [check.as_dict()]
