"""Scheduled rotation: the runbook as a resumable state machine, one step at a time.

``field-encrypt rotate`` calls :func:`advance`, which moves the product's rotation state
(:class:`~field_encrypt.rotation.lifecycle.RotationState`, in its database) as far as it
safely can, then returns. A scheduler calls it again and again::

    idle ──due──▶ preflight ──▶ create ──▶ rewrap ──▶ verify ──▶ soak ──▶ retire ──▶ idle
                    │ fails       (new       (resumable  (DEKs off   (waits)  (the
                    ▼             version)   run)        target:             retirement
                  blocked                                rewrap again)       gate)

Each stage is entered by saving the state (compare-and-swap) and then recording a
``rotation.stage`` event; only then does the stage's work start, and every stage's work
is idempotent (``create`` adopts a version an interrupted invocation already made;
``rewrap`` resumes its run from the ledger), so a ``kill -9`` anywhere is recovered by
calling it again. One invocation at a time holds the rotation's lease. The stop switch
(``rotate --stop`` or ``stop = true`` in the policy) halts advancing at the next stage
boundary, without interrupting a stage.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from field_encrypt.audit import MEK_VERSION_CREATED, ROTATION_STAGE
from field_encrypt.errors import ConcurrentUpdateError, LeaseHeldError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.keys import DAY, create_version, emit_mek_event, iso
from field_encrypt.rotation.lease import worker_id
from field_encrypt.rotation.ledger import Counters, RunLedger, RunRecord
from field_encrypt.rotation.lifecycle import LifecycleStore, RotationState, Stage
from field_encrypt.rotation.migrate import migrate
from field_encrypt.rotation.policy import Policy
from field_encrypt.rotation.preflight import Check, preflight
from field_encrypt.rotation.retire import HOUR, RetireReport, retire
from field_encrypt.rotation.run import MigrationOptions, NullObserver, RunObserver, RunReport
from field_encrypt.rotation.verify import verify

LEASE_TTL: Final = 600.0
MAX_REWRAPS_PER_CALL: Final = 2

Outcome = Literal["idle", "completed", "waiting", "halted", "blocked"]
Blocker = Literal["preflight", "verify", "rewrap-failed", "rewrap-stopped", "retire-gate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Advance:
    """What one :func:`advance` did, and where the rotation stands now."""

    product: str
    outcome: Outcome
    stage: Stage
    summary: str
    """The one line a scheduler's log shows."""
    entered: tuple[Stage, ...] = ()
    blocked_by: Blocker | None = None
    checks: tuple[Check, ...] = ()
    rewrap: RunReport | None = None
    retire: RetireReport | None = None
    state: RotationState | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "outcome": self.outcome,
            "stage": self.stage,
            "summary": self.summary,
            "entered": list(self.entered),
            "blocked_by": self.blocked_by,
            "checks": [c.as_dict() for c in self.checks],
            "rewrap": None if self.rewrap is None else self.rewrap.as_dict(),
            "retire": None if self.retire is None else self.retire.as_dict(),
            "state": None if self.state is None else state_dict(self.state),
        }


@dataclass(frozen=True, slots=True)
class _Next:
    """A stage's work is done: enter ``stage`` with these changes to the state."""

    stage: Stage
    changes: Mapping[str, Any]
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Stop:
    """A stage cannot go on now: how this invocation ends."""

    outcome: Outcome
    summary: str
    blocked_by: Blocker | None = None
    checks: tuple[Check, ...] = ()


