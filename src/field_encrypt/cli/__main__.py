"""``python -m field_encrypt.cli`` runs ``field-encrypt``."""

from field_encrypt.cli.main import main

main()
