"""The scheduled rotation's stages: what each one does, and whether it may go on.

:class:`Rotation` holds one ``rotate`` invocation's parts (runtime, ledger, lifecycle
store, policy, clock) and has one method per stage. A stage returns :class:`Next` (its
work is done: enter the next stage with these changes) or :class:`Stop` (this invocation
ends here: idle, waiting, or blocked and why). The loop that saves the state between
stages, holds the lease and honours the stop switch is :func:`~field_encrypt.rotation.
schedule.advance`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from field_encrypt.audit import MEK_VERSION_CREATED, ROTATION_STAGE
from field_encrypt.errors import ConcurrentUpdateError, LeaseHeldError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.keys import DAY, create_version, emit_mek_event, iso
from field_encrypt.rotation.ledger import RunLedger, RunRecord
from field_encrypt.rotation.lifecycle import LifecycleStore, RotationState, Stage
from field_encrypt.rotation.migrate import migrate
from field_encrypt.rotation.policy import Policy
from field_encrypt.rotation.preflight import Check, preflight
from field_encrypt.rotation.retire import HOUR, RetireReport, retire
from field_encrypt.rotation.run import MigrationOptions, RunObserver, RunReport
from field_encrypt.rotation.verify import verify

LEASE_TTL: Final = 600.0
"""Seconds one invocation holds the rotation (renewed while a rewrap runs)."""
MAX_REWRAPS_PER_CALL: Final = 2

Outcome = Literal["idle", "completed", "waiting", "halted", "blocked"]
Blocker = Literal["preflight", "verify", "rewrap-failed", "rewrap-stopped", "retire-gate"]


@dataclass(frozen=True, slots=True)
class Next:
    """A stage's work is done: enter ``stage`` with these changes to the state."""

    stage: Stage
    changes: Mapping[str, Any]
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Stop:
    """A stage cannot go on now: how this invocation ends."""

    outcome: Outcome
    summary: str
    blocked_by: Blocker | None = None
    checks: tuple[Check, ...] = ()


