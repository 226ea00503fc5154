"""The scheduled rotation's policy: when to rotate, how long to soak, how fast to go.

Read from a TOML or JSON file (``rotate --policy FILE``) whose keys are the fields of
:class:`Policy` (``max_age_days = 25``; dashes are accepted for underscores), then
overridden by flags. Unknown keys are refused, so a typo never silently means "default".
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from field_encrypt.errors import ConfigurationError


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """How ``field-encrypt rotate`` advances (see docs/cli.md)."""

    max_age_days: float = 30.0
    """A new rotation starts once the current MEK version is this old."""
    soak_hours: float = 24.0
    """How long after the rewrap completed the old version stays enabled."""
    retention_days: float = 30.0
    """How long a retired version must be kept (disabled) before it may be deleted."""
    max_rps: float | None = None
    """Provider calls per second at most during the rewrap (``None``: unlimited)."""
    batch_size: int = 1000
    concurrency: int = 8
    sample: int = 100
    """Documents decrypted end to end at verify and at the retirement gate."""
    max_backup_age_hours: float = 24.0
    """Pre-flight wants a dek_store backup at most this old."""
    stop: bool = False
    """The stop switch: nothing advances while it is set."""

    def __post_init__(self) -> None:
        for name in ("max_age_days", "soak_hours", "retention_days", "max_backup_age_hours"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"rotation policy: {name} must not be negative")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ConfigurationError("rotation policy: max_rps must be positive")
        if self.batch_size < 1 or self.concurrency < 1 or self.sample < 0:
            raise ConfigurationError(
                "rotation policy: batch_size and concurrency must be at least 1, sample at least 0"
            )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = frozenset(f.name for f in dataclasses.fields(Policy))
_TYPES: dict[str, type | tuple[type, ...]] = {
    name: bool
    if name == "stop"
    else int
    if name in ("batch_size", "concurrency", "sample")
    else (int, float)
    for name in FIELDS
}
_TYPE_NAMES: dict[type | tuple[type, ...], str] = {
    bool: "true or false",
    int: "a whole number",
    (int, float): "a number",
}


def load_policy(path: Path | None = None, **overrides: object) -> Policy:
    """The policy in ``path`` (TOML, or JSON for ``.json``), with non-``None`` overrides."""
    values: dict[str, Any] = dict(_read(path)) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ConfigurationError(
            f"rotation policy: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(FIELDS))}"
        )
    for name, value in values.items():
        expected = _TYPES[name]
        if value is None and name == "max_rps":
            continue
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise ConfigurationError(
                f"rotation policy: {name} must be {_TYPE_NAMES[expected]}, not {value!r}"
            )
    return Policy(**values)


def _read(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the rotation policy {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"rotation policy {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"rotation policy {path} must be a table of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
