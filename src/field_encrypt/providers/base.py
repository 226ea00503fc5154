"""The KeyProvider protocol: something that wraps and unwraps DEKs under a versioned MEK."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from field_encrypt.errors import TRANSIENT_ERRORS, FieldEncryptError

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyVersion:
    """One version of a MEK, as the provider reports it."""

    version: str
    enabled: bool
    created_at: dt.datetime
    current: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedDek:
    """A DEK wrapped under one MEK version. Safe to store; useless without the MEK."""

    mek_version: str
    ciphertext: bytes = field(repr=False)
    algorithm: str


def dek_context(product: str, dek_id: str) -> bytes:
    """The binding of a wrapped DEK: it unwraps only as this product's DEK ``dek_id``."""
    return dek_context_prefix(product) + dek_id.encode()


def dek_context_prefix(product: str) -> bytes:
    """What every :func:`dek_context` of ``product`` starts with (the dekId follows)."""
    return b"field-encrypt/dek/v1\x00" + product.encode() + b"\x00"


_new = object.__new__
_SET_MEK_VERSION = vars(WrappedDek)["mek_version"].__set__
_SET_CIPHERTEXT = vars(WrappedDek)["ciphertext"].__set__
_SET_ALGORITHM = vars(WrappedDek)["algorithm"].__set__


def wrapped_dek_of(mek_version: str, ciphertext: bytes, algorithm: str) -> WrappedDek:
    """``WrappedDek(...)`` positionally, setting its slots directly: about 3x cheaper than
    the frozen dataclass's ``__init__``, for providers that wrap a batch at a time."""
    wrapped: WrappedDek = _new(WrappedDek)
    _SET_MEK_VERSION(wrapped, mek_version)
    _SET_CIPHERTEXT(wrapped, ciphertext)
    _SET_ALGORITHM(wrapped, algorithm)
    return wrapped


@runtime_checkable
class KeyProvider(Protocol):
    """A versioned MEK in a key service.

    ``context`` binds a wrapped DEK to its dekId and product (see :func:`dek_context`):
    providers with associated data (AES-GCM, KMS encryption context) pass it natively;
    providers without it (RSA-OAEP, AES key wrap) seal a digest of it with the DEK.
    Wrapping with a disabled version, or unwrapping under one, raises
    :class:`~field_encrypt.errors.KeyVersionDisabledError`.
    """

    kind: str
    """The provider's name in ``FIELD_ENCRYPT_KEY_PROVIDER`` (``local``, ``akv``...)."""
    mek_name: str
    """The MEK's name in the key service."""
    remote: bool
    """Whether calls cross a network (the rotation engine then runs them concurrently)."""

    def versions(self) -> list[KeyVersion]:
        """Every version of the MEK, oldest first, with its state.

        None (``[]``, not :class:`KeyVersionNotFoundError`) for a MEK the key service does
        not have yet (a new Key Vault key name, KMS alias or token label whose first version
        is not made), so that ``keys create`` can announce its first version and ``audit
        verify`` can settle that intent after a crash; ``current_version`` still raises.
        """
        ...

    def current_version(self) -> str:
        """The version new DEKs are wrapped under."""
        ...

    def create_version(self) -> KeyVersion:
        """Create a new version; it becomes current."""
        ...

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        """Enable or disable a version. Nothing is ever deleted."""
        ...

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        """Wrap ``dek`` under ``version`` (the current one when ``None``)."""
        ...

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        """The DEK inside ``ciphertext``; ``DecryptionError`` if it or its binding was altered."""
        ...

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        """The same DEK wrapped under ``to_version`` (current when ``None``).

        Providers that can re-encrypt server-side (KMS ``ReEncrypt``) do so, and the
        plaintext DEK never reaches this process.
        """
        ...


