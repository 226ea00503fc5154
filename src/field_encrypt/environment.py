"""Settings models that read their fields from the process environment (no pydantic-settings).

:class:`EnvironmentModel` is a frozen pydantic model whose constructor takes each field
from the environment variable ``env_prefix + name`` (or, for a field with a
``validation_alias``, the first of the alias names that is set), names matched without
regard to case; keyword arguments take precedence over the environment, the environment
over the defaults, and defaults are validated too. That is what pydantic-settings'
``BaseSettings`` does with no ``.env`` file and no secrets directory, for fields whose
types are scalars (strings, numbers, booleans, literals, paths, ``SecretStr``, each
optionally ``None``), the only kinds the settings here have. It exists for start-up time:
importing pydantic-settings costs about 80 ms of CPU at every start of the CLI
(docs/performance.md). tests/unit/test_environment.py compares both readers on the same
environments, values and errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict


class EnvironmentModel(BaseModel):
    """A frozen model read from ``env_prefix`` + field name (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)
    env_prefix: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**environment_values(type(self), os.environ), **values})


def environment_values(model: type[EnvironmentModel], environ: Mapping[str, str]) -> dict[str, str]:
    """The values ``environ`` sets for ``model``'s fields, by field name, as strings."""
    lowered = {name.lower(): value for name, value in environ.items()}
    found: dict[str, str] = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            candidates = [choice for choice in alias.choices if isinstance(choice, str)]
        elif isinstance(alias, str):
            candidates = [alias]
        else:
            candidates = [model.env_prefix + name]
        for candidate in candidates:
            if candidate.lower() in lowered:
                found[name] = lowered[candidate.lower()]
                break
    return found
