"""Test helpers for field-encrypt users' own tests: a fake clock and provider wrappers.

The wrappers run the real crypto of the provider they wrap; they only count calls or
inject the failures a real key service produces (throttling with ``Retry-After``,
outages, disabled versions), so tests of rotation code see what production would::

    clock = FakeClock()
    provider = FaultInjectingProvider(LocalKeyProvider(path, mek_name="m"), clock=clock.monotonic)
    provider.throttle(5, retry_after=2.0)      # the next 5 calls answer 429
    provider.outage(30.0)                      # every call fails for 30 (fake) seconds
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from field_encrypt.errors import KeyProviderUnavailableError, KeyVersionDisabledError
from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek

__all__ = ["CountingProvider", "FakeClock", "FaultInjectingProvider"]


class FakeClock:
    """Wall and monotonic time that move only when told to (or when something sleeps)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def __repr__(self) -> str:
        return f"FakeClock({self._now})"

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once, and remember the request."""
        self.slept.append(seconds)
        self.advance(seconds)


class CountingProvider:
    """Counts every call, by method name, then passes it on."""

    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.mek_name = inner.mek_name
        self.remote = inner.remote
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CountingProvider({self.inner!r})"

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def versions(self) -> list[KeyVersion]:
        self._count("versions")
        return self.inner.versions()

    def current_version(self) -> str:
        self._count("current_version")
        return self.inner.current_version()

    def create_version(self) -> KeyVersion:
        self._count("create_version")
        return self.inner.create_version()

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        self._count("set_enabled")
        return self.inner.set_enabled(version, enabled)

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        self._count("wrap")
        return self.inner.wrap(dek, context=context, version=version)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        self._count("unwrap")
        return self.inner.unwrap(ciphertext, version=version, context=context)

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        self._count("rewrap")
        return self.inner.rewrap(
            ciphertext, from_version=from_version, context=context, to_version=to_version
        )


class FaultInjectingProvider:
    """A provider that fails the way key services do, over real crypto.

    Rules apply to ``wrap``, ``unwrap`` and ``rewrap`` (the data-plane calls):

    * :meth:`throttle`: the next *n* calls raise ``KeyProviderUnavailableError`` with
      ``retry_after`` (HTTP 429 with ``Retry-After``);
    * :meth:`fail_randomly`: each call fails transiently with probability ``rate``
      (seeded, so a test is repeatable);
    * :meth:`outage`: every call fails transiently until ``seconds`` have passed on
      ``clock``;
    * :meth:`disable`: a version this wrapper treats as disabled, as the service does
      (``KeyVersionDisabledError`` on wrap or unwrap under it), whatever the inner
      provider says; ``versions()`` reports it disabled too;
    * :meth:`before_call`: a hook run before each data-plane call with the method name
      (to interleave a concurrent writer, or to kill the process at a chosen call).
    """

    def __init__(self, inner: KeyProvider, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.mek_name = inner.mek_name
        self.remote = inner.remote
        self.calls: Counter[str] = Counter()
        self.faults = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._throttled = 0
        self._retry_after: float | None = None
        self._random_rate = 0.0
        self._random_retry_after: float | None = None
        self._rng = random.Random(0)
        self._outage_until = float("-inf")
        self._disabled: set[str] = set()
        self._hooks: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"FaultInjectingProvider({self.inner!r})"

    # -- rules ---------------------------------------------------------------------------

    def throttle(self, calls: int, *, retry_after: float | None = 1.0) -> None:
        with self._lock:
            self._throttled = calls
            self._retry_after = retry_after

    def fail_randomly(
        self, rate: float, *, seed: int = 0, retry_after: float | None = None
    ) -> None:
        with self._lock:
            self._random_rate = rate
            self._random_retry_after = retry_after
            self._rng = random.Random(seed)

    def outage(self, seconds: float) -> None:
        self._outage_until = self._clock() + seconds

    def disable(self, version: str) -> None:
        self._disabled.add(version)

    def enable(self, version: str) -> None:
        self._disabled.discard(version)

    def before_call(self, hook: Callable[[str], None]) -> None:
        self._hooks.append(hook)

    def _enter(self, name: str, *versions: str | None) -> None:
        for hook in self._hooks:
            hook(name)
        with self._lock:
            self.calls[name] += 1
            fault: KeyProviderUnavailableError | None = None
            if self._clock() < self._outage_until:
                fault = KeyProviderUnavailableError("service unavailable (injected outage)")
            elif self._throttled > 0:
                self._throttled -= 1
                fault = KeyProviderUnavailableError(
                    "too many requests (injected)", retry_after=self._retry_after
                )
            elif self._random_rate and self._rng.random() < self._random_rate:
                fault = KeyProviderUnavailableError(
                    "transient fault (injected)", retry_after=self._random_retry_after
                )
            if fault is not None:
                self.faults += 1
                raise fault
        for version in versions:
            if version is not None and version in self._disabled:
                raise KeyVersionDisabledError(
                    f"MEK {self.mek_name!r} version {version!r} is disabled"
                )

    # -- KeyProvider ---------------------------------------------------------------------

    def versions(self) -> list[KeyVersion]:
        return [
            KeyVersion(
                version=v.version,
                enabled=v.enabled and v.version not in self._disabled,
                created_at=v.created_at,
                current=v.current,
            )
            for v in self.inner.versions()
        ]

    def current_version(self) -> str:
        return self.inner.current_version()

    def create_version(self) -> KeyVersion:
        return self.inner.create_version()

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        return self.inner.set_enabled(version, enabled)

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        self._enter("wrap", version or self.inner.current_version())
        return self.inner.wrap(dek, context=context, version=version)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        self._enter("unwrap", version)
        return self.inner.unwrap(ciphertext, version=version, context=context)

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        self._enter("rewrap", from_version, to_version or self.inner.current_version())
        return self.inner.rewrap(
            ciphertext, from_version=from_version, context=context, to_version=to_version
        )
