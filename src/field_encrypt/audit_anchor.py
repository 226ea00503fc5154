"""The audit trail's head, anchored outside the database.

A hash chain shows an edit, a deletion inside the trail or a reordering, but not a trail
rewritten from some event on with valid hashes, nor a tail cut off: both leave a chain that
verifies. An **anchor** records the head (the last event's position and hash) with an
HMAC-SHA256 made under a fresh 32-byte key that is wrapped by the product's key provider
(the MEK, in the key service): the database never holds it, and without the key service's
unwrap no one can check or forge the signature. The anchor is a small JSON file kept
*outside* the database (where the operator chooses: another host, object storage with
versioning, the CI run's artefacts).

:func:`check_anchor` then fails when the trail no longer holds the anchored event with the
anchored hash: a cut tail (the trail ends before the anchored position) or a rewrite (the
event at that position has another hash), as well as a broken chain or an altered anchor.

What an anchor does not prove: anything about events after it (anchor often); that the
anchor file is the newest one (an older genuine anchor still verifies: keep them where they
cannot be deleted, or deliver the trail to ``actiontrail`` too); anything against someone
who can both write the database and use the key provider's wrap (the application's own
identity): against them, only the delivered copy helps.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from field_encrypt.audit import AuditTrail
from field_encrypt.errors import AuditChainError, ConfigurationError, DecryptionError
from field_encrypt.providers.base import KeyProvider

FORMAT = "field-encrypt/audit-anchor/v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    """A signed record of a trail's head at one time."""

    product: str
    seq: int
    events: int
    head: str
    signed_at: str
    mek_name: str
    mek_version: str
    wrapped_key: bytes = field(repr=False)
    mac: str

    def to_json(self) -> dict[str, Any]:
        """The anchor file's content."""
        return {
            "format": FORMAT,
            "product": self.product,
            "seq": self.seq,
            "events": self.events,
            "head": self.head,
            "signedAt": self.signed_at,
            "mekName": self.mek_name,
            "mekVersion": self.mek_version,
            "wrappedKey": base64.b64encode(self.wrapped_key).decode(),
            "mac": self.mac,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Anchor:
        """An anchor read back; ``ConfigurationError`` if it is not one."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ConfigurationError(f"not an audit anchor (expected format {FORMAT!r})")
        try:
            return cls(
                product=str(data["product"]),
                seq=int(data["seq"]),
                events=int(data["events"]),
                head=str(data["head"]),
                signed_at=str(data["signedAt"]),
                mek_name=str(data["mekName"]),
                mek_version=str(data["mekVersion"]),
                wrapped_key=base64.b64decode(str(data["wrappedKey"]), validate=True),
                mac=str(data["mac"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"the audit anchor is malformed ({exc})") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorReport:
    """What :func:`check_anchor` found. ``ok`` only when every check held."""

    ok: bool
    anchored_seq: int
    anchored_head: str
    trail_events: int
    trail_head: str | None
    reason: str | None = None


def _context(product: str) -> bytes:
    return f"{FORMAT}/{product}".encode()


def _message(product: str, seq: int, events: int, head: str, signed_at: str) -> bytes:
    body = {"product": product, "seq": seq, "events": events, "head": head, "at": signed_at}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_anchor(
    trail: AuditTrail,
    provider: KeyProvider,
    *,
    product: str,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Anchor:
    """Verify the trail and sign its head; ``AuditChainError`` if the chain is broken or empty."""
    report = trail.verify()
    if not report.intact:
        raise AuditChainError(
            f"the audit trail of {product} is broken at event {report.first_broken_seq} "
            f"({report.reason}): it cannot be anchored"
        )
    events = trail.events()
    if not events:
        raise AuditChainError(f"the audit trail of {product} is empty: nothing to anchor")
    last = events[-1]
    signed_at = clock().isoformat()
    key = os.urandom(32)
    wrapped = provider.wrap(key, context=_context(product))
    mac = hmac.new(key, _message(product, last.seq, len(events), last.hash, signed_at), "sha256")
    return Anchor(
        product=product,
        seq=last.seq,
        events=len(events),
        head=last.hash,
        signed_at=signed_at,
        mek_name=provider.mek_name,
        mek_version=wrapped.mek_version,
        wrapped_key=wrapped.ciphertext,
        mac=mac.hexdigest(),
    )


def check_anchor(trail: AuditTrail, provider: KeyProvider, anchor: Anchor) -> AnchorReport:
    """Check the anchor's signature, then that the trail still holds the anchored head."""

    def report(reason: str | None, events: int = 0, head: str | None = None) -> AnchorReport:
        return AnchorReport(
            ok=reason is None, anchored_seq=anchor.seq, anchored_head=anchor.head,
            trail_events=events, trail_head=head, reason=reason,
        )  # fmt: skip

    try:
        key = provider.unwrap(
            anchor.wrapped_key, version=anchor.mek_version, context=_context(anchor.product)
        )
    except DecryptionError:
        return report("the anchor's key does not unwrap: the anchor file was altered")
    message = _message(anchor.product, anchor.seq, anchor.events, anchor.head, anchor.signed_at)
    expected = hmac.new(key, message, "sha256").hexdigest()
    if not hmac.compare_digest(expected, anchor.mac):
        return report("the anchor's signature does not match: the anchor file was altered")
    chain = trail.verify()
    if not chain.intact:
        return report(
            f"the chain is broken at event {chain.first_broken_seq}: {chain.reason}",
            chain.events,
        )
    events = trail.events()
    head = events[-1].hash if events else None
    at = next((e for e in events if e.seq == anchor.seq), None)
    if at is None:
        last = events[-1].seq if events else 0
        if last < anchor.seq:
            return report(
                f"the trail ends at event {last} ({len(events)} events) but the anchor records "
                f"event {anchor.seq} ({anchor.events} events): its tail was cut",
                len(events), head,
            )  # fmt: skip
        return report(
            f"the trail has no event {anchor.seq}, which the anchor records: it was rewritten",
            len(events), head,
        )  # fmt: skip
    if at.hash != anchor.head:
        return report(
            f"event {anchor.seq} has hash {at.hash[:16]}... but the anchor records "
            f"{anchor.head[:16]}...: the trail was rewritten up to it",
            len(events), head,
        )  # fmt: skip
    if sum(1 for e in events if e.seq <= anchor.seq) != anchor.events:
        return report(
            f"the trail holds a different number of events up to {anchor.seq} than the "
            f"anchor records ({anchor.events}): it was rewritten",
            len(events), head,
        )  # fmt: skip
    return report(None, len(events), head)


def write_anchor(anchor: Anchor, path: Path) -> None:
    """Write the anchor file atomically (a reader sees the old anchor or the new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(anchor.to_json(), indent=2, sort_keys=True) + "\n", "utf-8")
    os.replace(tmp, path)


def read_anchor(path: Path) -> Anchor:
    """The anchor in ``path``; ``ConfigurationError`` naming the file if it is not one."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"the audit anchor {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the audit anchor {path}: {exc}") from None
    try:
        return Anchor.from_json(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