def refresh_provider(provider: object) -> None:
    """Make ``provider`` forget what it cached about versions (their state, the current one),
    if it caches anything: its ``refresh()``, when it has one. The next call asks again.

    Called when the product's key-state epoch moves, so a version disabled or enabled a
    moment ago is seen as such at once, not after ``FIELD_ENCRYPT_PROVIDER_REFRESH_SECONDS``.
    """
    refresh = getattr(provider, "refresh", None)
    if callable(refresh):
        refresh()


class RewrapByUnwrapping:
    """``rewrap`` for a provider with no server-side re-encryption: unwrap under the old
    version, wrap under the new (the DEK passes through this process, as on decrypt)."""

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        provider = cast("KeyProvider", self)
        dek = provider.unwrap(ciphertext, version=from_version, context=context)
        return provider.wrap(dek, context=context, version=to_version)


@runtime_checkable
class BatchRewrapper(Protocol):
    """An in-process provider that can rewrap many DEKs in one call, each one checked.

    The rotation engine uses this when a provider offers it: keys are looked up once per
    batch instead of once per DEK. Each result is the new wrap, or the error that DEK met
    (the batch goes on); every new wrap has been unwrapped again and compared with the
    DEK before it is returned.
    """

    def rewrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]], *, to_version: str
    ) -> list[WrappedDek | FieldEncryptError]:
        """``items`` are ``(wrapped, from_version, context)``; one result per item, in order."""
        ...


@runtime_checkable
class BatchWrapper(Protocol):
    """An in-process provider that wraps or unwraps many DEKs in one call.

    Each MEK version is looked up (and the keyring's freshness checked) once per call
    instead of once per DEK. One result per item, in order: the wrap (or the DEK), or the
    error that item met; the batch goes on. Call it through :func:`wrap_many` and
    :func:`unwrap_many`, which fall back to one ``wrap``/``unwrap`` per item for any other
    provider.
    """

    def wrap_many(
        self, deks: Sequence[tuple[bytes, bytes]], *, version: str | None = None
    ) -> list[WrappedDek | FieldEncryptError]:
        """``deks`` are ``(dek, context)``; each wrapped under ``version`` (current if ``None``)."""
        ...

    def unwrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]]
    ) -> list[bytes | FieldEncryptError]:
        """``items`` are ``(wrapped, version, context)``; the DEK inside each."""
        ...


def wrap_many(
    provider: KeyProvider, deks: Sequence[tuple[bytes, bytes]], *, version: str | None = None
) -> list[WrappedDek | FieldEncryptError]:
    """``provider.wrap`` of each ``(dek, context)``, in one call when the provider batches.

    An item's error is returned in its place; a transient one (throttling, an outage) is
    raised, so the caller's retry policy sees it as it would for a single call.
    """
    if isinstance(provider, BatchWrapper):
        return provider.wrap_many(deks, version=version)
    return _one_by_one(
        deks, lambda dek, context: provider.wrap(dek, context=context, version=version)
    )


def unwrap_many(
    provider: KeyProvider, items: Sequence[tuple[bytes, str, bytes]]
) -> list[bytes | FieldEncryptError]:
    """``provider.unwrap`` of each ``(wrapped, version, context)``, like :func:`wrap_many`."""
    if isinstance(provider, BatchWrapper):
        return provider.unwrap_many(items)
    return _one_by_one(
        items,
        lambda wrapped, version, context: provider.unwrap(
            wrapped, version=version, context=context
        ),
    )


def _one_by_one(
    items: Iterable[tuple[Any, ...]], call: Callable[..., T]
) -> list[T | FieldEncryptError]:
    """``call(*item)`` of each item, in order: an item's error in its place, a transient
    one raised (the fallback of :func:`wrap_many` and :func:`unwrap_many`)."""
    out: list[T | FieldEncryptError] = []
    for item in items:
        try:
            out.append(call(*item))
        except TRANSIENT_ERRORS:
            raise
        except FieldEncryptError as exc:
            out.append(exc)
    return out
