"""The operator console: a small read-only web page over the same functions as the CLI.

:mod:`field_encrypt.console.panels` builds each panel's data from a product's runtime
(no web framework there); :mod:`field_encrypt.console.app` serves it with Starlette
(the ``console`` extra), and ``field-encrypt console`` runs that app with uvicorn.
See docs/console.md.
"""
