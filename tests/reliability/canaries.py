"""Note plaintexts that the secret scan can recognise anywhere: ``CANARY-`` + 32 hex digits."""

from __future__ import annotations

import uuid


def canary() -> str:
    """A fresh plaintext canary."""
    return f"CANARY-{uuid.uuid4().hex}"
