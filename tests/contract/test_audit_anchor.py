"""The anchored head catches what a valid chain cannot: a consistent rewrite and a cut tail.

On every store, through the store's own raw client (someone with write access to the
database, but not to the key service).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from field_encrypt import audit
from field_encrypt.audit_anchor import Anchor, check_anchor, read_anchor, sign_anchor, write_anchor
from field_encrypt.errors import AuditChainError, ConfigurationError
from field_encrypt.providers.local import LocalKeyProvider
from tests.contract.test_audit_trail import PRODUCT, TrailHarness, harness

__all__ = ["harness"]


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    found = LocalKeyProvider(tmp_path / "ring.json", mek_name="audit-test", refresh_seconds=0)
    if not found.versions():
        found.create_version()
    return found


def _fill(trail: audit.AuditTrail, n: int) -> None:
    for i in range(n):
        trail.emit(audit.MEK_VERSION_CREATED, subject=f"mek/v{i}", data={"version": str(i)})


def _rewrite_from(harness: TrailHarness, trail: audit.AuditTrail, seq: int) -> None:
    """Rewrite events ``seq``.. with a changed ``data`` and re-chained, valid hashes."""
    events = trail.events()
    previous = next((e.hash for e in events if e.seq == seq - 1), audit.GENESIS)
    for event in (e for e in events if e.seq >= seq):
        body = event.cloudevent()
        body["data"] = {**body["data"], "version": "forged"}
        body["prevhash"] = previous
        body["hash"] = audit.event_hash(body)
        harness.raw.write(event.seq, audit.stored_text(body), body["hash"])
        previous = body["hash"]


def test_an_untouched_trail_holds_its_anchor(
    harness: TrailHarness, provider: LocalKeyProvider
) -> None:
    """Signed, then more events appended: the anchor still holds (the trail only grew)."""
    trail = harness.open()
    _fill(trail, 4)
    anchor = sign_anchor(trail, provider, product=PRODUCT)
    _fill(trail, 2)
    report = check_anchor(trail, provider, anchor)
    assert report.ok, report.reason
    assert (report.anchored_seq, report.trail_events) == (trail.events()[3].seq, 6)


def test_a_consistent_rewrite_verifies_but_fails_the_anchor(
    harness: TrailHarness, provider: LocalKeyProvider
) -> None:
    """Events 3.. rewritten with valid hashes: verify() says intact, the anchor says rewritten."""
    trail = harness.open()
    _fill(trail, 5)
    anchor = sign_anchor(trail, provider, product=PRODUCT)
    _rewrite_from(harness, trail, trail.events()[2].seq)
    assert trail.verify().intact
    report = check_anchor(trail, provider, anchor)
    assert not report.ok
    assert report.reason is not None and "rewritten" in report.reason


def test_a_cut_tail_verifies_but_fails_the_anchor(
    harness: TrailHarness, provider: LocalKeyProvider
) -> None:
    """The newest two events deleted (on Cosmos DB the head item moved back too, as a careful
    intruder would): the chain still verifies, the anchor names the cut."""
    trail = harness.open()
    _fill(trail, 5)
    anchor = sign_anchor(trail, provider, product=PRODUCT)
    for event in trail.events()[-2:]:
        harness.raw.delete(event.seq)
    if harness.kind == "cosmos":
        container = harness.raw.container  # type: ignore[attr-defined]
        head = container.read_item("head", partition_key=PRODUCT)
        kept = trail.events()[-1]
        container.upsert_item({**head, "seq": kept.seq, "hash": kept.hash})
    assert trail.verify().intact
    report = check_anchor(trail, provider, anchor)
    assert not report.ok
    assert report.reason is not None and "tail was cut" in report.reason


def test_an_altered_anchor_file_is_rejected(
    harness: TrailHarness, provider: LocalKeyProvider, tmp_path: Path
) -> None:
    """Moving the anchored head back (to hide a cut) breaks the anchor's signature."""
    trail = harness.open()
    _fill(trail, 3)
    path = tmp_path / "anchor.json"
    write_anchor(sign_anchor(trail, provider, product=PRODUCT), path)
    data = json.loads(path.read_text())
    first = trail.events()[0]
    data.update(seq=first.seq, events=1, head=first.hash)
    path.write_text(json.dumps(data))
    report = check_anchor(trail, provider, read_anchor(path))
    assert not report.ok and report.reason is not None and "altered" in report.reason


def test_a_broken_or_empty_chain_is_not_anchored(
    harness: TrailHarness, provider: LocalKeyProvider
) -> None:
    """Signing refuses a trail that does not verify, and one with nothing in it."""
    trail = harness.open()
    with pytest.raises(AuditChainError, match="empty"):
        sign_anchor(trail, provider, product=PRODUCT)
    _fill(trail, 3)
    seq = trail.events()[1].seq
    text, hash = harness.raw.read(seq)
    harness.raw.write(seq, text.replace('"1"', '"9"'), hash)
    with pytest.raises(AuditChainError, match="broken"):
        sign_anchor(trail, provider, product=PRODUCT)


def test_the_anchor_holds_no_key_material(provider: LocalKeyProvider, tmp_path: Path) -> None:
    """Only the wrapped key is stored (useless without the key service), and not in the repr."""
    anchor = Anchor(
        product="p", seq=1, events=1, head="0" * 64, signed_at=dt.datetime.now(dt.UTC).isoformat(),
        mek_name="m", mek_version="1", wrapped_key=b"\x01" * 40, mac="00",
    )  # fmt: skip
    assert "wrapped_key" not in repr(anchor)
    with pytest.raises(ConfigurationError, match="not an audit anchor"):
        Anchor.from_json({"format": "other"})
