"""The one Retry-After parser the providers and the Cosmos DB store share."""

from __future__ import annotations

import datetime as dt

import pytest

from field_encrypt.retry_after import parse_retry_after, retry_after_from

NOW = dt.datetime(2026, 12, 2, 18, 0, 0, tzinfo=dt.UTC)


def now() -> dt.datetime:
    return NOW


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),  # never negative
        ("Wed, 02 Dec 2026 18:00:30 GMT", 30.0),  # the HTTP-date form
        ("Wed, 02 Dec 2026 17:59:00 GMT", 0.0),  # already past
        ("Wed, 02 Dec 2026 18:01:00 -0000", 60.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_seconds_and_http_date_forms(value: str | None, seconds: float | None) -> None:
    """Both RFC 9110 forms give seconds from now; anything unusable gives None."""
    assert parse_retry_after(value, now=now) == seconds


def test_headers_prefer_cosmos_milliseconds_and_ignore_case() -> None:
    """x-ms-retry-after-ms wins (in ms); otherwise Retry-After, whatever its case."""
    assert retry_after_from({"x-ms-retry-after-ms": "250", "Retry-After": "9"}, now=now) == 0.25
    assert retry_after_from({"retry-after": "Wed, 02 Dec 2026 18:00:10 GMT"}, now=now) == 10.0
    assert retry_after_from({"X-Ms-Retry-After-Ms": "oops", "RETRY-AFTER": "2"}, now=now) == 2.0
    assert retry_after_from(None) is None and retry_after_from({}) is None
