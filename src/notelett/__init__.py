"""NoteLett: a notes API whose titles and bodies are field-encrypted by field-encrypt.

The service depends on the library, never the reverse. ``create_app`` builds the
FastAPI application; ``product`` registers NoteLett with the field-encrypt CLI.
"""

from notelett.app import create_app
from notelett.settings import NoteLettSettings

__all__ = ["NoteLettSettings", "create_app"]
