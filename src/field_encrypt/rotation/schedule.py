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
from typing import Any

from field_encrypt import tracing
from field_encrypt.errors import ConcurrentUpdateError, LeaseHeldError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.keys import DAY, iso
from field_encrypt.rotation.lease import dead_here, worker_id
from field_encrypt.rotation.ledger import Counters, RunLedger, RunRecord
from field_encrypt.rotation.lifecycle import LifecycleStore, RotationState, Stage
from field_encrypt.rotation.policy import Policy
from field_encrypt.rotation.preflight import Check
from field_encrypt.rotation.reports import report_dict
from field_encrypt.rotation.retire import RetireReport
from field_encrypt.rotation.run import NullObserver, RunObserver, RunReport
from field_encrypt.rotation.stages import LEASE_TTL, Blocker, Outcome, Rotation, Stop, emit_stage


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
        return report_dict(self, state=None if self.state is None else state_dict(self.state))


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
    with tracing.span(
        "field_encrypt.rotation.advance", product=runtime.encryptor.product
    ) as traced:
        result = _advance(
            runtime, ledger, lifecycle, policy, clock, observer, owner, clock_override
        )
        tracing.annotate(traced, outcome=result.outcome, stage=result.stage)
        return result


def _advance(
    runtime: ProductRuntime,
    ledger: RunLedger,
    lifecycle: LifecycleStore,
    policy: Policy,
    clock: Callable[[], float],
    observer: RunObserver | None,
    owner: str | None,
    clock_override: bool,
) -> Advance:
    product = runtime.encryptor.product
    rotation = Rotation(
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
    if state.leased(clock()) and state.holder != rotation.owner and not dead_here(state.holder):
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
            with tracing.span("field_encrypt.rotation.stage", product=product, stage=state.stage):
                result = rotation.step(state)
            if isinstance(result, Stop):
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
        emit_stage(runtime, state, halted=halted)
        return state


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """When the scheduled rotation next needs attention (epoch seconds; ``None``: not now)."""

    next_due: float | None
    """Idle: when the current version reaches ``max_age_days`` and a rotation starts."""
    soak_until: float | None
    """Soak or retire: when the soak after the rewrap ends."""
    last_success: float | None
    """When the last rotation completed."""


def timing(state: RotationState, policy: Policy, current_created: float) -> Timing:
    """The rotation's due times, from its state, its policy and the current version's age."""
    return Timing(
        next_due=current_created + policy.max_age_days * 86400.0 if state.stage == "idle" else None,
        soak_until=state.rewrapped_at + policy.soak_hours * 3600.0
        if state.rewrapped_at is not None and state.stage in ("soak", "retire")
        else None,
        last_success=state.last_completed_at,
    )


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


def schedule_status(
    runtime: ProductRuntime, lifecycle: LifecycleStore, policy: Policy, *, now: float
) -> dict[str, Any]:
    """``rotate --status`` (and the console): the stage, the current version's age, when
    the next rotation is due (idle only), when the soak ends, the policy, the stop switch."""
    state = lifecycle.state(runtime.encryptor.product)
    current = next(v for v in runtime.provider.versions() if v.current)
    created = current.created_at.timestamp()
    due = timing(state, policy, created)
    return {
        **state_dict(state),
        "current_version": current.version,
        "current_age_days": round((now - created) / DAY, 2),
        "next_rotation_due": iso(due.next_due) if due.next_due is not None else None,
        "soak_until": iso(due.soak_until) if due.soak_until is not None else None,
        "policy": policy.as_dict(),
        "stop_switch": state.halted or policy.stop,
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


class _LeaseKeeper:
    """Passes run events on, renewing the rotation's lease while a long rewrap runs."""

    def __init__(self, inner: RunObserver, rotation: Rotation) -> None:
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