class Rotation:
    """One invocation's view: the parts, the policy, the clock, what it did so far."""

    def __init__(
        self,
        runtime: ProductRuntime,
        ledger: RunLedger,
        lifecycle: LifecycleStore,
        policy: Policy,
        *,
        clock: Callable[[], float],
        observer: RunObserver,
        owner: str,
        clock_override: bool,
    ) -> None:
        self.runtime = runtime
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.policy = policy
        self.clock = clock
        self.observer = observer
        self.owner = owner
        self.clock_override = clock_override
        self.product = runtime.encryptor.product
        self.rewraps = 0
        self.rewrap: RunReport | None = None
        self.retired: RetireReport | None = None

    # -- the stages ----------------------------------------------------------------------

    def idle(self, state: RotationState) -> Next | Stop:
        versions = self.runtime.provider.versions()
        current = next(v for v in versions if v.current)
        now = self.clock()
        due = current.created_at.timestamp() + self.policy.max_age_days * DAY
        age = (now - current.created_at.timestamp()) / DAY
        if now < due:
            return Stop(
                "idle",
                f"idle: current version {current.version} is {age:.1f} days old; "
                f"next rotation due {iso(due)}",
            )
        return Next(
            "preflight",
            {
                "from_version": current.version,
                "to_version": None,
                "started_at": now,
                "rewrap_run_id": None,
                "rewrapped_at": None,
            },
            {"ageDays": round(age, 2), "maxAgeDays": self.policy.max_age_days},
        )

    def preflight(self, state: RotationState) -> Next | Stop:
        checks = tuple(
            preflight(
                self.runtime,
                self.ledger,
                max_backup_age=self.policy.max_backup_age_hours * HOUR,
                clock=self.clock,
            )
        )
        failed = [c.name for c in checks if not c.ok]
        if failed:
            return Stop(
                "blocked", f"blocked at preflight: {', '.join(failed)}", "preflight", checks
            )
        return Next("create", {}, {"checks": len(checks)})

    def create(self, state: RotationState) -> Next | Stop:
        current = self.runtime.provider.current_version()
        if current != state.from_version:
            # Made by an invocation killed before it saved (or by an operator): adopt it,
            # and record its creation if nobody did.
            trail = self.runtime.audit
            subject = f"mek/{self.runtime.provider.mek_name}/{current}"
            if trail is not None and not trail.events(
                types=[MEK_VERSION_CREATED], subject=subject, limit=1
            ):
                emit_mek_event(
                    self.runtime,
                    MEK_VERSION_CREATED,
                    current,
                    previousVersion=state.from_version,
                    recordedLate=True,
                    via="rotate",
                )
            return Next("rewrap", {"to_version": current}, {"adopted": True})
        created = create_version(self.runtime, via="rotate")
        return Next("rewrap", {"to_version": created.version}, {"adopted": False})

    def rewrap_stage(self, state: RotationState) -> Next | Stop:
        self.rewraps += 1
        options = MigrationOptions(
            mode="rewrap-deks",
            new_version=state.to_version,
            batch_size=self.policy.batch_size,
            concurrency=self.policy.concurrency,
            max_rps=self.policy.max_rps,
        )
        report = migrate(
            self.runtime, self.ledger, options, clock=self.clock, observer=self.observer
        )
        self.rewrap = report
        if report.status == "stopped":
            return Stop(
                "blocked",
                f"blocked at rewrap: stopped, cursor saved (run again): {report.stop_reason}",
                "rewrap-stopped",
            )
        if report.failure_count:
            return Stop(
                "blocked",
                f"blocked at rewrap: {report.failure_count} DEK(s) failed in run "
                f"{report.run_id} (field-encrypt status names them)",
                "rewrap-failed",
            )
        assert report.run_id is not None
        run = self.ledger.get_run(report.run_id)
        return Next(
            "verify",
            {"rewrap_run_id": run.run_id, "rewrapped_at": run.finished_at or self.clock()},
            {"runId": run.run_id, **_counts(run)},
        )

    def verify_stage(self, state: RotationState) -> Next | Stop:
        assert state.to_version is not None
        report = verify(self.runtime, mek_version=state.to_version, sample=self.policy.sample)
        if report.undecryptable:
            return Stop(
                "blocked",
                f"blocked at verify: {len(report.undecryptable)} of {report.sampled} sampled "
                f"documents do not decrypt ({', '.join(report.undecryptable[:3])})",
                "verify",
            )
        if report.not_on_version:
            if self.rewraps < MAX_REWRAPS_PER_CALL:
                return Next("rewrap", {}, {"deksNotOnVersion": report.not_on_version})
            return Stop(
                "blocked",
                f"blocked at verify: {report.not_on_version} DEKs are still off version "
                f"{state.to_version} after rewrapping",
                "verify",
            )
        return Next(
            "soak",
            {},
            {
                "sampled": report.sampled,
                "missingDeks": report.missing_deks,
                "unreferencedDeks": report.unreferenced_deks,
            },
        )

    def soak(self, state: RotationState) -> Next | Stop:
        assert state.from_version is not None and state.rewrapped_at is not None
        note = self.lifecycle.note(self.product, state.from_version)
        until = state.rewrapped_at + self.policy.soak_hours * HOUR
        now = self.clock()
        if note.compromised:
            return Next("retire", {}, {"soakWaived": True})
        if now < until:
            return Stop(
                "waiting",
                f"waiting for soak: {(until - now) / HOUR:.1f} h left "
                f"(version {state.from_version} retires after {iso(until)})",
            )
        return Next("retire", {}, {"soakWaived": False, "soakHours": self.policy.soak_hours})

    def retire_stage(self, state: RotationState) -> Next | Stop:
        assert state.from_version is not None
        report = retire(
            self.runtime,
            self.ledger,
            self.lifecycle,
            state.from_version,
            soak_hours=self.policy.soak_hours,
            retention_days=self.policy.retention_days,
            sample=self.policy.sample,
            clock=self.clock,
            clock_override=self.clock_override,
            via="rotate",
        )
        self.retired = report
        if not report.retired:
            names = ", ".join(f"{c.name} ({c.detail})" for c in report.refusals)
            return Stop("blocked", f"blocked at retire: {names}", "retire-gate", report.checks)
        return Next(
            "idle",
            {
                "last_from": state.from_version,
                "last_to": state.to_version,
                "last_completed_at": self.clock(),
                "from_version": None,
                "to_version": None,
                "started_at": None,
            },
            {
                "retainUntil": iso(report.retain_until),
                "retiredVersion": state.from_version,
                "currentVersion": state.to_version,
            },
        )

    def step(self, state: RotationState) -> Next | Stop:
        stages: dict[Stage, Callable[[RotationState], Next | Stop]] = {
            "idle": self.idle,
            "preflight": self.preflight,
            "create": self.create,
            "rewrap": self.rewrap_stage,
            "verify": self.verify_stage,
            "soak": self.soak,
            "retire": self.retire_stage,
        }
        return stages[state.stage](state)

    # -- state, lease, events ----------------------------------------------------------

    def save(self, state: RotationState, **changes: Any) -> RotationState:
        now = self.clock()
        return self.lifecycle.save_state(
            dataclasses.replace(
                state, **changes, holder=self.owner, lease_expires_at=now + LEASE_TTL
            )
        )

    def apply(self, state: RotationState, **changes: Any) -> RotationState:
        """Save ``changes``; a write that lost (the stop switch, a lease renewal) is re-applied
        to the fresh state, so a stage's finished work is never done twice."""
        while True:
            try:
                return self.save(state, **changes)
            except ConcurrentUpdateError:
                state = self.lifecycle.state(self.product)
                if state.holder != self.owner:
                    raise LeaseHeldError(
                        f"the rotation of {self.product} was taken over by {state.holder}"
                    ) from None

    def emit(self, state: RotationState, **data: Any) -> None:
        emit_stage(self.runtime, state, clockOverride=self.clock_override, **data)


def emit_stage(runtime: ProductRuntime, state: RotationState, **data: Any) -> None:
    """Record the rotation's stage (``rotation.stage``), with ``data`` besides."""
    if runtime.audit is not None:
        runtime.audit.emit(
            ROTATION_STAGE,
            subject="rotation",
            data={
                "stage": state.stage,
                "fromVersion": state.from_version,
                "toVersion": state.to_version,
                **data,
            },
        )


def _counts(run: RunRecord) -> dict[str, int]:
    return {
        k: v for k, v in run.counters.as_dict().items() if k in ("matched", "changed", "failed")
    }
