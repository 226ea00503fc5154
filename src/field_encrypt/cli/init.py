"""``field-encrypt init``: the one command that creates a product's database and keyring.

Every other command opens with nothing created (``Settings.create_missing`` false), so a
mistyped ``FIELD_ENCRYPT_DATABASE`` or ``FIELD_ENCRYPT_KEYRING`` is an error naming the
path. ``init`` creates what is missing, says what it created and what already existed,
and changes nothing on a second run.
"""

from __future__ import annotations

from typing import Any

from field_encrypt.cli import output
from field_encrypt.cli.common import JsonOpt, ProductOpt, guarded, opened

_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "cosmos": "Cosmos DB"}


@guarded
def init_command(product: ProductOpt, json_: JsonOpt = False) -> None:
    """Create the product's database (and local keyring) if missing; say what was created."""
    from field_encrypt.backends.registry import database_kind_of
    from field_encrypt.config import load_settings  # pydantic-settings: only when run

    settings = load_settings()
    keyring = settings.keyring if settings.key_provider == "local" else None
    keyring_existed = keyring.exists() if keyring is not None else True
    with opened(product, create=True) as rt:
        kind = database_kind_of(rt.database)
        path = rt.database.path if kind == "sqlite" else None
        database: dict[str, Any] = {
            "kind": kind,
            "path": path,
            "created": kind == "sqlite" and rt.database.created,
        }
        current = _current_version(rt.provider)
    data = {
        "product": product,
        "database": database,
        "keyring": None
        if keyring is None
        else {"path": str(keyring), "created": not keyring_existed},
        "key_provider": settings.key_provider,
        "current_version": current,
    }
    if json_:
        output.emit_json(data)
        return
    console = output.stdout()
    where = f"database {path}" if path else f"{_NAMES[kind]} database"
    console.print(
        f"created {where}"
        if database["created"]
        else f"{where} already existed (its tables are up to date)"
    )
    if keyring is None and current is None:
        console.print(
            f"key provider {settings.key_provider}: MEK {settings.mek_name} has no version yet "
            "(nothing created there; `field-encrypt keys create` makes the first)"
        )
    elif keyring is None:
        console.print(
            f"key provider {settings.key_provider}: current MEK version {current} "
            "(nothing created there; `field-encrypt keys create` adds a version)"
        )
    elif keyring_existed:
        console.print(f"keyring {keyring} already existed (current MEK version {current})")
    else:
        console.print(f"created keyring {keyring} with MEK version {current} (current)")


def _current_version(provider: Any) -> str | None:
    """The provider's current MEK version; ``None`` for a key service's MEK with none yet."""
    from field_encrypt.errors import KeyVersionNotFoundError

    try:
        current: str = provider.current_version()
    except KeyVersionNotFoundError:
        return None
    return current
