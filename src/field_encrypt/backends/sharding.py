"""Hash buckets of ids, so several workers can split one scan without talking to each other.

A dekId is 32 random hex digits, so its first four digits are already a uniform number in
0..65535 (the SQLite store uses the same rule). Any other id (a document id, a dekId from an
older system) is hashed with SHA-256 first. Shard ``(index, count)`` holds the buckets with
``bucket % count == index``: shards are disjoint, cover every bucket, and need no table of
ranges.
"""

from __future__ import annotations

import hashlib
import string

BUCKETS = 65536
"""Buckets are numbers in ``0 .. BUCKETS - 1``."""

_HEX = frozenset(string.hexdigits)


def bucket_of(identifier: str) -> int:
    """The identifier's bucket: its first four hex digits, else the start of its SHA-256."""
    head = identifier[:4]
    if len(head) == 4 and _HEX.issuperset(head):
        return int(head, 16)
    return int.from_bytes(hashlib.sha256(identifier.encode()).digest()[:2], "big")


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """``shard`` itself if it names one part of a split; ``ValueError`` otherwise."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    return index, count
