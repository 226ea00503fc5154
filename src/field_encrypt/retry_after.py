"""``Retry-After``: how long a throttled service asked us to wait, in seconds.

One parser for every provider and store (Key Vault, KMS, Cosmos DB). RFC 9110 allows
two forms: a number of seconds (``120``) or an HTTP date (``Fri, 31 Dec 1999 23:59:59
GMT``); Cosmos DB also sends milliseconds in ``x-ms-retry-after-ms``. Anything else is
ignored (``None``): the caller then backs off on its own schedule.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Mapping


def parse_retry_after(
    value: str | None, *, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; never negative; ``None`` if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unusable
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates: RFC 9110 says GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now()).total_seconds())


def retry_after_from(
    headers: Mapping[str, str] | None,
    *,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> float | None:
    """From response headers: ``x-ms-retry-after-ms`` (milliseconds), else ``Retry-After``.

    Header names are matched without regard to case (the SDKs differ).
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    millis = lowered.get("x-ms-retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    return parse_retry_after(lowered.get("retry-after"), now=now)


__all__ = ["parse_retry_after", "retry_after_from"]
