"""NoteLett: a notes API whose titles and bodies are field-encrypted by field-encrypt.

The service depends on the library, never the reverse. ``create_app`` builds the
FastAPI application; ``product`` registers NoteLett with the field-encrypt CLI.

Both names are imported on first use (PEP 562): the CLI loads ``notelett.product``,
which must not pay for FastAPI.
"""

from typing import TYPE_CHECKING

from field_encrypt.lazy_names import lazy_names

if TYPE_CHECKING:
    from notelett.app import create_app
    from notelett.settings import NoteLettSettings

__all__ = ["NoteLettSettings", "create_app"]

_LAZY = {"create_app": "notelett.app", "NoteLettSettings": "notelett.settings"}


__getattr__ = lazy_names(__name__, _LAZY, globals())[0]
