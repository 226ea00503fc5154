"""The rotation engine: migrations with a ledger and leases, verify, preflight, backup;
the key lifecycle (retirement gate, compromise mode) and the scheduled rotation.

The operator CLI (``field_encrypt.cli``) is a thin layer over what this package exports;
applications and tests can call the same functions directly.

Every name is imported from its module on first use (PEP 562), so opening a ledger
(``field-encrypt status``) does not load the migration engine. Five modules share their
name with the function they define (``backup``, ``migrate``, ``preflight``, ``retire``,
``verify``); the package keeps the function under that name, as an eager import did.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from field_encrypt.lazy_names import lazy_names

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime
    from field_encrypt.rotation.backup import RestoreReport, backup, restore
    from field_encrypt.rotation.compromise import CompromiseReport, respond_to_compromise
    from field_encrypt.rotation.keys import (
        Disabled,
        create_version,
        disable_version,
        enable_version,
        version_rows,
    )
    from field_encrypt.rotation.ledger import (
        MODES,
        BackupRecord,
        Counters,
        Failure,
        Mode,
        RunLedger,
        RunPlan,
        RunRecord,
        ShardState,
    )
    from field_encrypt.rotation.lifecycle import (
        STAGES,
        LifecycleStore,
        RotationState,
        Stage,
        VersionNote,
    )
    from field_encrypt.rotation.migrate import migrate, prepare_job
    from field_encrypt.rotation.orphans import OrphanReport, collect_orphans
    from field_encrypt.rotation.policy import Policy, load_policy
    from field_encrypt.rotation.preflight import Check, preflight
    from field_encrypt.rotation.ratelimit import ThrottledProvider, TokenBucket
    from field_encrypt.rotation.retire import RetireReport, retire, retire_gate
    from field_encrypt.rotation.retry import Retrier, RetryBudgetExhausted, RetryPolicy
    from field_encrypt.rotation.run import DryRun, MigrationOptions, RunObserver, RunReport
    from field_encrypt.rotation.run_status import run_rows
    from field_encrypt.rotation.schedule import (
        Advance,
        advance,
        schedule_status,
        set_halted,
        state_dict,
    )
    from field_encrypt.rotation.verify import VerifyReport, dek_counts, verify

_LAZY = {
    "RestoreReport": "field_encrypt.rotation.backup",
    "backup": "field_encrypt.rotation.backup",
    "restore": "field_encrypt.rotation.backup",
    "CompromiseReport": "field_encrypt.rotation.compromise",
    "respond_to_compromise": "field_encrypt.rotation.compromise",
    "OrphanReport": "field_encrypt.rotation.orphans",
    "collect_orphans": "field_encrypt.rotation.orphans",
    "Disabled": "field_encrypt.rotation.keys",
    "create_version": "field_encrypt.rotation.keys",
    "disable_version": "field_encrypt.rotation.keys",
    "enable_version": "field_encrypt.rotation.keys",
    "version_rows": "field_encrypt.rotation.keys",
    "BackupRecord": "field_encrypt.rotation.ledger",
    "Counters": "field_encrypt.rotation.ledger",
    "Failure": "field_encrypt.rotation.ledger",
    "MODES": "field_encrypt.rotation.ledger",
    "Mode": "field_encrypt.rotation.ledger",
    "RunLedger": "field_encrypt.rotation.ledger",
    "RunPlan": "field_encrypt.rotation.ledger",
    "RunRecord": "field_encrypt.rotation.ledger",
    "ShardState": "field_encrypt.rotation.ledger",
    "LifecycleStore": "field_encrypt.rotation.lifecycle",
    "RotationState": "field_encrypt.rotation.lifecycle",
    "STAGES": "field_encrypt.rotation.lifecycle",
    "Stage": "field_encrypt.rotation.lifecycle",
    "VersionNote": "field_encrypt.rotation.lifecycle",
    "migrate": "field_encrypt.rotation.migrate",
    "prepare_job": "field_encrypt.rotation.migrate",
    "Policy": "field_encrypt.rotation.policy",
    "load_policy": "field_encrypt.rotation.policy",
    "Check": "field_encrypt.rotation.preflight",
    "preflight": "field_encrypt.rotation.preflight",
    "ThrottledProvider": "field_encrypt.rotation.ratelimit",
    "TokenBucket": "field_encrypt.rotation.ratelimit",
    "RetireReport": "field_encrypt.rotation.retire",
    "retire": "field_encrypt.rotation.retire",
    "retire_gate": "field_encrypt.rotation.retire",
    "run_rows": "field_encrypt.rotation.run_status",
    "Retrier": "field_encrypt.rotation.retry",
    "RetryBudgetExhausted": "field_encrypt.rotation.retry",
    "RetryPolicy": "field_encrypt.rotation.retry",
    "DryRun": "field_encrypt.rotation.run",
    "MigrationOptions": "field_encrypt.rotation.run",
    "RunObserver": "field_encrypt.rotation.run",
    "RunReport": "field_encrypt.rotation.run",
    "Advance": "field_encrypt.rotation.schedule",
    "advance": "field_encrypt.rotation.schedule",
    "schedule_status": "field_encrypt.rotation.schedule",
    "set_halted": "field_encrypt.rotation.schedule",
    "state_dict": "field_encrypt.rotation.schedule",
    "VerifyReport": "field_encrypt.rotation.verify",
    "dek_counts": "field_encrypt.rotation.verify",
    "verify": "field_encrypt.rotation.verify",
}


def open_ledger(runtime: ProductRuntime) -> RunLedger:
    """The run ledger in the product's own database (``ProductRuntime.database``).

    SQLite, PostgreSQL or Cosmos DB: every worker of a run, on any machine, must reach the
    same database, which is all they share.
    """
    from field_encrypt.backends.registry import open_run_ledger

    return open_run_ledger(runtime.database)


def open_lifecycle(runtime: ProductRuntime) -> LifecycleStore:
    """Version notes and the rotation state in the product's own database."""
    from field_encrypt.backends.registry import open_lifecycle_store

    return open_lifecycle_store(runtime.database)


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


class _Package(types.ModuleType):
    """This package's module: a submodule named like its function leaves the function bound.

    The import system binds every loaded submodule on its package (``setattr``); for the
    five whose name is also an exported function, the function is bound instead, so
    ``from field_encrypt.rotation import migrate`` means the function whichever loaded first.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if (
            isinstance(value, types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
            and _LAZY.get(name) == value.__name__
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "MODES",
    "STAGES",
    "Advance",
    "BackupRecord",
    "Check",
    "CompromiseReport",
    "Counters",
    "Disabled",
    "DryRun",
    "Failure",
    "LifecycleStore",
    "MigrationOptions",
    "Mode",
    "OrphanReport",
    "Policy",
    "RestoreReport",
    "RetireReport",
    "Retrier",
    "RetryBudgetExhausted",
    "RetryPolicy",
    "RotationState",
    "RunLedger",
    "RunObserver",
    "RunPlan",
    "RunRecord",
    "RunReport",
    "ShardState",
    "Stage",
    "ThrottledProvider",
    "TokenBucket",
    "VerifyReport",
    "VersionNote",
    "advance",
    "backup",
    "collect_orphans",
    "create_version",
    "dek_counts",
    "disable_version",
    "enable_version",
    "load_policy",
    "migrate",
    "open_ledger",
    "open_lifecycle",
    "preflight",
    "prepare_job",
    "respond_to_compromise",
    "restore",
    "retire",
    "retire_gate",
    "run_rows",
    "schedule_status",
    "set_halted",
    "state_dict",
    "verify",
    "version_rows",
]
