"""The rotation engine: migrations with a ledger and leases, verify, preflight, backup.

The operator CLI (``field_encrypt.cli``) is a thin layer over what this package exports;
applications and tests can call the same functions directly.
"""

from field_encrypt.errors import ConfigurationError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.backup import RestoreReport, backup, restore
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
from field_encrypt.rotation.migrate import migrate, prepare_job
from field_encrypt.rotation.preflight import Check, preflight
from field_encrypt.rotation.ratelimit import ThrottledProvider, TokenBucket
from field_encrypt.rotation.retry import Retrier, RetryBudgetExhausted, RetryPolicy
from field_encrypt.rotation.run import DryRun, MigrationOptions, RunObserver, RunReport
from field_encrypt.rotation.sqlite_ledger import SqliteRunLedger
from field_encrypt.rotation.verify import VerifyReport, verify
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


__all__ = [
    "MODES",
    "BackupRecord",
    "Check",
    "Counters",
    "DryRun",
    "Failure",
    "MigrationOptions",
    "Mode",
    "RestoreReport",
    "Retrier",
    "RetryBudgetExhausted",
    "RetryPolicy",
    "RunLedger",
    "RunObserver",
    "RunPlan",
    "RunRecord",
    "RunReport",
    "ShardState",
    "SqliteRunLedger",
    "ThrottledProvider",
    "TokenBucket",
    "VerifyReport",
    "backup",
    "migrate",
    "open_ledger",
    "preflight",
    "prepare_job",
    "restore",
    "verify",
]
