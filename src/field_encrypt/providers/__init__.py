"""Key providers: where MEK versions live and how DEKs are wrapped under them.

``build_provider`` picks one by name; remote providers import their SDK only when chosen,
and say which extra to install when it is missing.
"""

from field_encrypt.providers.base import KeyProvider, KeyVersion, WrappedDek, dek_context

__all__ = ["KeyProvider", "KeyVersion", "WrappedDek", "dek_context"]
