"""The rotation engine: migrations with a ledger and leases, verify, preflight, backup;
the key lifecycle (retirement gate, compromise mode) and the scheduled rotation.

The operator CLI (``field_encrypt.cli``) is a thin layer over what this package exports;
applications and tests can call the same functions directly.
"""

from field_encrypt.backends.registry import open_lifecycle_store, open_run_ledger
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


def open_ledger(runtime: ProductRuntime) -> RunLedger:
    """The run ledger in the product's own database (``ProductRuntime.database``).

    SQLite, PostgreSQL or Cosmos DB: every worker of a run, on any machine, must reach the
    same database, which is all they share.
    """
    return open_run_ledger(runtime.database)


def open_lifecycle(runtime: ProductRuntime) -> LifecycleStore:
    """Version notes and the rotation state in the product's own database."""
    return open_lifecycle_store(runtime.database)


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
