"""The one error tree of field-encrypt.

Everything the library raises on purpose is a :class:`FieldEncryptError`::

    FieldEncryptError
    ├── ConfigurationError            bad or missing settings; raised at start-up
    ├── DecryptionError               a token or wrapped DEK failed to open (fixed message)
    │   ├── UnsupportedFormatError    not a token, or a format version this build does not read
    │   └── DekMissingError           the token's DEK is not in the dek_store (shredded or lost)
    ├── KeyProviderError              the key service failed (.cause holds the SDK error)
    │   ├── KeyVersionDisabledError   the MEK version exists but is disabled
    │   ├── KeyVersionNotFoundError   no such MEK version
    │   └── KeyProviderUnavailableError  transient: throttled, timed out, unreachable (retry)
    ├── StoreError                    the database failed (.cause holds the driver error)
    │   ├── NotFoundError             no such row (DEK, document, run)
    │   ├── AlreadyExistsError        a row with that id exists
    │   ├── ConcurrentUpdateError     compare-and-swap lost: the row changed since it was read
    │   └── StoreUnavailableError     transient: locked, connection dropped (retry)
    ├── RotationError                 a migration run cannot start or finish
    │   ├── LeaseHeldError            another run holds the product's migration lease
    │   └── RewrapCheckError          a checked new wrap did not hold its DEK (batch not committed)
    ├── DeliveryError                 the audit trail's destination did not take an event
    └── AuditChainError               the audit trail disagrees with its anchor (rewritten, cut)

SDK and driver exceptions are converted once, where the SDK is called; nothing above
that boundary catches ``Exception``. No message ever carries key material.
"""

from __future__ import annotations


class FieldEncryptError(Exception):
    """Root of every error field-encrypt raises on purpose."""


class ConfigurationError(FieldEncryptError):
    """Settings are missing, malformed or inconsistent."""


class DecryptionError(FieldEncryptError):
    """A field token or a wrapped DEK could not be opened.

    Catching this catches every way a stored value can fail to decrypt. The base message
    is fixed on purpose: it never says which byte, key or binding failed.
    """

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class UnsupportedFormatError(DecryptionError):
    """The value is not a field token, or its format version is unknown to this build."""


class DekMissingError(DecryptionError):
    """The token names a DEK that the dek_store does not hold (crypto-shredded or lost).

    ``dek_id`` says which, so an operator can follow the runbook (restore ``dek_store``).
    """

    def __init__(self, dek_id: str) -> None:
        super().__init__(f"decryption failed: DEK {dek_id} is not in the dek_store")
        self.dek_id = dek_id


class _Caused(FieldEncryptError):
    """Internal: an error that keeps the SDK's or driver's exception in ``cause``."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class _Transient(_Caused):
    """Internal: a transient failure; ``retry_after`` is the delay in seconds the service
    asked for, when it said one."""

    def __init__(
        self, message: str, *, cause: BaseException | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, cause=cause)
        self.retry_after = retry_after


class KeyProviderError(_Caused):
    """The key provider failed; ``cause`` holds the underlying SDK error, if any."""


class KeyVersionDisabledError(KeyProviderError):
    """The MEK version exists but is disabled: nothing can be wrapped or unwrapped under it."""


class KeyVersionNotFoundError(KeyProviderError):
    """The provider has no MEK version of that name."""


class KeyProviderUnavailableError(_Transient, KeyProviderError):
    """A transient provider failure (throttling, timeout, 5xx, dropped connection).

    ``retry_after`` is the delay in seconds the service asked for, when it said one.
    """


class StoreError(_Caused):
    """The store failed; ``cause`` holds the underlying driver error, if any."""


class NotFoundError(StoreError):
    """No row with that id."""


class AlreadyExistsError(StoreError):
    """A row with that id already exists."""


class ConcurrentUpdateError(StoreError):
    """A compare-and-swap write lost: the row changed (or vanished) since it was read."""


class StoreUnavailableError(_Transient, StoreError):
    """A transient store failure (locked database, dropped connection, throttling).

    ``retry_after`` is the delay in seconds the service asked for, when it said one.
    """


class RotationError(FieldEncryptError):
    """A migration run cannot start or cannot finish."""


class LeaseHeldError(RotationError):
    """Another run holds the product's migration lease."""


class RewrapCheckError(RotationError):
    """A rewrap's check found a new wrap that does not unwrap to the same DEK.

    The batch it was in is not committed (every DEK keeps its old wrap) and the run stops:
    a provider that wraps wrongly once is not trusted with the next batch.
    """


class DeliveryError(FieldEncryptError):
    """An audit event could not be delivered to its destination (``actiontrail``).

    ``status`` is the HTTP status the destination answered, ``None`` when it did not answer.
    Nothing is lost: delivery resumes from the last acknowledged event.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuditChainError(FieldEncryptError):
    """The audit trail cannot be anchored or checked: its chain is broken, or an anchor's
    signature does not hold."""


TRANSIENT_ERRORS: tuple[type[FieldEncryptError], ...] = (
    KeyProviderUnavailableError,
    StoreUnavailableError,
)
"""Errors worth retrying with backoff."""
