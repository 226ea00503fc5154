"""The scheduled rotation's policy: when to rotate, how long to soak, how fast to go.

Read from a TOML or JSON file (``rotate --policy FILE``) whose keys are the fields of
:class:`Policy` (``max_age_days = 25``; dashes are accepted for underscores), then
overridden by flags. The file and flags are validated together by a pydantic model
(:class:`PolicyFile`: strict types, bounds, unknown keys refused, so a typo never
silently means "default"); every problem is named in one ``ConfigurationError``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
_DEFAULTS = Policy()


class PolicyFile(BaseModel):
    """The policy file's schema (with the flags applied): what :func:`load_policy` accepts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_age_days: float = Field(default=_DEFAULTS.max_age_days, ge=0)
    soak_hours: float = Field(default=_DEFAULTS.soak_hours, ge=0)
    retention_days: float = Field(default=_DEFAULTS.retention_days, ge=0)
    max_rps: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=_DEFAULTS.batch_size, ge=1)
    concurrency: int = Field(default=_DEFAULTS.concurrency, ge=1)
    sample: int = Field(default=_DEFAULTS.sample, ge=0)
    max_backup_age_hours: float = Field(default=_DEFAULTS.max_backup_age_hours, ge=0)
    stop: bool = False


def load_policy(path: Path | None = None, **overrides: object) -> Policy:
    """The policy in ``path`` (TOML, or JSON for ``.json``), with non-``None`` overrides."""
    values: dict[str, Any] = dict(_read(path)) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        checked = PolicyFile.model_validate(values)
    except ValidationError as exc:
        raise ConfigurationError(
            "rotation policy: " + "; ".join(_problem(e) for e in exc.errors())
        ) from None
    return Policy(**checked.model_dump(exclude_unset=True))


_WANTS = {
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "greater_than_equal": "must not be negative",
    "greater_than": "must be positive",
}


def _problem(error: Any) -> str:
    """One validation error as a sentence naming the setting."""
    name = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown setting {name}; known: {', '.join(sorted(FIELDS))}"
    if kind == "greater_than_equal" and error.get("ctx", {}).get("ge") == 1:
        return f"{name} must be at least 1, not {error['input']!r}"
    want = _WANTS.get(kind, str(error["msg"]).lower())
    return f"{name} {want}, not {error['input']!r}"


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