class _Rotation:
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

    def idle(self, state: RotationState) -> _Next | _Stop:
        versions = self.runtime.provider.versions()
        current = next(v for v in versions if v.current)
        now = self.clock()
        due = current.created_at.timestamp() + self.policy.max_age_days * DAY
        age = (now - current.created_at.timestamp()) / DAY
        if now < due:
            return _Stop(
                "idle",
                f"idle: current version {current.version} is {age:.1f} days old; "
                f"next rotation due {iso(due)}",
            )
        return _Next(
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

    def preflight(self, state: RotationState) -> _Next | _Stop:
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
            return _Stop(
                "blocked", f"blocked at preflight: {', '.join(failed)}", "preflight", checks
            )
        return _Next("create", {}, {"checks": len(checks)})

    def create(self, state: RotationState) -> _Next | _Stop:
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
            return _Next("rewrap", {"to_version": current}, {"adopted": True})
        created = create_version(self.runtime, via="rotate")
        return _Next("rewrap", {"to_version": created.version}, {"adopted": False})

    def rewrap_stage(self, state: RotationState) -> _Next | _Stop:
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
            return _Stop(
                "blocked",
                f"blocked at rewrap: stopped, cursor saved (run again): {report.stop_reason}",
                "rewrap-stopped",
            )
        if report.failure_count:
            return _Stop(
                "blocked",
                f"blocked at rewrap: {report.failure_count} DEK(s) failed in run "
                f"{report.run_id} (field-encrypt status names them)",
                "rewrap-failed",
            )
        assert report.run_id is not None
        run = self.ledger.get_run(report.run_id)
        return _Next(
            "verify",
            {"rewrap_run_id": run.run_id, "rewrapped_at": run.finished_at or self.clock()},
            {"runId": run.run_id, **_counts(run)},
        )

    def verify_stage(self, state: RotationState) -> _Next | _Stop:
        assert state.to_version is not None
        report = verify(self.runtime, mek_version=state.to_version, sample=self.policy.sample)
        if report.undecryptable:
            return _Stop(
                "blocked",
                f"blocked at verify: {len(report.undecryptable)} of {report.sampled} sampled "
                f"documents do not decrypt ({', '.join(report.undecryptable[:3])})",
                "verify",
            )
        if report.not_on_version:
            if self.rewraps < MAX_REWRAPS_PER_CALL:
                return _Next("rewrap", {}, {"deksNotOnVersion": report.not_on_version})
            return _Stop(
                "blocked",
                f"blocked at verify: {report.not_on_version} DEKs are still off version "
                f"{state.to_version} after rewrapping",
                "verify",
            )
        return _Next(
            "soak",
            {},
            {
                "sampled": report.sampled,
                "missingDeks": report.missing_deks,
                "unreferencedDeks": report.unreferenced_deks,
            },
        )

    def soak(self, state: RotationState) -> _Next | _Stop:
        assert state.from_version is not None and state.rewrapped_at is not None
        note = self.lifecycle.note(self.product, state.from_version)
        until = state.rewrapped_at + self.policy.soak_hours * HOUR
        now = self.clock()
        if note.compromised:
            return _Next("retire", {}, {"soakWaived": True})
        if now < until:
            return _Stop(
                "waiting",
                f"waiting for soak: {(until - now) / HOUR:.1f} h left "
                f"(version {state.from_version} retires after {iso(until)})",
            )
        return _Next("retire", {}, {"soakWaived": False, "soakHours": self.policy.soak_hours})

    def retire_stage(self, state: RotationState) -> _Next | _Stop:
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
            return _Stop("blocked", f"blocked at retire: {names}", "retire-gate", report.checks)
        return _Next(
            "idle",
            {
                "last_from": state.from_version,
                "last_to": state.to_version,
                "last_completed_at": self.clock(),
                "from_version": None,
                "to_version": None,
                "started_at": None,
            },
            {"retainUntil": iso(report.retain_until)},
        )

    def step(self, state: RotationState) -> _Next | _Stop:
        stages: dict[Stage, Callable[[RotationState], _Next | _Stop]] = {
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
        if self.runtime.audit is not None:
            self.runtime.audit.emit(
                ROTATION_STAGE,
                subject="rotation",
                data={
                    "stage": state.stage,
                    "fromVersion": state.from_version,
                    "toVersion": state.to_version,
                    "clockOverride": self.clock_override,
                    **data,
                },
            )


def advance(
    runtime: ProductRuntime,
    ledger: RunLedger,
    lifecycle: LifecycleStore,
    policy: Policy,
    *,
    clock: Callable[[], float] = time.time,
    observer: RunObserver | None = None,
    owner: str | None = None,
    clock_override: bool = False,
) -> Advance:
    """Advance the product's rotation as far as it safely can; what happened."""
    product = runtime.encryptor.product
    rotation = _Rotation(
        runtime,
        ledger,
        lifecycle,
        policy,
        clock=clock,
        observer=observer or NullObserver(),
        owner=owner or worker_id(),
        clock_override=clock_override,
    )
    state = lifecycle.state(product)
    if policy.stop or state.halted:
        return _halted(product, state, by_policy=policy.stop)
    if state.leased(clock()) and state.holder != rotation.owner:
        raise LeaseHeldError(
            f"another rotate invocation ({state.holder}) is advancing {product}'s rotation "
            f"until {iso(state.lease_expires_at)}; if it died, run again after that"
        )
    entered: list[Stage] = []
    rotation.observer = _LeaseKeeper(rotation.observer, rotation)
    try:
        try:
            state = rotation.save(state)
        except ConcurrentUpdateError:
            raise LeaseHeldError(
                f"another rotate invocation took {product}'s rotation just now"
            ) from None
        while True:
            if state.halted:
                return _halted(product, state, by_policy=False, entered=entered)
            result = rotation.step(state)
            if isinstance(result, _Stop):
                if result.outcome == "blocked" and state.blocked != result.summary:
                    state = rotation.apply(state, blocked=result.summary)
                    rotation.emit(state, blocked=result.summary)
                elif result.outcome != "blocked" and state.blocked is not None:
                    state = rotation.apply(state, blocked=None)
                return Advance(
                    product=product,
                    outcome=result.outcome,
                    stage=state.stage,
                    summary=result.summary,
                    entered=tuple(entered),
                    blocked_by=result.blocked_by,
                    checks=result.checks,
                    rewrap=rotation.rewrap,
                    retire=rotation.retired,
                    state=state,
                )
            previous = state.stage
            state = rotation.apply(
                state, stage=result.stage, stage_at=clock(), blocked=None, **result.changes
            )
            entered.append(state.stage)
            rotation.emit(state, previous=previous, **result.event)
            if previous == "retire":
                retained = rotation.retired.retain_until if rotation.retired else None
                return Advance(
                    product=product,
                    outcome="completed",
                    stage=state.stage,
                    summary=f"rotation {state.last_from}→{state.last_to} complete: version "
                    f"{state.last_from} retired, kept (disabled) until {iso(retained)}",
                    entered=tuple(entered),
                    rewrap=rotation.rewrap,
                    retire=rotation.retired,
                    state=state,
                )
    finally:
        _release(lifecycle, product, rotation.owner)


def set_halted(
    runtime: ProductRuntime,
    lifecycle: LifecycleStore,
    halted: bool,
    *,
    clock: Callable[[], float] = time.time,
) -> RotationState:
    """Flip the stop switch (``rotate --stop`` / ``--resume``), recorded as a stage event."""
    product = runtime.encryptor.product
    while True:
        state = lifecycle.state(product)
        if state.halted == halted:
            return state
        try:
            state = lifecycle.save_state(
                dataclasses.replace(state, halted=halted, halted_at=clock() if halted else None)
            )
        except ConcurrentUpdateError:
            continue
        if runtime.audit is not None:
            runtime.audit.emit(
                ROTATION_STAGE,
                subject="rotation",
                data={
                    "stage": state.stage,
                    "fromVersion": state.from_version,
                    "toVersion": state.to_version,
                    "halted": halted,
                },
            )
        return state


def state_dict(state: RotationState) -> dict[str, Any]:
    """The rotation state for ``rotate --status`` (times as ISO 8601)."""
    return {
        "product": state.product,
        "stage": state.stage,
        "from_version": state.from_version,
        "to_version": state.to_version,
        "started_at": iso(state.started_at),
        "stage_entered_at": iso(state.stage_at),
        "rewrap_run_id": state.rewrap_run_id,
        "rewrapped_at": iso(state.rewrapped_at),
        "halted": state.halted,
        "halted_at": iso(state.halted_at),
        "blocked": state.blocked,
        "last_rotation": None
        if state.last_completed_at is None
        else {
            "from_version": state.last_from,
            "to_version": state.last_to,
            "completed_at": iso(state.last_completed_at),
        },
        "lease_holder": state.holder,
        "lease_expires_at": iso(state.lease_expires_at),
    }


def _halted(
    product: str, state: RotationState, *, by_policy: bool, entered: list[Stage] | None = None
) -> Advance:
    how = "the policy's stop switch" if by_policy else f"rotate --stop at {iso(state.halted_at)}"
    return Advance(
        product=product,
        outcome="halted",
        stage=state.stage,
        summary=f"halted at {state.stage} by {how}; nothing advances until it is cleared",
        entered=tuple(entered or ()),
        state=state,
    )


def _release(lifecycle: LifecycleStore, product: str, owner: str) -> None:
    for _ in range(5):
        state = lifecycle.state(product)
        if state.holder != owner:
            return
        try:
            lifecycle.save_state(dataclasses.replace(state, holder=None, lease_expires_at=None))
            return
        except ConcurrentUpdateError:
            continue


def _counts(run: RunRecord) -> dict[str, int]:
    return {
        k: v for k, v in run.counters.as_dict().items() if k in ("matched", "changed", "failed")
    }


class _LeaseKeeper:
    """Passes run events on, renewing the rotation's lease while a long rewrap runs."""

    def __init__(self, inner: RunObserver, rotation: _Rotation) -> None:
        self.inner = inner
        self.rotation = rotation
        self.renewed = rotation.clock()

    def run_started(self, run: RunRecord, *, shard: int, resumed: bool) -> None:
        self.inner.run_started(run, shard=shard, resumed=resumed)

    def batch_done(self, delta: Counters) -> None:
        self.inner.batch_done(delta)
        now = self.rotation.clock()
        if now - self.renewed < LEASE_TTL / 3:
            return
        self.rotation.apply(self.rotation.lifecycle.state(self.rotation.product))
        self.renewed = now

    def event(self, name: str, fields: Mapping[str, object]) -> None:
        self.inner.event(name, fields)
