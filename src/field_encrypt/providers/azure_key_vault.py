"""The ``akv`` provider: MEK versions are the versions of an RSA key in Azure Key Vault.

Settings: ``AZURE_KEYVAULT_URL`` (the vault) and ``FIELD_ENCRYPT_MEK_NAME`` (the key).
Credentials come from ``azure-identity``'s ``DefaultAzureCredential`` unless one is passed,
so workload identity, managed identity and federated credentials work unchanged.

- **Versions.** Every version of the Key Vault key is a MEK version; ``mekVersion`` is the
  32-hex-digit version id. ``current`` is the key's *latest* version, the one
  ``az keyvault key show`` without ``--version`` returns and the one the runbook's
  "create a new version" makes, whether or not it is enabled: every process agrees on it,
  and a disabled latest version makes start-up fail instead of quietly wrapping new DEKs
  under an older version. ``create_version`` adds a version (RSA 4096 by default,
  ``wrapKey``/``unwrapKey`` only); ``set_enabled`` sets its ``enabled`` attribute. Nothing is
  ever deleted.
- **Wrapping** seals ``dek || SHA-256(context)[:16]`` (``providers/binding.py``) with
  RSA-OAEP-256 under the version's *public* key, in this process: no call to the vault. Public
  keys are fetched once per version and cached. **Unwrapping** is remote
  (``CryptographyClient.unwrap_key``), so a rewrap costs one vault call per DEK.
- **State.** The current version and each version's ``enabled`` flag are cached for
  ``refresh_seconds`` (a wrap under a version disabled elsewhere is refused once the cache
  refreshes); the vault enforces the flag on every unwrap, whatever the cache says.
- **Retries and timeouts.** The SDK never retries a throttled (429) or failed (5xx) call: the
  caller, normally the rotation engine, backs off and honours ``retry_after``. A 200 whose
  body does not parse, or lacks the key it should carry, is transient too (a proxy cut it). Connection
  and read failures are retried only when ``max_attempts`` > 1 (default 1: no SDK retry).
  Connect and read timeouts are set, so a stalled call fails instead of hanging.

Every Azure SDK error is converted in :meth:`AzureKeyVaultProvider._boundary`.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from field_encrypt.errors import (
    ConfigurationError,
    DecryptionError,
    FieldEncryptError,
    KeyProviderError,
    KeyProviderUnavailableError,
    KeyVersionDisabledError,
    KeyVersionNotFoundError,
)
from field_encrypt.providers import binding
from field_encrypt.providers.base import KeyVersion, RewrapByUnwrapping, WrappedDek
from field_encrypt.retry_after import retry_after_from

ALGORITHM = "RSA-OAEP-256+CTX"
KEY_SIZES = (2048, 3072, 4096)
_OAEP_256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_VERSION = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(slots=True, kw_only=True)
class _Version:
    """A version's public half, its client for remote unwraps, and its cached state."""

    public_key: rsa.RSAPublicKey = field(repr=False)
    crypto: CryptographyClient = field(repr=False)
    enabled: bool
    created_at: dt.datetime
    checked_at: float


