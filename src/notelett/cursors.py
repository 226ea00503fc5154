"""Listing cursors: opaque, and authenticated so that only issued ones are accepted.

A cursor is ``base64url(b"n2" || tag || position)``, where ``position`` is the
repository's own cursor (ASCII) and ``tag`` the first 16 bytes of
HMAC-SHA256(cursor key, version || workspace || position). The workspace is bound in the
tag, so a cursor issued for one workspace is refused for another; a forged, altered,
truncated or overlong cursor is refused with :class:`InvalidCursorError` (400) before
the repository sees it.

The cursor key is derived from ``NOTELETT_CURSOR_SECRET`` or, when unset, from the HS256
secret; with RS256 and no cursor secret a random key is drawn at start-up (cursors then
do not survive a restart nor cross processes, and a warning says so).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os

from notelett.errors import InvalidCursorError

log = logging.getLogger("notelett.cursors")

VERSION = b"n2"
TAG_BYTES = 16
MAX_POSITION_CHARS = 64
_KEY_LABEL = b"notelett/cursor-key/v2"


class CursorCodec:
    """Issues and checks listing cursors under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a cursor key is at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "CursorCodec()"

    @classmethod
    def from_secret(cls, secret: bytes) -> CursorCodec:
        """A codec whose key is derived from a service secret (never the secret itself)."""
        return cls(hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest())

    @classmethod
    def ephemeral(cls) -> CursorCodec:
        """A codec with a random key: its cursors are valid in this process only."""
        log.warning(
            "no NOTELETT_CURSOR_SECRET: listing cursors are signed with a per-process key "
            "and stop working after a restart or on another replica"
        )
        return cls(os.urandom(32))

    def encode(self, workspace_id: str, position: str | None) -> str | None:
        """The opaque cursor for ``position`` in ``workspace_id`` (``None`` stays ``None``)."""
        if position is None:
            return None
        raw = position.encode("ascii")
        token = VERSION + self._tag(workspace_id, raw) + raw
        return base64.urlsafe_b64encode(token).decode().rstrip("=")

    def decode(self, workspace_id: str, text: str | None) -> str | None:
        """The position inside a cursor issued for ``workspace_id``; 400 for anything else."""
        if text is None:
            return None
        try:
            token = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise InvalidCursorError() from None
        head, tag, raw = token[:2], token[2 : 2 + TAG_BYTES], token[2 + TAG_BYTES :]
        if head != VERSION or not raw or len(raw) > MAX_POSITION_CHARS:
            raise InvalidCursorError()
        if not hmac.compare_digest(tag, self._tag(workspace_id, raw)):
            raise InvalidCursorError()
        return raw.decode("ascii")

    def _tag(self, workspace_id: str, raw: bytes) -> bytes:
        message = VERSION + b"\0" + workspace_id.encode() + b"\0" + raw
        return hmac.new(self._key, message, hashlib.sha256).digest()[:TAG_BYTES]
