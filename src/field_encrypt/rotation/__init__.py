"""The rotation engine: migrations with a ledger and leases, verify, preflight, backup;
the key lifecycle (retirement gate, compromise mode) and the scheduled rotation.

The operator CLI (``field_encrypt.cli``) is a thin layer over what this package exports;
applications and tests can call the same functions directly.
"""

from field_encrypt.errors import ConfigurationError
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
from field_encrypt.rotation.sqlite_ledger import SqliteRunLedger
from field_encrypt.rotation.sqlite_lifecycle import SqliteLifecycleStore
from field_encrypt.rotation.verify import VerifyReport, dek_counts, verify
from field_encrypt.stores.databases import database_kind_of


def open_ledger(runtime: ProductRuntime) -> RunLedger:
    """The run ledger in the product's own database (``ProductRuntime.database``).

    SQLite, PostgreSQL or Cosmos DB: every worker of a run, on any machine, must reach the
    same database, which is all they share.
    """
    try:
        kind = database_kind_of(runtime.database)
    except TypeError:
        raise ConfigurationError(
            f"no run ledger for a {type(runtime.database).__name__} database in this build"
        ) from None
    if kind == "postgres":
        from field_encrypt.rotation.postgres_ledger import PostgresRunLedger

        return PostgresRunLedger(runtime.database)
    if kind == "cosmos":
        from field_encrypt.rotation.cosmos_ledger import CosmosRunLedger

        return CosmosRunLedger(runtime.database)
    return SqliteRunLedger(runtime.database)


def open_lifecycle(runtime: ProductRuntime) -> LifecycleStore:
    """Version notes and the rotation state in the product's own database."""
    try:
        kind = database_kind_of(runtime.database)
    except TypeError:
        raise ConfigurationError(
            f"no key lifecycle store for a {type(runtime.database).__name__} database in this build"
        ) from None
    if kind == "postgres":
        from field_encrypt.rotation.postgres_lifecycle import PostgresLifecycleStore

        return PostgresLifecycleStore(runtime.database)
    if kind == "cosmos":
        from field_encrypt.rotation.cosmos_lifecycle import CosmosLifecycleStore

        return CosmosLifecycleStore(runtime.database)
    return SqliteLifecycleStore(runtime.database)


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
    "SqliteLifecycleStore",
    "SqliteRunLedger",
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
