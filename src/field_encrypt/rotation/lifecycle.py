"""What field-encrypt remembers about MEK versions and the scheduled rotation, per product.

Two records, kept in the product's database next to the run ledger:

* :class:`VersionNote`: what the key provider does not say about a version: when it was
  disabled or retired, the **retention deadline** before which it may not be deleted, and
  whether (and when) it was declared compromised.
* :class:`RotationState`: where the scheduled rotation (``field-encrypt rotate``) stands:
  its stage, the versions it moves between, when the rewrap completed (the soak starts
  then), the stop switch, and a short lease so two invocations never advance it at once.

:class:`LifecycleStore` is the protocol a store implements (SQLite here). Writes of the
rotation state are compare-and-swap on its ``revision``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Stage = Literal["idle", "preflight", "create", "rewrap", "verify", "soak", "retire"]
STAGES: tuple[Stage, ...] = ("idle", "preflight", "create", "rewrap", "verify", "soak", "retire")


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionNote:
    """One MEK version's lifecycle beyond the provider's enabled flag (times: epoch seconds)."""

    version: str
    disabled_at: float | None = None
    retired_at: float | None = None
    """When the retirement gate passed and the version was disabled."""
    retain_until: float | None = None
    """The version may not be deleted before this (nothing in field-encrypt deletes one)."""
    compromised_at: float | None = None
    dek_exposed: bool = False
    """The DEKs it wrapped may be exposed too (``keys compromised --dek-exposed``)."""
    exposed_before: float | None = None
    """With ``dek_exposed``: DEKs created before this may have been wrapped under it."""

    @property
    def compromised(self) -> bool:
        return self.compromised_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationState:
    """Where the scheduled rotation of one product stands (times: epoch seconds)."""

    product: str
    stage: Stage = "idle"
    from_version: str | None = None
    """The version being rotated away from (retired at the end)."""
    to_version: str | None = None
    """The version created by this rotation."""
    started_at: float | None = None
    stage_at: float | None = None
    """When the current stage was entered."""
    rewrap_run_id: str | None = None
    rewrapped_at: float | None = None
    """When the rewrap run completed: the soak is counted from here."""
    halted: bool = False
    """The stop switch (``rotate --stop``): nothing advances until ``rotate --resume``."""
    halted_at: float | None = None
    blocked: str | None = None
    """Why the last invocation could not advance (``None`` when it could)."""
    last_from: str | None = None
    last_to: str | None = None
    last_completed_at: float | None = None
    holder: str | None = None
    lease_expires_at: float | None = None
    revision: int = 0

    def leased(self, now: float) -> bool:
        """Whether an invocation holds the rotation's lease now."""
        return self.holder is not None and (self.lease_expires_at or 0.0) > now


@runtime_checkable
class LifecycleStore(Protocol):
    """Where version notes and the rotation state are kept, per product."""

    def notes(self, product: str) -> dict[str, VersionNote]:
        """Every version's note, by version."""
        ...

    def note(self, product: str, version: str) -> VersionNote:
        """One version's note (an empty note when none was written)."""
        ...

    def save_note(self, product: str, note: VersionNote) -> None:
        """Write a version's note (insert or replace)."""
        ...

    def state(self, product: str) -> RotationState:
        """The rotation state (``idle`` at revision 0 when none was written)."""
        ...

    def save_state(self, state: RotationState) -> RotationState:
        """Write ``state`` if the stored revision is still ``state.revision``; the new state.

        :class:`~field_encrypt.errors.ConcurrentUpdateError` when someone wrote meanwhile.
        """
        ...
