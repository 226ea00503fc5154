"""Exit codes: one per failure class, pinned by a test and listed in ``docs/cli.md``."""

from __future__ import annotations

from enum import IntEnum

from field_encrypt.errors import (
    TRANSIENT_ERRORS,
    AuditChainError,
    ConfigurationError,
    DeliveryError,
    FieldEncryptError,
    KeyProviderError,
    KeyVersionDisabledError,
    KeyVersionNotFoundError,
    RotationError,
    StoreError,
)


class ExitCode(IntEnum):
    """What a ``field-encrypt`` process exits with."""

    OK = 0
    """Success."""
    INTERNAL = 1
    """An unexpected error (a bug): the traceback says where."""
    USAGE = 2
    """Bad usage: an unknown command or flag, a malformed value."""
    CONFIG = 3
    """Configuration error: settings, product, unknown or disabled MEK version."""
    ITEMS_FAILED = 4
    """The run finished but some DEKs or documents failed; they are named."""
    NOT_VERIFIED = 5
    """``verify`` found a gap, or a ``preflight`` check failed."""
    REFUSED = 6
    """Refused for safety: lease held, disable refused, restore would lose data."""
    UNAVAILABLE = 7
    """The provider or store stayed unavailable after retries (cursor saved: re-run)."""
    WAITING = 8
    """``rotate``: nothing more to do yet, the soak period is running (call again later)."""
    HALTED = 9
    """``rotate``: the stop switch is set; nothing advances until it is cleared."""


def exit_code_for(exc: FieldEncryptError) -> ExitCode:
    """The exit code for an error that ended a command."""
    from field_encrypt.rotation import RetryBudgetExhausted  # the engine: only on failure

    if isinstance(exc, (RetryBudgetExhausted, *TRANSIENT_ERRORS)):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, AuditChainError):
        return ExitCode.NOT_VERIFIED
    if isinstance(exc, RotationError):
        return ExitCode.REFUSED
    if isinstance(exc, ConfigurationError | KeyVersionNotFoundError | KeyVersionDisabledError):
        return ExitCode.CONFIG
    if isinstance(exc, KeyProviderError | StoreError | DeliveryError):
        return ExitCode.UNAVAILABLE
    return ExitCode.INTERNAL
