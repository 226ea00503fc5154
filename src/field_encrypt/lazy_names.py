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
    package: str,
    modules: Mapping[str, str],
    namespace: dict[str, Any],
    computed: Mapping[str, Callable[[], Any]] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose globals are ``namespace``: a name in
    ``modules`` (name -> the module that defines it) is imported on first use and bound in
    ``namespace``, so the next use finds it there; a name in ``computed`` likewise, its
    value made by calling its function (``field_encrypt.__version__``); any other name is
    an AttributeError."""
    computed = computed or {}

    def __getattr__(name: str) -> Any:
        if name in computed:
            value = computed[name]()
        else:
            module = modules.get(name)
            if module is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *modules, *computed})

    return __getattr__, __dir__
