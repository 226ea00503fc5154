"""A KeyProvider that counts, times and traces every call of the provider it wraps.

The one place provider calls are measured (``field_encrypt.metrics``): ``open_runtime``
and NoteLett wrap the provider they build in :func:`observed`, so every provider, remote
or local, is measured the same way without a line in its own module. Anything that is
not a provider call (a provider's own helpers) passes through to the wrapped provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from field_encrypt import metrics, tracing
from field_encrypt.errors import FieldEncryptError
from field_encrypt.providers.base import (
    BatchRewrapper,
    KeyProvider,
    KeyVersion,
    WrappedDek,
    unwrap_many,
    wrap_many,
)

T = TypeVar("T")


class ObservedProvider:
    """Every :class:`KeyProvider` call of ``inner``, counted by outcome and timed."""

    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.mek_name = inner.mek_name
        self.remote = inner.remote

    def __repr__(self) -> str:
        return f"ObservedProvider({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        with tracing.span(
            f"field_encrypt.provider.{operation}",
            kind="client",
            provider=self.kind,
            operation=operation,
        ) as traced:
            started = time.perf_counter()
            failure: FieldEncryptError | None = None
            try:
                return call()
            except FieldEncryptError as exc:
                failure = exc
                raise
            finally:
                outcome = metrics.outcome_of(failure)
                metrics.provider_call(self.kind, operation, outcome, time.perf_counter() - started)
                tracing.annotate(traced, outcome=outcome)

    def versions(self) -> list[KeyVersion]:
        return self._call("versions", self.inner.versions)

    def current_version(self) -> str:
        return self._call("current_version", self.inner.current_version)

    def create_version(self) -> KeyVersion:
        return self._call("create_version", self.inner.create_version)

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        return self._call("set_enabled", lambda: self.inner.set_enabled(version, enabled))

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        return self._call("wrap", lambda: self.inner.wrap(dek, context=context, version=version))

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        return self._call(
            "unwrap", lambda: self.inner.unwrap(ciphertext, version=version, context=context)
        )

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        return self._call(
            "rewrap",
            lambda: self.inner.rewrap(
                ciphertext, from_version=from_version, context=context, to_version=to_version
            ),
        )


class ObservedBatchProvider(ObservedProvider):
    """:class:`ObservedProvider` of an in-process provider that batches: ``rewrap_many``,
    ``wrap_many`` and ``unwrap_many`` are one observed call each (a :class:`~field_encrypt.providers.base.BatchWrapper`
    and a :class:`BatchRewrapper`; ``wrap_many``/``unwrap_many`` fall back to one call per
    item on an inner provider that is not a ``BatchWrapper``)."""

    def wrap_many(
        self, deks: Sequence[tuple[bytes, bytes]], *, version: str | None = None
    ) -> list[WrappedDek | FieldEncryptError]:
        return self._call("wrap_many", lambda: wrap_many(self.inner, deks, version=version))

    def unwrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]]
    ) -> list[bytes | FieldEncryptError]:
        return self._call("unwrap_many", lambda: unwrap_many(self.inner, items))

    def rewrap_many(
        self, items: Sequence[tuple[bytes, str, bytes]], *, to_version: str
    ) -> list[WrappedDek | FieldEncryptError]:
        inner = self.inner
        assert isinstance(inner, BatchRewrapper)
        return self._call("rewrap_many", lambda: inner.rewrap_many(items, to_version=to_version))


def observed(provider: KeyProvider) -> KeyProvider:
    """``provider``, measured and traced (itself when neither the ``metrics`` nor the
    ``otel`` extra is installed)."""
    if not (metrics.ENABLED or tracing.INSTALLED) or isinstance(provider, ObservedProvider):
        return provider
    if isinstance(provider, BatchRewrapper):
        return ObservedBatchProvider(provider)
    return ObservedProvider(provider)
