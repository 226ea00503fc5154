"""NoteLett as a field-encrypt product: ``field-encrypt ... --product notelett``.

Registered under the ``field_encrypt.products`` entry point. ``open`` reads NoteLett's
own settings (``NOTELETT_*``) from the environment, so the CLI finds the same database
as the service when both run with the same environment.
"""

from __future__ import annotations

from field_encrypt import Settings
from field_encrypt.products import Product, ProductRuntime
from notelett.backend import COLLECTIONS, PRODUCT, open_backend
from notelett.settings import load_notelett_settings
from notelett.tags import INDEXED


def open_runtime(settings: Settings) -> ProductRuntime:
    """The runtime the rotation tools use: provider, dek_store, notes, database."""
    return open_backend(settings, load_notelett_settings()).runtime


product = Product(name=PRODUCT, collections=COLLECTIONS, open=open_runtime, indexed=INDEXED)
