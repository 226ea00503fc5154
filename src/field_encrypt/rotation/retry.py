"""Bounded retries of transient errors: exponential backoff with jitter, ``retry_after``.

Only :data:`~field_encrypt.errors.TRANSIENT_ERRORS` are retried. Each operation keeps
trying until its time ``budget`` would be exceeded; then :class:`RetryBudgetExhausted`
ends the run cleanly (the cursor of the last finished batch is already saved, so running
the same command again continues). Once one operation has given up, every other one
that fails gives up at once instead of waiting out its own budget, so a run with many
threads still stops within one budget.

Why not tenacity: the engine needs an injected clock and sleep (tests never wait for
real time), a ``retry_after`` floor taken from the error, and one shared give-up state
across threads; each of those fights tenacity's own stop/wait machinery, and the
library would gain a dependency for thirty lines.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from field_encrypt import metrics
from field_encrypt.errors import TRANSIENT_ERRORS, FieldEncryptError, RotationError

T = TypeVar("T")
P = ParamSpec("P")


class RetryBudgetExhausted(RotationError):
    """A transient error persisted past the retry budget; ``cause`` is the last one."""

    def __init__(self, message: str, *, cause: FieldEncryptError) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long and how often to retry one operation."""

    base_delay: float = 0.1
    max_delay: float = 10.0
    budget: float = 120.0
    """Seconds one operation may keep failing before the run stops."""

    def __post_init__(self) -> None:
        if self.base_delay <= 0 or self.max_delay < self.base_delay or self.budget < 0:
            raise ValueError("retry policy needs 0 < base_delay <= max_delay and budget >= 0")


class Retrier:
    """Runs operations under one :class:`RetryPolicy`, with injectable time and randomness."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        on_retry: Callable[[FieldEncryptError, int, float], None] | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._on_retry = on_retry
        self._gave_up = threading.Event()
        self._lock = threading.Lock()
        self.retries = 0

    def call(self, operation: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``operation(*args, **kwargs)``, retried on transient errors within the budget."""
        return self._run(None, operation, *args, **kwargs)

    def call_after(
        self,
        failure: FieldEncryptError,
        operation: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Retry ``operation``, whose first attempt (made by the caller) failed transiently
        with ``failure``: waits as :meth:`call` would have (``retry_after`` included) first."""
        return self._run(failure, operation, *args, **kwargs)

    def _run(
        self,
        failure: FieldEncryptError | None,
        operation: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        started = self._clock()
        attempt = 0
        while True:
            if failure is None:
                try:
                    return operation(*args, **kwargs)
                except TRANSIENT_ERRORS as exc:
                    failure = exc
            attempt += 1
            retry_after: float | None = getattr(failure, "retry_after", None)
            delay = self.delay(attempt, retry_after)
            spent = self._clock() - started
            if self._gave_up.is_set() or spent + delay > self.policy.budget:
                self._gave_up.set()
                raise RetryBudgetExhausted(
                    f"{type(failure).__name__} persisted for {spent:.1f}s "
                    f"({attempt} attempts, budget {self.policy.budget:g}s): {failure}",
                    cause=failure,
                ) from failure
            with self._lock:
                self.retries += 1
            metrics.retried(failure)
            if self._on_retry is not None:
                self._on_retry(failure, attempt, delay)
            self._sleep(delay)
            failure = None

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Half to all of ``base * 2**(attempt-1)`` (capped), never below ``retry_after``."""
        ceiling = min(self.policy.max_delay, self.policy.base_delay * 2.0 ** (attempt - 1))
        jittered = ceiling * (0.5 + 0.5 * self._rng())
        return max(jittered, retry_after or 0.0)
