"""``python -m field_encrypt.cli.migrate_main`` runs ``encrypt-migrate``."""

from field_encrypt.cli.entry import encrypt_migrate

if __name__ == "__main__":
    encrypt_migrate()
