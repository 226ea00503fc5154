"""Names a package exports whose modules are imported on first use (PEP 562).

``field_encrypt``, ``field_encrypt.rotation`` and ``notelett`` keep their import cheap this
way (``field-encrypt --help`` needs only the error tree, the CLI loads ``notelett.product``
without FastAPI): each binds the module hooks :func:`lazy_names` gives it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, modules: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose globals are ``namespace``: a name in
    ``modules`` (name -> the module that defines it) is imported on first use and bound in
    ``namespace``, so the next use finds it there; any other name is an AttributeError."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *modules})

    return __getattr__, __dir__
