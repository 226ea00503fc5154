"""A token bucket, so a rotation never takes more than its share of the key service's quota."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; :meth:`take` waits for one.

    Thread-safe. Time and sleeping are injected, so tests run on a fake clock.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"

    def take(self, tokens: float = 1.0) -> None:
        """Wait until ``tokens`` are available, then spend them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= tokens
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class ThrottledProvider:
    """A :class:`~field_encrypt.providers.base.KeyProvider` whose calls each take a token."""

    def __init__(self, inner: KeyProvider, bucket: TokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket
        self.kind = inner.kind
        self.mek_name = inner.mek_name
        self.remote = inner.remote

    def __repr__(self) -> str:
        return f"ThrottledProvider({self.inner!r}, {self.bucket!r})"

    def versions(self) -> list[KeyVersion]:
        self.bucket.take()
        return self.inner.versions()

    def current_version(self) -> str:
        self.bucket.take()
        return self.inner.current_version()

    def create_version(self) -> KeyVersion:
        self.bucket.take()
        return self.inner.create_version()

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        self.bucket.take()
        return self.inner.set_enabled(version, enabled)

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        self.bucket.take()
        return self.inner.wrap(dek, context=context, version=version)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        self.bucket.take()
        return self.inner.unwrap(ciphertext, version=version, context=context)

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        self.bucket.take()
        return self.inner.rewrap(
            ciphertext, from_version=from_version, context=context, to_version=to_version
        )