class AzureKeyVaultProvider(RewrapByUnwrapping):
    """The versions of one Key Vault RSA key as MEK versions."""

    kind = "akv"
    remote = True

    def __init__(
        self,
        *,
        vault_url: str,
        mek_name: str,
        credential: TokenCredential | None = None,
        key_size: int = 4096,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_attempts: int = 1,
        refresh_seconds: float = 60.0,
        client_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not vault_url.startswith("https://"):
            raise ConfigurationError("AZURE_KEYVAULT_URL must be an https:// vault URL")
        if not _NAME.fullmatch(mek_name):
            raise ConfigurationError(
                "FIELD_ENCRYPT_MEK_NAME must be a Key Vault key name: 1-127 letters, digits, dashes"
            )
        if key_size not in KEY_SIZES:
            raise ConfigurationError(f"FIELD_ENCRYPT_AKV_KEY_SIZE must be one of {KEY_SIZES}")
        if max_attempts < 1:
            raise ConfigurationError("FIELD_ENCRYPT_PROVIDER_MAX_ATTEMPTS must be at least 1")
        self.vault_url = vault_url.rstrip("/")
        self.mek_name = mek_name
        self.key_size = key_size
        self._owned_credential: DefaultAzureCredential | None = None
        if credential is None:
            credential = self._owned_credential = DefaultAzureCredential()
        self._credential = credential
        retries = max_attempts - 1
        self._options: dict[str, Any] = {
            "connection_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retry_total": retries,
            "retry_connect": retries,
            "retry_read": retries,
            "retry_status": 0,  # 429 and 5xx go back to the caller, with retry_after
            **(client_options or {}),
        }
        self._keys = KeyClient(self.vault_url, self._credential, **self._options)
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._versions: dict[str, _Version] = {}
        self._current: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"AzureKeyVaultProvider(vault_url={self.vault_url!r}, mek_name={self.mek_name!r})"

    def close(self) -> None:
        """Close the SDK clients' connections (and the default credential, if it made one)."""
        with self._lock:
            versions, self._versions = self._versions, {}
        for version in versions.values():
            version.crypto.close()
        self._keys.close()
        if self._owned_credential is not None:
            self._owned_credential.close()

    def __enter__(self) -> AzureKeyVaultProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------

    def versions(self) -> list[KeyVersion]:
        try:
            with self._boundary("list the key's versions"):
                listed = list(self._keys.list_properties_of_key_versions(self.mek_name))
        except KeyVersionNotFoundError:
            return []  # a key name the vault does not have yet: the protocol's rule
        if not listed:
            return []
        latest = self._fetch_current()
        found = [(p.version, bool(p.enabled), p.created_on or _EPOCH) for p in listed if p.version]
        found.sort(key=lambda v: (v[2], v[0] == latest, v[0]))
        return [
            KeyVersion(
                version=version, enabled=enabled, created_at=created, current=version == latest
            )
            for version, enabled, created in found
        ]

    def current_version(self) -> str:
        current = self._current
        if current is not None and self._clock() - current[1] < self._refresh_seconds:
            return current[0]
        return self._fetch_current()

    # -- managing ----------------------------------------------------------------------

    def create_version(self) -> KeyVersion:
        with self._boundary("create a key version"):
            key = self._keys.create_rsa_key(
                self.mek_name, size=self.key_size, key_operations=["wrapKey", "unwrapKey"]
            )
        version = self._remember(key)
        with self._lock:
            self._current = (version, self._clock())
        entry = self._versions[version]
        return KeyVersion(
            version=version, enabled=entry.enabled, created_at=entry.created_at, current=True
        )

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        self._check_version(version)
        with self._boundary(f"set version {version} enabled={enabled}"):
            key = self._keys.update_key_properties(self.mek_name, version, enabled=enabled)
        self._remember(key)
        entry = self._versions[version]
        return KeyVersion(
            version=version,
            enabled=entry.enabled,
            created_at=entry.created_at,
            current=version == self.current_version(),
        )

    # -- crypto ------------------------------------------------------------------------

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        sealed = binding.seal(dek, context)
        target = version if version is not None else self.current_version()
        entry = self._version(target, fresh=True)
        if not entry.enabled:
            raise KeyVersionDisabledError(
                f"MEK {self.mek_name!r} version {target!r} is disabled in the vault"
            )
        ciphertext = entry.public_key.encrypt(sealed, _OAEP_256)
        return WrappedDek(mek_version=target, ciphertext=ciphertext, algorithm=ALGORITHM)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        entry = self._version(version, fresh=False)
        if len(ciphertext) != entry.public_key.key_size // 8:
            raise DecryptionError()
        with self._boundary(f"unwrap a DEK under version {version}", unwrapping=True):
            result = entry.crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, ciphertext)
        if not isinstance(result.key, bytes):  # a 200 with an empty or partial body
            raise KeyProviderUnavailableError(
                f"the vault answered unwrapKey under {version} without a key"
            )
        return binding.open_(result.key, context)

    def refresh(self) -> None:
        """Ask the vault again for the current version and each version's state on the next
        call that needs them (the product's key-state epoch moved)."""
        with self._lock:
            self._current = None
            for entry in self._versions.values():
                entry.checked_at = float("-inf")

    # -- the vault ---------------------------------------------------------------------

    def _check_version(self, version: str) -> None:
        if not _VERSION.fullmatch(version):
            raise KeyVersionNotFoundError(f"MEK {self.mek_name!r} has no version {version!r}")

    def _fetch_current(self) -> str:
        with self._boundary("read the key's latest version"):
            key = self._keys.get_key(self.mek_name)
        version = self._remember(key)
        with self._lock:
            self._current = (version, self._clock())
        return version

    def _version(self, version: str, *, fresh: bool) -> _Version:
        """The cached version; fetched when unknown, or when ``fresh`` and its state is stale."""
        self._check_version(version)
        entry = self._versions.get(version)
        if entry is None or (fresh and self._clock() - entry.checked_at >= self._refresh_seconds):
            with self._boundary(f"read version {version}"):
                key = self._keys.get_key(self.mek_name, version)
            self._remember(key)
            entry = self._versions[version]
        return entry

    def _remember(self, key: KeyVaultKey) -> str:
        """Cache what the vault said about a version; its version id."""
        version = key.properties.version
        n, e = getattr(key.key, "n", None), getattr(key.key, "e", None)
        if not version or not isinstance(n, bytes) or not isinstance(e, bytes):
            if getattr(key.key, "kty", None) is None:  # a 200 with an empty or partial body
                raise KeyProviderUnavailableError(
                    f"the vault answered for key {self.mek_name!r} without a key"
                )
            raise KeyProviderError(
                f"the vault answered for key {self.mek_name!r} without an RSA key"
            )
        with self._lock:
            entry = self._versions.get(version)
            if entry is None:
                public_key = rsa.RSAPublicNumbers(
                    int.from_bytes(e, "big"), int.from_bytes(n, "big")
                ).public_key()
                entry = self._versions[version] = _Version(
                    public_key=public_key,
                    crypto=CryptographyClient(key, self._credential, **self._options),
                    enabled=bool(key.properties.enabled),
                    created_at=key.properties.created_on or _EPOCH,
                    checked_at=self._clock(),
                )
            else:
                entry.enabled = bool(key.properties.enabled)
                entry.checked_at = self._clock()
        return version

    @contextmanager
    def _boundary(self, action: str, *, unwrapping: bool = False) -> Iterator[None]:
        """Convert Azure SDK errors to the library's: the one place this provider does so."""
        try:
            yield
        except FieldEncryptError:
            raise
        except ClientAuthenticationError as exc:
            raise KeyProviderError(
                f"Key Vault refused the credential while trying to {action}", cause=exc
            ) from exc
        except HttpResponseError as exc:
            self._convert(exc, action, unwrapping)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise KeyProviderUnavailableError(
                f"Key Vault did not answer while trying to {action} ({type(exc).__name__})",
                cause=exc,
            ) from exc
        except AzureError as exc:
            raise KeyProviderError(f"Key Vault failed to {action}", cause=exc) from exc

    def _convert(self, exc: HttpResponseError, action: str, unwrapping: bool) -> NoReturn:
        status = exc.status_code or 0
        where = f"MEK {self.mek_name!r}: Key Vault answered {status} to {action}"
        if status == 403 and _inner_code(exc) == "KeyDisabled":
            raise KeyVersionDisabledError(f"{where}: the version is disabled", cause=exc) from exc
        if status == 404:
            raise KeyVersionNotFoundError(f"{where}: no such key or version", cause=exc) from exc
        if status in (408, 429) or status >= 500 or isinstance(exc, DecodeError):
            # A body that does not parse (a truncated 200) is a transport fault: retry.
            raise KeyProviderUnavailableError(
                where, cause=exc, retry_after=_retry_after(exc)
            ) from exc
        if status == 400 and unwrapping:
            raise DecryptionError() from None
        raise KeyProviderError(where, cause=exc) from exc


def _inner_code(exc: HttpResponseError) -> str | None:
    """The service's ``error.innererror.code`` (``KeyDisabled``...), if it sent one."""
    inner = getattr(exc.error, "innererror", None)
    code = inner.get("code") if isinstance(inner, dict) else None
    return code if isinstance(code, str) else None


def _retry_after(exc: HttpResponseError) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), if the service sent one."""
    return retry_after_from(getattr(exc.response, "headers", None))
