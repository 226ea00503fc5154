"""NoteLett: a notes API whose titles and bodies are field-encrypted by field-encrypt.

The service depends on the library, never the reverse. ``create_app`` builds the
FastAPI application; ``product`` registers NoteLett with the field-encrypt CLI.

Both names are imported on first use (PEP 562): the CLI loads ``notelett.product``,
which must not pay for FastAPI.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notelett.app import create_app
    from notelett.settings import NoteLettSettings

__all__ = ["NoteLettSettings", "create_app"]

_LAZY = {"create_app": "notelett.app", "NoteLettSettings": "notelett.settings"}


def __getattr__(name: str) -> Any:
    """A public name whose module is imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'notelett' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
