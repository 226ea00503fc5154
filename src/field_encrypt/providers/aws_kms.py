"""The ``aws-kms`` provider: each MEK version is its own AWS KMS key, behind one alias.

- **Versions.** MEK ``name`` is the alias ``alias/name``. Version ``N`` is a symmetric KMS key
  tagged ``field-encrypt:mek=name`` and ``field-encrypt:version=N``; the tags are the
  durable list of versions, so any process can rebuild it (``ListKeys`` +
  ``ListResourceTags``, cached per process). ``mekVersion`` is the key id. The alias points
  at the current version: ``create_version`` creates a key (``CreateKey`` with the tags)
  and moves the alias to it (``UpdateAlias``). ``set_enabled`` is ``EnableKey`` /
  ``DisableKey``. Nothing is ever scheduled for deletion.
- **Wrapping** is ``Encrypt`` under the version's key with an *encryption context* naming
  the product and dekId (see :func:`encryption_context`), which KMS authenticates and
  CloudTrail records, so no binding digest is needed. **Unwrapping** is ``Decrypt`` with
  the same context and ``KeyId`` set to the version (a ciphertext under another key fails).
  **Rewrapping** is ``ReEncrypt`` from the source to the target version with the same
  context on both sides: the plaintext DEK never leaves KMS.
- **Retries and timeouts.** botocore makes ``max_attempts`` attempts in total (default 1: no
  SDK retry, so the caller's backoff, normally the rotation engine's, is in charge), with
  explicit connect and read timeouts so a stalled call fails instead of hanging. A 200 whose
  body lacks the fields it must carry (a truncated or empty body) is transient, never a
  decryption failure and never an empty wrap.

Every botocore error is converted in :meth:`AwsKmsKeyProvider._boundary`. botocore's DEBUG
log of request and response bodies would show the plaintext DEK of every ``Encrypt`` and
``Decrypt``: importing this module installs a filter that redacts it (``_RedactPlaintext``).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoRegionError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

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
from field_encrypt.providers.base import KeyVersion, WrappedDek
from field_encrypt.retry_after import retry_after_from

ALGORITHM = "KMS-SYMMETRIC_DEFAULT"
TAG_MEK = "field-encrypt:mek"
TAG_VERSION = "field-encrypt:version"
_KEY_ID = re.compile(r"(mrk-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ALIAS = re.compile(r"[A-Za-z0-9/_-]{1,250}")
_NAMED_CONTEXTS = (
    (b"field-encrypt/dek/v1\x00", "field-encrypt:dekId"),
    (b"field-encrypt/kek/v1\x00", "field-encrypt:kekId"),
)
_DISABLED = frozenset({"DisabledException", "KMSInvalidStateException"})
_DECRYPTION = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
_TRANSIENT = frozenset(
    {
        "ThrottlingException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PLAINTEXT = re.compile(r"""(["']Plaintext["']\s*:\s*(?:b?["']))[^"']*""")


