"""NoteLett's own settings, from ``NOTELETT_*`` (the library's stay in ``FIELD_ENCRYPT_*``).

Every default works on a laptop with no environment at all: SQLite in ``var/notelett.db``,
HS256 development tokens signed with a secret kept in ``var/jwt-secret`` (created on
first use, mode 0600). Production sets ``NOTELETT_JWT_ALGORITHM=RS256`` and a JWKS.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError

from field_encrypt import ConfigurationError, Settings
from field_encrypt.backends.registry import sqlite_path
from field_encrypt.environment import EnvironmentModel
from notelett.secret_checks import check_private_file, check_secret_strength

DEFAULT_DATABASE = "var/notelett.db"


class NoteLettSettings(EnvironmentModel):
    """Every NoteLett setting, one environment variable each (``NOTELETT_`` + upper name),
    read as pydantic-settings would (:mod:`field_encrypt.environment`)."""

    env_prefix: ClassVar[str] = "NOTELETT_"

    host: str = "127.0.0.1"
    port: int = Field(default=4016, ge=1, le=65535)

    database: str | None = None
    """Where notes and the dek_store live: a SQLite file, ``postgresql://...`` or
    ``cosmos://...`` (the forms ``FIELD_ENCRYPT_DATABASE`` takes); else
    ``FIELD_ENCRYPT_DATABASE``; else ``var/notelett.db``."""

    dev_mode: bool = False
    """Development only: accept weak HS256 and cursor secrets (``scripts/demo`` sets it)."""

    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: SecretStr | None = None
    """HS256 secret (at least 32 bytes). When unset, read from (or created in) the secret file."""
    jwt_secret_file: Path = Path("var/jwt-secret")
    jwt_jwks: str | None = None
    """RS256 only: a JWKS file path, or an ``https://`` URL fetched with PyJWKClient."""
    cursor_secret: SecretStr | None = None
    """Signs listing cursors (at least 32 bytes); unset: derived from the HS256 secret,
    or a per-process key with RS256."""
    jwt_issuer: str = "notelett-dev"
    jwt_audience: str = "notelett"
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300)

    max_body_bytes: int = Field(default=262_144, ge=1024)
    """Requests with a larger body are refused with 413 before the body is read in full."""

    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    """Request line plus headers above this size: 431 and the connection closed."""
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """A connection whose request headers are not complete within this is closed."""
    keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    """An idle kept-alive connection is closed after this."""
    max_connections: int = Field(default=256, ge=1)
    """When this many connections are open (the new one included) or requests run, a new
    request gets 503."""

    max_concurrent_writes: int = Field(default=8, ge=1, le=32)
    """At most this many note writes wait on the database at once (below the worker pool's
    40 threads, so writers stuck on a lock never starve reads)."""
    write_wait_seconds: float = Field(default=0.5, ge=0, le=30)
    """A write that finds every write slot taken this long is answered 503."""

    readiness_interval_seconds: float = Field(default=30.0, ge=0, le=3600)
    """Readiness asks the key provider at most once per this many seconds (0: every probe)."""

    legacy_note_binding: bool = False
    """Transition only: also read notes sealed before fields were bound to their workspace
    (such a note stays readable if its row is moved to another workspace). Run
    ``notelett rebind``, then turn it off."""

    audit_delivery_url: str | None = None
    """Deliver the audit trail to actiontrail from the service: the endpoint (http:// or
    https://). A background thread sends new events in order, at least once, resuming from
    the delivery checkpoint (docs/audit.md). Unset: no delivery from the service."""
    audit_delivery_token: SecretStr | None = None
    """Bearer token for ``audit_delivery_url``."""
    audit_delivery_interval_seconds: float = Field(default=2.0, gt=0, le=3600)
    """How often the delivery thread looks for new events once caught up."""

    kek_per_workspace: bool = False
    """With ``FIELD_ENCRYPT_KEY_LAYOUT=kek``: each workspace's new notes get DEKs under the
    workspace's own KEK (partition = workspace id), so ``field-encrypt keys shred-partition
    <workspace>`` crypto-shreds that workspace alone."""


def load_notelett_settings(**overrides: object) -> NoteLettSettings:
    """Settings from the environment plus ``overrides``; ``ConfigurationError`` when invalid."""
    try:
        return NoteLettSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"NOTELETT_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None


def database_url(settings: NoteLettSettings, encryption: Settings) -> str:
    """The database NoteLett uses: its own setting, else the library's, else the default."""
    if settings.database:
        return settings.database
    if "database" in encryption.model_fields_set:
        return encryption.database
    return DEFAULT_DATABASE


def database_path(settings: NoteLettSettings, encryption: Settings) -> str:
    """The SQLite file NoteLett uses: its own setting, else the library's, else the default."""
    if settings.database:
        return settings.database.removeprefix("sqlite:///").removeprefix("sqlite://")
    if "database" in encryption.model_fields_set:
        return sqlite_path(encryption)
    return DEFAULT_DATABASE


def hs256_secret(settings: NoteLettSettings) -> bytes:
    """The HS256 secret: the configured one, or the development file's (created if missing).

    A weak secret is refused unless ``dev_mode``; a secret file others can read, always
    (:mod:`notelett.secret_checks`)."""
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value().encode()
        setting = "NOTELETT_JWT_SECRET"
    else:
        path = settings.jwt_secret_file
        setting = f"the HS256 secret in {path}"
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    pass  # another process created it first
                else:
                    with os.fdopen(fd, "w") as out:
                        out.write(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
            check_private_file(path, what="NOTELETT_JWT_SECRET_FILE")
            secret = path.read_text().strip().encode()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read or create the HS256 secret file {path} "
                f"(NOTELETT_JWT_SECRET_FILE): {exc.strerror or type(exc).__name__}"
            ) from None
    check_secret_strength(secret, setting=setting, dev_mode=settings.dev_mode)
    return secret
