"""Settings from ``FIELD_ENCRYPT_*`` (and ``AZURE_KEYVAULT_URL``), read into a pydantic model.

pydantic gives typed parsing, ``SecretStr`` for keys (hidden from reprs) and one
validation error listing every bad variable, which :func:`load_settings` turns into a
:class:`~field_encrypt.errors.ConfigurationError` at start-up. The environment is read as
pydantic-settings' ``BaseSettings`` reads it (:mod:`field_encrypt.environment`), without
importing pydantic-settings: the CLI's start-up time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from field_encrypt.environment import EnvironmentModel, pydantic_plugins_off
from field_encrypt.errors import ConfigurationError

ProviderName = Literal["env", "local", "akv", "aws-kms", "pkcs11"]


class Settings(EnvironmentModel):
    """Every setting of the library, one environment variable each (``FIELD_ENCRYPT_`` +
    upper name); ``Settings(**values)`` reads the process environment, ``values`` first."""

    model_config = ConfigDict(populate_by_name=True)
    env_prefix: ClassVar[str] = "FIELD_ENCRYPT_"

    enabled: bool = True
    allow_plaintext: bool | None = None
    """Read plaintext found in encrypted fields as is. Unset: only while encryption is off
    (``enabled=false``); with encryption on, plaintext in an encrypted field is refused (a
    token swapped for plaintext, a value written into the database by hand). Set ``true``
    explicitly for the duration of a backfill (``encrypt-migrate --mode encrypt``) of data
    written before encryption was on; see :attr:`plaintext_allowed`."""
    key_provider: ProviderName = "local"
    mek_name: str = "field-encrypt-mek"
    database: str = "var/field-encrypt.db"
    """A SQLite file path, a ``postgresql://`` URL or a ``cosmos://`` URL (docs/stores.md)."""
    cosmos_key: SecretStr | None = None
    """The Cosmos DB account key; without it the Cosmos store signs in with Entra ID."""

    key: SecretStr | None = None
    key_version: str = "1"
    previous_keys: SecretStr = SecretStr("")
    disabled_versions: str = ""

    keyring: Path = Path("var/keyring.json")

    create_missing: bool = True
    """Whether opening may create a missing SQLite file (and its directory) or local keyring.
    The operator CLI opens with ``False`` (only ``field-encrypt init`` creates), so a typo in
    a path is an error naming it, never a fresh empty database or a new keyring."""

    azure_keyvault_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AZURE_KEYVAULT_URL", "FIELD_ENCRYPT_AZURE_KEYVAULT_URL"),
    )

    provider_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    """akv, aws-kms: how long to wait for a connection to the key service."""
    provider_read_timeout_seconds: float = Field(default=10.0, gt=0)
    """akv, aws-kms: how long to wait for an answer, so a stalled call fails, not hangs."""
    provider_max_attempts: int = Field(default=1, ge=1)
    """akv, aws-kms: attempts per call inside the SDK; 1 leaves every retry to the caller."""
    provider_refresh_seconds: float = Field(default=60.0, ge=0)
    """akv, aws-kms, pkcs11: how long the current version (and akv's version states) is cached;
    local: how often the keyring file is re-read (1 s unless set). A change made through
    field-encrypt refreshes it at once in every watching process (``key_state_poll_seconds``);
    a version disabled in the key service directly stays readable in a running process for
    at most ``cache_ttl_seconds`` plus this."""

    akv_key_size: int = 4096
    """akv: the RSA key size of versions this library creates."""

    aws_region: str | None = None
    """aws-kms: the region (default: the AWS SDK's own, e.g. AWS_REGION)."""
    aws_kms_endpoint_url: str | None = None
    """aws-kms: a non-default endpoint (a VPC endpoint, or a local KMS in tests)."""

    pkcs11_module: str | None = None
    """pkcs11: the path of the HSM's PKCS#11 library."""
    pkcs11_token: str | None = None
    """pkcs11: the token label."""
    pkcs11_pin: SecretStr | None = None
    """pkcs11: the user PIN."""
    pkcs11_mechanism: Literal["AES_KEY_WRAP_PAD", "AES_KEY_WRAP_KWP"] = "AES_KEY_WRAP_PAD"
    """pkcs11: the RFC 5649 mechanism's name in the token (SoftHSM: AES_KEY_WRAP_PAD)."""

    cache_ttl_seconds: float = Field(default=300.0, ge=0)
    """How long an unwrapped DEK (and, with the KEK tier, an unwrapped KEK) stays cached.
    It bounds memory; revocation is bounded by ``key_state_poll_seconds`` (docs/reliability.md)."""
    cache_max_entries: int = Field(default=10_000, ge=0)

    key_state_poll_seconds: float = Field(default=1.0, ge=0)
    """How often a running process reads the product's key-state epoch (one primary-key
    read); when it moved (``keys disable``, ``enable``, ``compromised``, ``retire``,
    ``shred-partition``, a completed rewrap) the affected cached keys are dropped and the
    provider's cached version states refreshed. 0 turns the watch off (TTL-only revocation)."""
    key_state_stale_seconds: float = Field(default=10.0, gt=0)
    """How long a process may go without reading the epoch (the store does not answer)
    before it stops serving keys from its cache and unwraps per read (fail closed)."""

    lazy_rewrap: bool = False
    """Rewrap in the background, rate-limited, the DEKs reads find under a MEK version other
    than the current one (``field_encrypt.lazy_rewrap``): a rotation's tail moves by itself."""
    lazy_rewrap_max_rps: float = Field(default=5.0, gt=0)
    """The lazy rewrapper's provider calls per second at most (three per DEK): its share of
    the key service's quota."""

    key_layout: Literal["direct", "kek"] = "direct"
    """Where new DEKs are wrapped: under the MEK (``direct``, the runbook's layout) or under
    a KEK of the intermediate tier (``kek``: MEK rotation rewraps only the KEKs). See
    docs/key-tier.md."""
    kek_retire_grace_seconds: float = Field(default=10.0, ge=0)
    """KEK tier: how long a retired KEK must have been retired before a migration deletes it
    (once no DEK refers to it)."""
    audit_sink: str = ""
    """Where audit events are forwarded after they are stored in the product's database:
    empty for nowhere, ``stdout``, or the path of a JSON-lines file."""
    oncall_webhook: str = ""
    """On-call notifications (rotation started, completed, failed, retire refused, compromise
    declared): a webhook URL, empty for none. See docs/audit.md."""
    oncall_format: Literal["slack", "cloudevents"] = "slack"
    """The on-call webhook's body: Slack-compatible JSON or a structured-mode CloudEvent."""

    @property
    def plaintext_allowed(self) -> bool:
        """Whether plaintext in an encrypted field is read as is: ``allow_plaintext`` when
        set, else only while encryption is off."""
        return self.allow_plaintext if self.allow_plaintext is not None else not self.enabled

    @field_validator("akv_key_size")
    @classmethod
    def _rsa_key_size(cls, value: int) -> int:
        if value not in (2048, 3072, 4096):
            raise ValueError("must be 2048, 3072 or 4096")
        return value

    @field_validator("mek_name")
    @classmethod
    def _mek_name_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class _MappingSettings(Settings):
    """Settings read from a given mapping only, never from the process environment."""

    build_on_first_use: ClassVar[bool] = True  # only load_settings(environ) uses it

    def __init__(self, **values: Any) -> None:
        BaseModel.__init__(self, **values)  # not EnvironmentModel's: no os.environ


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from ``environ`` (the process environment when ``None``) plus ``overrides``.

    Raises :class:`ConfigurationError` naming every invalid variable (never its value).
    """
    try:
        if environ is None:
            return Settings(**overrides)  # type: ignore[arg-type]
        values = {
            k[len("FIELD_ENCRYPT_") :].lower(): v
            for k, v in environ.items()
            if k.startswith("FIELD_ENCRYPT_")
        }
        if "AZURE_KEYVAULT_URL" in environ:
            values["azure_keyvault_url"] = environ["AZURE_KEYVAULT_URL"]
        values.update({k: str(v) for k, v in overrides.items()})
        if not _MappingSettings.__pydantic_complete__:  # its validator: built on first use
            with pydantic_plugins_off():  # the environment switched once, not at every call
                _MappingSettings.model_rebuild(raise_errors=False)
        return _MappingSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"FIELD_ENCRYPT_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
