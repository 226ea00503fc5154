"""The ``pkcs11`` provider: MEK versions are AES-256 keys inside an HSM, reached through PKCS#11.

Any PKCS#11 module works (a network HSM's client library, a cloud HSM, SoftHSM2 in tests):
``FIELD_ENCRYPT_PKCS11_MODULE`` is the library path, ``FIELD_ENCRYPT_PKCS11_TOKEN`` the token
label and ``FIELD_ENCRYPT_PKCS11_PIN`` the user PIN.

- **Versions.** Version ``N`` of MEK ``name`` is the token's secret key labelled
  ``name-vN``: AES-256, generated inside the token, ``CKA_SENSITIVE`` and never extractable,
  allowed to wrap and unwrap only. ``mekVersion`` is ``"N"``; the highest is current. Its
  ``CKA_ID`` holds its creation time (ISO 8601), which the token has no attribute for.
- **Wrapping.** The DEK and the digest of its context (``providers/binding.py``) are
  imported as a 48-byte session secret and wrapped by ``C_WrapKey`` with AES key wrap with
  padding (RFC 5649) under the MEK, inside the token; unwrapping is ``C_UnwrapKey`` into a
  readable session object whose value is read back and checked. Session objects are
  destroyed at once. The mechanism is ``CKM_AES_KEY_WRAP_PAD`` by default (what SoftHSM 2.6
  implements RFC 5649 as); HSMs that implement the PKCS#11 3.0 name take
  ``AES_KEY_WRAP_KWP``.
- **Disabling** clears ``CKA_WRAP`` and ``CKA_UNWRAP`` on the MEK, so the token itself refuses
  it (``CKR_KEY_FUNCTION_NOT_PERMITTED``); enabling sets both. Nothing is ever destroyed.

**Sessions.** PKCS#11 keeps the login per application, not per session: a second
``C_Login`` fails and any ``C_Logout`` logs every session out. So the providers of one
process share one logged-in session per (module, token), opened by the first provider
(a wrong module, token or PIN fails its construction) and closed when the last one closes.
The session is used under a lock, as PKCS#11 sessions are not safe to share between
threads; one the token drops is reopened on the next call.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, ClassVar, NoReturn

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

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

ALGORITHM = "AES-KWP+CTX"
MECHANISMS = {
    "AES_KEY_WRAP_PAD": Mechanism.AES_KEY_WRAP_PAD,  # 0x210A, SoftHSM's RFC 5649
    "AES_KEY_WRAP_KWP": Mechanism.AES_KEY_WRAP_KWP,  # 0x210B, PKCS#11 3.0's RFC 5649
}
_KEY_FUNCTION_NOT_PERMITTED = 0x68
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_DECRYPTION_ERRORS = (
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.GeneralError,  # SoftHSM's answer to a failed RFC 5649 integrity check
)
_SESSION_ERRORS = (
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.UserNotLoggedIn,
)
_TRANSIENT_ERRORS = (*_SESSION_ERRORS, p11.DeviceError, p11.DeviceMemory, p11.FunctionCancelled)


class _Connection:
    """The one logged-in session of this process on a (module, token); reference-counted."""

    _open: ClassVar[dict[tuple[str, str], _Connection]] = {}
    _open_lock = threading.Lock()

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        self.key = (module, token_label)
        self.lock = threading.Lock()
        self.generation = 0  # bumped on each (re)open: object handles die with their session
        self._pin = pin
        self._users = 0
        self._session: Any = None
        self.mechanisms: frozenset[Any] = frozenset()

    @classmethod
    def acquire(cls, module: str, token_label: str, pin: str) -> _Connection:
        with cls._open_lock:
            connection = cls._open.get((module, token_label))
            if connection is None:
                connection = cls(module, token_label, pin)
                with connection.lock:
                    connection.open()
                cls._open[connection.key] = connection
            elif not hmac.compare_digest(pin.encode(), connection._pin.encode()):
                raise ConfigurationError(
                    f"token {token_label!r} is already open in this process with another "
                    "FIELD_ENCRYPT_PKCS11_PIN"
                )
            connection._users += 1
            return connection

    def release(self) -> None:
        with _Connection._open_lock:
            self._users -= 1
            if self._users > 0:
                return
            del _Connection._open[self.key]
            with self.lock:
                if self._session is not None:
                    session, self._session = self._session, None
                    with suppress(p11.PKCS11Error):  # closing a dead session: nothing to do
                        session.close()

    def session(self) -> Any:
        """The session, reopened if it was dropped; call with ``lock`` held."""
        if self._session is None:
            self.open()
        return self._session

    def drop(self) -> None:
        """Forget a session the token no longer knows; call with ``lock`` held."""
        self._session = None

    def open(self) -> None:
        module, token_label = self.key
        try:
            token = pkcs11.lib(module).get_token(token_label=token_label)
        except p11.NoSuchToken:
            raise ConfigurationError(
                f"PKCS#11 module {module!r} has no token labelled {token_label!r} "
                "(FIELD_ENCRYPT_PKCS11_TOKEN)"
            ) from None
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"cannot load PKCS#11 module {module!r} (FIELD_ENCRYPT_PKCS11_MODULE)"
            ) from exc
        try:
            self._session = token.open(user_pin=self._pin, rw=True)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked) as exc:
            raise ConfigurationError(
                f"token {token_label!r} refused FIELD_ENCRYPT_PKCS11_PIN ({type(exc).__name__})"
            ) from None
        except _TRANSIENT_ERRORS as exc:
            raise KeyProviderUnavailableError(
                f"cannot open a session on token {token_label!r}", cause=exc
            ) from exc
        except p11.PKCS11Error as exc:
            raise KeyProviderError(
                f"cannot open a session on token {token_label!r}", cause=exc
            ) from exc
        self.mechanisms = frozenset(token.slot.get_mechanisms())
        self.generation += 1


class Pkcs11KeyProvider(RewrapByUnwrapping):
    """MEK versions ``"1"``, ``"2"``... as non-extractable AES-256 keys in a PKCS#11 token."""

    kind = "pkcs11"
    remote = False

    def __init__(
        self,
        *,
        module: str,
        token_label: str,
        pin: str,
        mek_name: str,
        mechanism: str = "AES_KEY_WRAP_PAD",
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mechanism not in MECHANISMS:
            raise ConfigurationError(
                f"FIELD_ENCRYPT_PKCS11_MECHANISM must be one of {sorted(MECHANISMS)}"
            )
        if not token_label:
            raise ConfigurationError("FIELD_ENCRYPT_PKCS11_TOKEN (the token label) is required")
        self.mek_name = mek_name
        self.module = module
        self.token_label = token_label
        self._mechanism = MECHANISMS[mechanism]
        self._label = re.compile(re.escape(mek_name) + r"-v([1-9][0-9]{0,8})")
        self._meks: dict[str, Any] = {}
        self._generation = 0
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._latest: tuple[str, float] | None = None  # the current version, and when it was read
        self._connection: _Connection | None = _Connection.acquire(module, token_label, pin)
        if self._mechanism not in self._connection.mechanisms:
            self.close()
            raise ConfigurationError(
                f"token {token_label!r} does not offer {mechanism} (FIELD_ENCRYPT_PKCS11_MECHANISM)"
            )

    def __repr__(self) -> str:
        return (
            f"Pkcs11KeyProvider(module={self.module!r}, token_label={self.token_label!r}, "
            f"mek_name={self.mek_name!r})"
        )

    def close(self) -> None:
        """Let go of the shared session (closed, and logged out, with its last provider)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()

    def __enter__(self) -> Pkcs11KeyProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------

    def versions(self) -> list[KeyVersion]:
        with self._locked("list MEK versions") as session:
            found = self._scan(session)
            listed = [(number, _describe(key)) for number, key in found]
        latest = listed[-1][0] if listed else None
        return [
            KeyVersion(
                version=str(number),
                enabled=enabled,
                created_at=created_at,
                current=number == latest,
            )
            for number, (enabled, created_at) in listed
        ]

    def current_version(self) -> str:
        with self._locked("find the current MEK version") as session:
            return self._cached_current(session)

    # -- managing ----------------------------------------------------------------------

    def create_version(self) -> KeyVersion:
        created_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        with self._locked("create a MEK version") as session:
            found = self._scan(session)
            number = found[-1][0] + 1 if found else 1
            key = session.generate_key(
                KeyType.AES,
                256,
                label=f"{self.mek_name}-v{number}",
                id=created_at.isoformat().encode(),
                store=True,
                capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                template={
                    Attribute.EXTRACTABLE: False,
                    Attribute.SENSITIVE: True,
                    Attribute.PRIVATE: True,
                    Attribute.MODIFIABLE: True,
                },
            )
            self._meks[str(number)] = key
            self._latest = (str(number), self._clock())
        return KeyVersion(version=str(number), enabled=True, created_at=created_at, current=True)

    def set_enabled(self, version: str, enabled: bool) -> KeyVersion:
        with self._locked(f"set MEK version {version!r} enabled={enabled}") as session:
            key = self._mek(session, version)
            key[Attribute.WRAP] = enabled
            key[Attribute.UNWRAP] = enabled
            state, created_at = _describe(key)
            current = self._current(session) == version
        return KeyVersion(version=version, enabled=state, created_at=created_at, current=current)

    # -- crypto ------------------------------------------------------------------------

    def wrap(self, dek: bytes, *, context: bytes, version: str | None = None) -> WrappedDek:
        sealed = binding.seal(dek, context)
        with self._locked("wrap a DEK") as session:
            target = version if version is not None else self._cached_current(session)
            mek = self._able(session, target, "wrap_key")
            sealed_object = session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                    Attribute.VALUE: sealed,
                    Attribute.TOKEN: False,
                    Attribute.EXTRACTABLE: True,
                    Attribute.SENSITIVE: False,
                }
            )
            try:
                wrapped: bytes = mek.wrap_key(sealed_object, mechanism=self._mechanism)
            finally:
                sealed_object.destroy()
        return WrappedDek(mek_version=target, ciphertext=wrapped, algorithm=ALGORITHM)

    def unwrap(self, ciphertext: bytes, *, version: str, context: bytes) -> bytes:
        with self._locked("unwrap a DEK", unwrapping=True) as session:
            mek = self._able(session, version, "unwrap_key")
            if len(ciphertext) != binding.SEALED_SIZE + 8:
                raise DecryptionError()
            sealed_object = mek.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                ciphertext,
                mechanism=self._mechanism,
                capabilities=MechanismFlag(0),
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            try:
                sealed: bytes = sealed_object[Attribute.VALUE]
            finally:
                sealed_object.destroy()
        return binding.open_(sealed, context)

    # -- the token ---------------------------------------------------------------------

    @contextmanager
    def _locked(self, action: str, *, unwrapping: bool = False) -> Iterator[Any]:
        """The session, under the lock, with PKCS#11 errors converted (the one boundary)."""
        connection = self._connection
        if connection is None:
            raise KeyProviderError(f"{self!r} is closed")
        with connection.lock:
            session = connection.session()
            if connection.generation != self._generation:
                self._meks.clear()
                self._generation = connection.generation
            try:
                yield session
            except FieldEncryptError:
                raise
            except p11.PKCS11Error as exc:
                if isinstance(exc, _SESSION_ERRORS):
                    connection.drop()  # reopened on the next call
                self._convert(exc, action, unwrapping)

    def _convert(self, exc: p11.PKCS11Error, action: str, unwrapping: bool) -> NoReturn:
        if _return_value(exc) == _KEY_FUNCTION_NOT_PERMITTED:
            raise KeyVersionDisabledError(
                f"MEK {self.mek_name!r}: the token refused to {action}: the version is disabled",
                cause=exc,
            ) from exc
        if unwrapping and isinstance(exc, _DECRYPTION_ERRORS):
            raise DecryptionError() from None
        if isinstance(exc, _TRANSIENT_ERRORS):
            raise KeyProviderUnavailableError(
                f"MEK {self.mek_name!r}: the token failed to {action} ({type(exc).__name__})",
                cause=exc,
            ) from exc
        raise KeyProviderError(
            f"MEK {self.mek_name!r}: the token failed to {action} ({type(exc).__name__})",
            cause=exc,
        ) from exc

    def _scan(self, session: Any) -> list[tuple[int, Any]]:
        """This MEK's version keys in the token, by version number."""
        found: dict[int, Any] = {}
        for key in session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
        ):
            match = self._label.fullmatch(key[Attribute.LABEL])
            if match is None:
                continue
            number = int(match.group(1))
            if number in found:
                raise KeyProviderError(
                    f"token {self.token_label!r} holds two keys labelled {key[Attribute.LABEL]!r}"
                )
            found[number] = key
        return sorted(found.items(), key=lambda item: item[0])

    def refresh(self) -> None:
        """Look the current version up again on the next call (the key-state epoch moved)."""
        self._latest = None

    def _cached_current(self, session: Any) -> str:
        """The current version, looked up again after ``refresh_seconds`` (other processes may
        have created one): finding it scans the token's keys, a round trip each on a network HSM."""
        latest = self._latest
        if latest is not None and self._clock() - latest[1] < self._refresh_seconds:
            return latest[0]
        return self._current(session)

    def _current(self, session: Any) -> str:
        found = self._scan(session)
        if not found:
            raise KeyVersionNotFoundError(
                f"token {self.token_label!r} holds no version of MEK {self.mek_name!r} "
                f"(no key labelled {self.mek_name}-v1): create one first"
            )
        number, key = found[-1]
        self._meks[str(number)] = key
        self._latest = (str(number), self._clock())
        return str(number)

    def _mek(self, session: Any, version: str) -> Any:
        if not _VERSION.fullmatch(version):
            raise KeyVersionNotFoundError(f"MEK {self.mek_name!r} has no version {version!r}")
        key = self._meks.get(version)
        if key is None:
            label = f"{self.mek_name}-v{version}"
            keys = list(
                session.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}
                )
            )
            if not keys:
                raise KeyVersionNotFoundError(f"MEK {self.mek_name!r} has no version {version!r}")
            if len(keys) > 1:
                raise KeyProviderError(
                    f"token {self.token_label!r} holds two keys labelled {label!r}"
                )
            key = self._meks[version] = keys[0]
        return key

    def _able(self, session: Any, version: str, method: str) -> Any:
        """The MEK object, if it may ``method`` (``wrap_key``, ``unwrap_key``).

        python-pkcs11 gives an object the methods its CKA_WRAP/CKA_UNWRAP allowed when it was
        looked up; a version enabled since then is looked up again. A key that was already
        enabled goes to the token, which enforces a later disable itself.
        """
        key = self._mek(session, version)
        if not hasattr(key, method):
            self._meks.pop(version, None)
            key = self._mek(session, version)
            if not hasattr(key, method):
                raise KeyVersionDisabledError(
                    f"MEK {self.mek_name!r} version {version!r} is disabled in the token"
                )
        return key


def _describe(key: Any) -> tuple[bool, dt.datetime]:
    """(enabled, created_at) of a MEK version key."""
    enabled = bool(key[Attribute.WRAP]) and bool(key[Attribute.UNWRAP])
    try:
        created_at = dt.datetime.fromisoformat(bytes(key[Attribute.ID]).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        created_at = _EPOCH  # a key made by other tooling, with another CKA_ID
    return enabled, created_at


def _return_value(exc: p11.PKCS11Error) -> int | None:
    """The CKR_ code of an error python-pkcs11 has no class for ("Unmapped error code 0x68")."""
    match = re.search(r"0x([0-9a-fA-F]+)$", str(exc))
    return int(match.group(1), 16) if match and type(exc) is p11.PKCS11Error else None
