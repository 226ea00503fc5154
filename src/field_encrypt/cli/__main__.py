"""``python -m field_encrypt.cli`` runs ``field-encrypt``."""

from field_encrypt.cli.entry import field_encrypt

field_encrypt()
