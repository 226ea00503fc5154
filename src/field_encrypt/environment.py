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

Their validators are built when the class is made, as pydantic does, but without pydantic
plugins (``PYDANTIC_DISABLE_PLUGINS`` set meanwhile, as typer does for its parameters): the
first validator built with plugins on scans every installed distribution's entry points
for them (~10 ms of each start of the CLI), and a plugin has nothing to observe in reading
settings. Other models in the process keep their plugins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict

PLUGINS_SWITCH = "PYDANTIC_DISABLE_PLUGINS"


@contextmanager
def pydantic_plugins_off() -> Iterator[None]:
    """Validators built inside get no pydantic plugin (and so scan no entry points)."""
    previous = os.environ.get(PLUGINS_SWITCH)
    os.environ[PLUGINS_SWITCH] = "__all__"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PLUGINS_SWITCH, None)
        else:
            os.environ[PLUGINS_SWITCH] = previous


class EnvironmentModel(BaseModel):
    """A frozen model read from ``env_prefix`` + field name (see the module docstring)."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, validate_default=True, defer_build=True
    )  # each subclass's validator is built by ``__pydantic_init_subclass__``, plugins off
    env_prefix: ClassVar[str] = ""
    build_on_first_use: ClassVar[bool] = False
    """Leave the validator to be built on first use (``defer_build``), not with the class."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Build the new model's validator now, as pydantic would, but without plugins."""
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.build_on_first_use:
            with pydantic_plugins_off():
                cls.model_rebuild(raise_errors=False)

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