class _RedactPlaintext(logging.Filter):
    """botocore logs every request's parameters and every response body at DEBUG; for KMS
    ``Encrypt`` and ``Decrypt`` those carry the plaintext DEK. This filter, on the two
    botocore loggers that do it, replaces the value with ``<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Plaintext" in message:
            record.msg, record.args = _PLAINTEXT.sub(r"\1<redacted>", message), ()
        return True


_REDACT = _RedactPlaintext()
for _name in ("botocore.endpoint", "botocore.parsers"):
    if _REDACT not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_REDACT)


def encryption_context(context: bytes) -> dict[str, str]:
    """The KMS encryption context for a wrap's context.

    A :func:`~field_encrypt.providers.base.dek_context` becomes
    ``{"field-encrypt:product": product, "field-encrypt:dekId": dekId}`` (a KEK tier's
    ``kek_context``: ``...:kekId``), readable in CloudTrail by auditors; any other context
    becomes ``{"field-encrypt:context": base64(context)}``. Different contexts always give
    different encryption contexts.
    """
    for prefix, label in _NAMED_CONTEXTS:
        if not context.startswith(prefix):
            continue
        parts = context[len(prefix) :].split(b"\x00")
        if len(parts) == 2 and all(parts):
            try:
                product, key_id = (part.decode("utf-8") for part in parts)
            except UnicodeDecodeError:
                break
            return {"field-encrypt:product": product, label: key_id}
    return {"field-encrypt:context": base64.b64encode(context).decode("ascii")}


class AwsKmsKeyProvider:
    """MEK versions as KMS keys behind the alias ``alias/<mek_name>``."""

    kind = "aws-kms"
    remote = True

    def __init__(
        self,
        *,
        mek_name: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_attempts: int = 1,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _ALIAS.fullmatch(mek_name) or mek_name.startswith("aws/"):
            raise ConfigurationError(
                "FIELD_ENCRYPT_MEK_NAME must be a KMS alias name without 'alias/': "
                "letters, digits, '/', '_', '-', not starting with 'aws/'"
            )
        if max_attempts < 1:
            raise ConfigurationError("FIELD_ENCRYPT_PROVIDER_MAX_ATTEMPTS must be at least 1")
        self.mek_name = mek_name
        self.alias = f"alias/{mek_name}"
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
        )
        try:
            self._client: Any = (session or boto3.session.Session()).client(
                "kms", region_name=region, endpoint_url=endpoint_url, config=config
            )
        except NoRegionError:
            raise ConfigurationError(
                "aws-kms needs a region: set FIELD_ENCRYPT_AWS_REGION (or AWS_REGION)"
            ) from None
        self.region: str = self._client.meta.region_name
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._tags: dict[str, int | None] = {}  # key id -> its version number, None if not ours
        self._current: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"AwsKmsKeyProvider(region={self.region!r}, alias={self.alias!r})"

    # -- reading -----------------------------------------------------------------------

    def versions(self) -> list[KeyVersion]:
        numbered = self._numbered()
        current = self._fetch_current() if numbered else None
        listed = []
        for key_id in sorted(numbered, key=numbered.__getitem__):
            with self._boundary(f"describe version {key_id}"):
                metadata = self._client.describe_key(KeyId=key_id)["KeyMetadata"]
            listed.append(_key_version(metadata, current=key_id == current))
        return listed

    def current_version(self) -> str:
        current = self._current
        if current is not None and self._clock() - current[1] < self._refresh_seconds:
            return current[0]
        return self._fetch_current()

    # -- managing ----------------------------------------------------------------------

    def create_version(self) -> KeyVersion:
        numbered = self._numbered()
        number = max(numbered.values(), default=0) + 1
        with self._boundary("create a KMS key for a new version"):
            metadata = self._client.create_key(
                Description=f"field-encrypt MEK {self.mek_name} version {number}",
                KeyUsage="ENCRYPT_DECRYPT",
                KeySpec="SYMMETRIC_DEFAULT",
                Tags=[
                    {"TagKey": TAG_MEK, "TagValue": self.mek_name},
                    {"TagKey": TAG_VERSION, "TagValue": str(number)},
                ],
            )["KeyMetadata"]
        key_id: str = metadata["KeyId"]
        with self._lock:
            self._tags[key_id] = number
        with self._boundary(f"point {self.alias} at the new version"):
            try:
                self._client.update_alias(AliasName=self.alias, TargetKeyId=key_id)
            except self._client.exceptions.NotFoundException:
                self._client.create_alias(AliasName=self.alias, TargetKeyId=key_id)
        with self._lock:
            self._current = (key_id, self._clock())
        return _key_version(metadata, current=True)

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        self._check_version(version)
        if self._number(version) is None:
            raise KeyVersionNotFoundError(f"MEK {self.mek_name!r} has no version {version!r}")
        with self._boundary(f"{'enable' if enabled else 'disable'} version {version}"):
            if enabled:
                self._client.enable_key(KeyId=version)
            else:
                self._client.disable_key(KeyId=version)
            metadata = self._client.describe_key(KeyId=version)["KeyMetadata"]
        return _key_version(metadata, current=version == self.current_version())

    # -- crypto ------------------------------------------------------------------------

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        if len(dek) != binding.DEK_SIZE:
            raise ValueError(f"a DEK is {binding.DEK_SIZE} bytes")
        target = version if version is not None else self.current_version()
        self._check_version(target)
        with self._boundary(f"wrap a DEK under version {target}"):
            answer = self._client.encrypt(
                KeyId=target, Plaintext=dek, EncryptionContext=encryption_context(context)
            )
        return WrappedDek(
            mek_version=target, ciphertext=_blob(answer, "Encrypt"), algorithm=ALGORITHM
        )

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        self._check_version(version)
        with self._boundary(f"unwrap a DEK under version {version}", unwrapping=True):
            answer = self._client.decrypt(
                CiphertextBlob=ciphertext,
                EncryptionContext=encryption_context(context),
                KeyId=version,
            )
        plaintext = answer.get("Plaintext")
        key_id = _key_id(answer.get("KeyId"))
        if key_id is None or not isinstance(plaintext, bytes):
            raise _incomplete("Decrypt")
        if key_id != version:
            raise DecryptionError()
        return plaintext

    def rewrap(
        self, ciphertext: bytes, *, from_version: str, context: bytes, to_version: str | None = None
    ) -> WrappedDek:
        self._check_version(from_version)
        target = to_version if to_version is not None else self.current_version()
        self._check_version(target)
        bound = encryption_context(context)
        with self._boundary(f"re-encrypt a DEK from {from_version} to {target}", unwrapping=True):
            answer = self._client.re_encrypt(
                CiphertextBlob=ciphertext,
                SourceEncryptionContext=bound,
                SourceKeyId=from_version,
                DestinationKeyId=target,
                DestinationEncryptionContext=bound,
            )
        source = _key_id(answer.get("SourceKeyId"))
        ciphertext = _blob(answer, "ReEncrypt")
        if source is None:
            raise _incomplete("ReEncrypt")
        if source != from_version:
            raise DecryptionError()
        return WrappedDek(mek_version=target, ciphertext=ciphertext, algorithm=ALGORITHM)

    # -- KMS ---------------------------------------------------------------------------

    def _check_version(self, version: str) -> None:
        if not _KEY_ID.fullmatch(version):
            raise KeyVersionNotFoundError(f"MEK {self.mek_name!r} has no version {version!r}")

    def refresh(self) -> None:
        """Look the current version up again on the next call (the key-state epoch moved).
        KMS itself refuses a disabled key on every call, so nothing else is cached."""
        self._current = None

    def _fetch_current(self) -> str:
        with self._boundary(f"resolve {self.alias}"):
            try:
                key_id: str = self._client.describe_key(KeyId=self.alias)["KeyMetadata"]["KeyId"]
            except self._client.exceptions.NotFoundException:
                raise KeyVersionNotFoundError(
                    f"MEK {self.mek_name!r} has no versions yet ({self.alias} does not exist): "
                    "create one first"
                ) from None
        with self._lock:
            self._current = (key_id, self._clock())
        return key_id

    def _numbered(self) -> dict[str, int]:
        """Every key of this MEK, with its version number, from the keys' tags."""
        with self._boundary("list KMS keys"):
            key_ids = [
                key["KeyId"]
                for page in self._client.get_paginator("list_keys").paginate()
                for key in page["Keys"]
            ]
        numbered = {}
        for key_id in key_ids:
            number = self._number(key_id)
            if number is not None:
                numbered[key_id] = number
        return numbered

    def _number(self, key_id: str) -> int | None:
        """The version number a key's tags give it in this MEK (cached), or None."""
        if key_id in self._tags:
            return self._tags[key_id]
        with self._boundary(f"read the tags of key {key_id}"):
            try:
                tags = {
                    tag["TagKey"]: tag["TagValue"]
                    for page in self._client.get_paginator("list_resource_tags").paginate(
                        KeyId=key_id
                    )
                    for tag in page["Tags"]
                }
            except ClientError as exc:
                if _code(exc) not in ("AccessDeniedException", "NotFoundException"):
                    raise
                tags = {}  # another team's key, or one we may not read: not ours
        number: int | None = None
        if tags.get(TAG_MEK) == self.mek_name and tags.get(TAG_VERSION, "").isdigit():
            number = int(tags[TAG_VERSION])
        with self._lock:
            self._tags[key_id] = number
        return number

    @contextmanager
    def _boundary(self, action: str, *, unwrapping: bool = False) -> Iterator[None]:
        """Convert botocore errors to the library's: the one place this provider does so."""
        try:
            yield
        except FieldEncryptError:
            raise
        except ClientError as exc:
            self._convert(exc, action, unwrapping)
        except (BotoConnectionError, HTTPClientError) as exc:
            raise KeyProviderUnavailableError(
                f"KMS did not answer while trying to {action} ({type(exc).__name__})", cause=exc
            ) from exc
        except BotoCoreError as exc:
            raise KeyProviderError(
                f"KMS client failed to {action} ({type(exc).__name__})", cause=exc
            ) from exc
        except (KeyError, TypeError) as exc:  # a 200 whose body lacks what it must carry
            raise KeyProviderUnavailableError(
                f"KMS answered without the fields expected while trying to {action}", cause=exc
            ) from exc

    def _convert(self, exc: ClientError, action: str, unwrapping: bool) -> NoReturn:
        code = _code(exc)
        metadata = exc.response.get("ResponseMetadata", {})
        status = int(metadata.get("HTTPStatusCode") or 0)
        where = f"MEK {self.mek_name!r}: KMS answered {code} to {action}"
        if code in _DISABLED:
            raise KeyVersionDisabledError(where, cause=exc) from exc
        if code == "NotFoundException":
            raise KeyVersionNotFoundError(where, cause=exc) from exc
        if code in _DECRYPTION and unwrapping:
            raise DecryptionError() from None
        if code in _TRANSIENT or status >= 500:
            raise KeyProviderUnavailableError(
                where, cause=exc, retry_after=_retry_after(metadata.get("HTTPHeaders", {}))
            ) from exc
        raise KeyProviderError(where, cause=exc) from exc


def _incomplete(operation: str) -> KeyProviderUnavailableError:
    """A 200 whose body lacks what it must carry (truncated, or ``{}``): transient."""
    return KeyProviderUnavailableError(f"KMS answered {operation} with an incomplete body")


def _blob(answer: dict[str, Any], operation: str) -> bytes:
    """The non-empty ``CiphertextBlob`` of an answer; never an empty or missing wrap."""
    blob = answer.get("CiphertextBlob")
    if not isinstance(blob, bytes) or not blob:
        raise _incomplete(operation)
    return blob


def _key_version(metadata: dict[str, Any], *, current: bool) -> KeyVersion:
    created = metadata.get("CreationDate")
    return KeyVersion(
        version=metadata["KeyId"],
        enabled=metadata.get("KeyState") == "Enabled",
        created_at=created if isinstance(created, dt.datetime) else _EPOCH,
        current=current,
    )


def _key_id(arn: object) -> str | None:
    """The key id in a key ARN (or a bare key id)."""
    return arn.rpartition("/")[2] if isinstance(arn, str) else None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _retry_after(headers: dict[str, str]) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), if the service sent one."""
    return retry_after_from(headers)
