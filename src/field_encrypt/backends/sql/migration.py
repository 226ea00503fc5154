"""What the SQLite and PostgreSQL databases share about schema steps (no driver code)."""

from __future__ import annotations

from dataclasses import dataclass

from field_encrypt.errors import ConfigurationError

MIGRATIONS_TABLE = "field_encrypt_migrations"
"""Where applied schema steps are recorded: a name no application's framework uses."""
LEGACY_TABLE = "schema_migrations"
"""Its name in earlier builds: renamed on first open when it is ours (``name``, ``applied_at``);
Rails', golang-migrate's and other tools' tables of that name are never touched."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One named schema step; ``sql`` may hold several statements."""

    name: str
    sql: str


def is_ours(columns: set[str]) -> bool:
    """Whether a migrations table with these columns is field-encrypt's."""
    return columns == {"name", "applied_at"}


def schema_conflict(database: str, step: str, detail: str) -> ConfigurationError:
    """The error for a schema step that failed on a table or index that is not ours."""
    return ConfigurationError(
        f"schema conflict in {database}: {step} cannot be applied ({detail}); the database "
        "holds a table or index of that name that field-encrypt did not create: give "
        "field-encrypt a database (or PostgreSQL schema) of its own, or rename the other "
        "object"
    )
