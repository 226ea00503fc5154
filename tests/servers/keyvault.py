"""A local HTTPS server speaking the Azure Key Vault *keys* REST protocol, for tests and benchmarks.

It is driven by the real SDKs: ``azure-keyvault-keys`` (``KeyClient``, ``CryptographyClient``) and
a real ``azure.identity.ClientSecretCredential`` pointed at the token endpoint this server serves.

What is real:

- HTTPS (a throwaway CA from ``tls.py``), HTTP/1.1 keep-alive with ``Content-Length``, TCP_NODELAY.
- The Key Vault challenge: a request without ``Authorization`` gets 401 with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``. A token must be one this server issued (or any non-empty
  bearer token with ``accept_any_token=True``).
- A Microsoft Entra client-credentials token endpoint: ``GET /{tenant}/v2.0/.well-known/
  openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token`` (checks client id and secret).
- Keys (RSA 2048/3072/4096, real ``cryptography`` keys): create (a new version each call), get
  (latest or a version; a disabled key can still be read), list versions (paged with ``nextLink``
  and ``maxresults`` 1..25, ordered by version id, not by age, as the service does), update
  (``enabled``, ``nbf``, ``exp``, ``key_ops``, tags), wrapkey/unwrapkey and encrypt/decrypt with
  RSA-OAEP and RSA-OAEP-256. Values are base64url without padding; times are unix seconds.
- Errors in the service's shape ``{"error": {"code", "message", "innererror": {"code"}}}``:
  a disabled version answers crypto calls with 403 ``Forbidden``/``KeyDisabled``; an operation
  missing from ``key_ops`` gets 403 ``Forbidden``/``KeyOperationForbidden``; an unknown key or
  version 404 ``KeyNotFound``; a bad value, algorithm or ciphertext 400 ``BadParameter``;
  throttling 429 ``Throttled`` with ``Retry-After``.

What is simplified:

- One vault, in memory; RSA only (no EC, oct, HSM, import, delete, backup, rotation policy).
- ``nbf``/``exp`` are stored and returned but not enforced; RSA1_5 is not offered.
- Error messages for bad values and algorithms are close to, not copied from, the service's.
- One throttle (a sliding window over all authenticated vault requests, the rejected ones
  included, as the service counts them), not the service's per-operation limits. The real service
  may omit ``Retry-After``; this one always sends it.
- Tokens are opaque random strings that never expire here; ``api-version`` must be present but
  any value is accepted.

Fault injection and limits apply to authenticated vault requests only (never to the 401
challenge or the token endpoint), in this order: the one-shot fault queue (``inject``), then the
throttle, then the operation, then ``latency`` on crypto calls. Counters are in ``stats``;
``journal`` lists each authenticated vault request's arrival time and outcome (the fault or
throttle that answered it, else its operation), so a test can measure a client's backoff.

No key material is printed or logged; the request log is off.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import json
import math
import re
import secrets
import signal
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, get_args
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.servers.tls import make_loopback_tls

__all__ = ["KEY_SIZES", "FaultKind", "KeyVaultServer"]

FaultKind = Literal["429", "503", "drop", "malformed", "empty_json", "stall"]
KEY_SIZES = frozenset({2048, 3072, 4096})
VAULT_RESOURCE = "https://vault.azure.net"
DEFAULT_TENANT_ID = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
DEFAULT_CLIENT_ID = "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f"
DEFAULT_CLIENT_SECRET = "field-encrypt-local-test-secret"

_RSA_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
_CRYPTO_OPS = {
    "wrapkey": "wrapKey",
    "unwrapkey": "unwrapKey",
    "encrypt": "encrypt",
    "decrypt": "decrypt",
}
_PUBLIC_OPS = frozenset({"wrapkey", "encrypt"})
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "RSA-OAEP": hashes.SHA1,
    "RSA-OAEP-256": hashes.SHA256,
}
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9a-f]{32}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_MAX_PAGE = 25
_NOT_FOUND_HINT = (
    " was not found in this key vault. If you recently deleted this key you may be able to recover"
    " it using the correct recovery command. For help resolving this issue, please see"
    " https://go.microsoft.com/fwlink/?linkid=2125182"
)
_THROTTLED = {
    "error": {
        "code": "Throttled",
        "message": "Request was not processed because too many requests were received."
        " Reason: VaultRequestTypeLimitReached",
    }
}


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: object) -> bytes:
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def _uint(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class _KeyVersion:
    """One version of a key; the private key never leaves this process and never enters a repr."""

    version: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    key_ops: tuple[str, ...]
    enabled: bool
    created: int
    updated: int
    nbf: int | None = None
    exp: int | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Key:
    name: str
    versions: dict[str, _KeyVersion] = field(default_factory=dict)
    latest: str = ""


class _VaultError(Exception):
    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def _bad(message: str) -> _VaultError:
    return _VaultError(400, "BadParameter", message)


def _not_found(name: str, version: str = "") -> _VaultError:
    key_id = f"{name}/{version}" if version else name
    return _VaultError(404, "KeyNotFound", f"A key with (name/id) {key_id}{_NOT_FOUND_HINT}")


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, obj: object, *headers: tuple[str, str]) -> _Reply:
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), headers)


class _Vault:
    """The keys of one vault and the REST operations on them; thread-safe."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()

    def dispatch(
        self, method: str, segments: list[str], query: dict[str, str], body: Any
    ) -> tuple[str, Any]:
        """Run one request under ``/keys``: return (operation, JSON body) or raise _VaultError."""
        if len(segments) < 2 or segments[0] != "keys":
            raise _VaultError(
                501, "NotImplemented", f"{method} /{'/'.join(segments)} is not served here"
            )
        name, rest = segments[1], segments[2:]
        if not _NAME.fullmatch(name):
            raise _bad(f"The request URI contains an invalid name: {name}")
        match method, rest:
            case "POST", ["create"]:
                return "create", self._create(name, body)
            case "GET", [] | [""]:
                return "get", self._bundle(*self._find(name, ""))
            case "GET", ["versions"]:
                return "list_versions", self._list_versions(name, query)
            case "GET", [version]:
                return "get", self._bundle(*self._find(name, self._checked(method, version)))
            case "PATCH", [version]:
                return "update", self._update(name, self._checked(method, version), body)
            case "POST", [op] if op in _CRYPTO_OPS:
                return op, self._crypto(op, name, "", body)
            case "POST", [version, op] if op in _CRYPTO_OPS:
                return op, self._crypto(op, name, self._checked(method, version), body)
        raise _VaultError(
            501, "NotImplemented", f"{method} {'/'.join(segments)} is not served here"
        )

    @staticmethod
    def _checked(method: str, version: str) -> str:
        """An empty version means the latest; anything else must look like a version id."""
        if version == "" or _VERSION.fullmatch(version):
            return version
        raise _bad(f"Method {method} does not allow operation '{version}'")

    def _find(self, name: str, version: str) -> tuple[str, _KeyVersion]:
        with self._lock:
            key = self._keys.get(name.lower())
            if key is None:
                raise _not_found(name)
            found = key.versions.get(version or key.latest)
            if found is None:
                raise _not_found(name, version)
            return key.name, found

    def _create(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("kty") != "RSA":
            raise _bad(
                "Key type must be RSA on this test server (EC, oct and HSM keys are not served)."
            )
        size = body.get("key_size") or 2048
        if size not in KEY_SIZES:
            raise _bad(f"Key size {size} is not supported; use one of {sorted(KEY_SIZES)}.")
        if body.get("public_exponent") not in (None, 65537):
            raise _bad("Only the public exponent 65537 is supported.")
        key_ops = tuple(body.get("key_ops") or _RSA_OPS)
        if not set(key_ops) <= set(_RSA_OPS):
            raise _bad(f"Invalid key_ops: {sorted(set(key_ops) - set(_RSA_OPS))}")
        attributes = body.get("attributes") or {}
        now = int(time.time())
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=size)
        created = _KeyVersion(
            version=uuid.uuid4().hex,
            private_key=private_key,
            key_ops=key_ops,
            enabled=attributes.get("enabled", True) is not False,
            created=now,
            updated=now,
            nbf=attributes.get("nbf"),
            exp=attributes.get("exp"),
            tags=dict(body.get("tags") or {}),
        )
        with self._lock:
            key = self._keys.setdefault(name.lower(), _Key(name))
            key.versions[created.version] = created
            key.latest = created.version
            return self._bundle(key.name, created)

    def _list_versions(self, name: str, query: dict[str, str]) -> dict[str, Any]:
        try:
            size = int(query.get("maxresults", _MAX_PAGE))
            start = int(query.get("$skiptoken", "0"))
        except ValueError as exc:
            raise _bad("Invalid maxresults or $skiptoken.") from exc
        if not 1 <= size <= _MAX_PAGE or start < 0:
            raise _bad(f"maxresults must be between 1 and {_MAX_PAGE}.")
        with self._lock:
            key = self._keys.get(name.lower())
            if key is None:
                raise _not_found(name)
            items = [self._item(key.name, v) for _, v in sorted(key.versions.items())]
        page = items[start : start + size]
        more = start + size < len(items)
        next_link = (
            f"{self._url}/keys/{name}/versions?api-version={query.get('api-version', '')}"
            f"&$skiptoken={start + size}&maxresults={size}"
        )
        return {"value": page, "nextLink": next_link if more else None}

    def _update(self, name: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        attributes = body.get("attributes") or {}
        key_ops = body.get("key_ops")
        if key_ops is not None and not set(key_ops) <= set(_RSA_OPS):
            raise _bad(f"Invalid key_ops: {sorted(set(key_ops) - set(_RSA_OPS))}")
        with self._lock:
            key = self._keys.get(name.lower())
            old = key.versions.get(version or key.latest) if key else None
            if key is None or old is None:
                raise _not_found(name, version)
            new = replace(
                old,
                enabled=attributes.get("enabled", old.enabled) is not False,
                nbf=attributes.get("nbf", old.nbf),
                exp=attributes.get("exp", old.exp),
                key_ops=tuple(key_ops) if key_ops is not None else old.key_ops,
                tags=dict(body["tags"]) if body.get("tags") is not None else old.tags,
                updated=int(time.time()),
            )
            key.versions[new.version] = new
            return self._bundle(key.name, new)

    def _crypto(self, op: str, name: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        display_name, key = self._find(name, version)
        jwk_op = _CRYPTO_OPS[op]
        if not key.enabled:
            raise _VaultError(
                403,
                "Forbidden",
                f"Operation {jwk_op} is not allowed on a disabled key.",
                "KeyDisabled",
            )
        if jwk_op not in key.key_ops:
            raise _VaultError(
                403,
                "Forbidden",
                f"Operation {jwk_op} is not permitted on this key.",
                "KeyOperationForbidden",
            )
        hash_type = _HASHES.get(body.get("alg", ""))
        if hash_type is None:
            raise _bad(
                f"Algorithm {body.get('alg')!r} is not supported for {jwk_op} on an RSA key."
            )
        try:
            value = _unb64u(body.get("value"))
        except ValueError as exc:
            raise _bad(
                "Content of 'value' is not base64url.\r\nProperty 'value' is required."
            ) from exc
        oaep = padding.OAEP(mgf=padding.MGF1(hash_type()), algorithm=hash_type(), label=None)
        try:
            if op in _PUBLIC_OPS:
                result = key.private_key.public_key().encrypt(value, oaep)
            else:
                result = key.private_key.decrypt(value, oaep)
        except ValueError as exc:
            if op in _PUBLIC_OPS:
                raise _bad("The value is too long for this key and algorithm.") from exc
            raise _bad("Unable to decrypt specified value with this key.") from exc
        return {"kid": self._kid(display_name, key), "value": _b64u(result)}

    def _kid(self, name: str, key: _KeyVersion) -> str:
        return f"{self._url}/keys/{name}/{key.version}"

    def _attributes(self, key: _KeyVersion) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": key.enabled,
            "created": key.created,
            "updated": key.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
            "exportable": False,
        }
        for label, value in (("nbf", key.nbf), ("exp", key.exp)):
            if value is not None:
                attributes[label] = value
        return attributes

    def _item(self, name: str, key: _KeyVersion) -> dict[str, Any]:
        item: dict[str, Any] = {"kid": self._kid(name, key), "attributes": self._attributes(key)}
        if key.tags:
            item["tags"] = key.tags
        return item

    def _bundle(self, name: str, key: _KeyVersion) -> dict[str, Any]:
        public = key.private_key.public_key().public_numbers()
        jwk = {
            "kid": self._kid(name, key),
            "kty": "RSA",
            "key_ops": list(key.key_ops),
            "n": _b64u(_uint(public.n)),
            "e": _b64u(_uint(public.e)),
        }
        bundle: dict[str, Any] = {"key": jwk, "attributes": self._attributes(key)}
        if key.tags:
            bundle["tags"] = key.tags
        return bundle


class _SlidingWindow:
    """At most ``limit`` requests in any ``window`` seconds; rejected attempts count too."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("throttle needs limit_per_window >= 1 and window_seconds > 0")
        self.limit, self.window, self._clock = limit, window, clock
        self._times: collections.deque[float] = collections.deque()

    def admit(self) -> int | None:
        """Record an attempt; return None if admitted, else the seconds to wait (Retry-After)."""
        now = self._clock()
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        self._times.append(now)
        if len(self._times) <= self.limit:
            return None
        frees_at = self._times[len(self._times) - self.limit] + self.window
        return max(1, math.ceil(frees_at - now))


class KeyVaultServer:
    """An Azure Key Vault (keys) look-alike on ``https://127.0.0.1:<port>``, served from a thread.

    Use as a context manager, or call ``start()`` and ``stop()``. Point SDK clients at ``url``
    with ``connection_verify=str(ca_cert)`` and ``verify_challenge_resource=False``, and a
    ``ClientSecretCredential(tenant_id, client_id, client_secret, authority=authority,
    disable_instance_discovery=True, connection_verify=str(ca_cert))``.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        limit_per_window: int | None = None,
        window_seconds: float = 10.0,
        tenant_id: str = DEFAULT_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        accept_any_token: bool = False,
        tls_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tenant_id, self.client_id = tenant_id, client_id
        self.client_secret = client_secret
        self.accept_any_token = accept_any_token
        self._port = port
        self._clock = clock
        self._lock = threading.Lock()
        self._stats: collections.Counter[str] = collections.Counter()
        self._faults: collections.deque[FaultKind] = collections.deque()
        self._journal: list[tuple[float, str]] = []
        self._tokens: set[str] = set()
        self._stopping = threading.Event()
        self._latency = 0.0
        self._throttle: _SlidingWindow | None = None
        self.set_latency(latency)
        self.set_throttle(limit_per_window, window_seconds)
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if tls_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="akv-server-")
            tls_dir = Path(self._tempdir.name)
        self._tls = make_loopback_tls(tls_dir)
        self._httpd: _TlsHttpServer | None = None
        self._thread: threading.Thread | None = None
        self._vault: _Vault | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("a server starts once")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._tls.cert, self._tls.key)
        self._httpd = _TlsHttpServer(("127.0.0.1", self._port), context, self)
        self._vault = _Vault(self.url)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="keyvault-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled handlers and close every open connection."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._httpd = None
        if self._tempdir:
            self._tempdir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The vault URL, e.g. ``https://127.0.0.1:50123`` (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def authority(self) -> str:
        """The Entra authority to give ``ClientSecretCredential(authority=...)``: this server."""
        return self.url

    @property
    def ca_cert(self) -> Path:
        return self._tls.ca_cert

    # -- limits, faults, counters -------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Add ``seconds`` of delay to every crypto call (wrapkey, unwrapkey, encrypt, decrypt)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = seconds

    def set_throttle(self, limit_per_window: int | None, window_seconds: float = 10.0) -> None:
        """Answer 429 past ``limit_per_window`` requests in any ``window_seconds``; None: off."""
        throttle = None
        if limit_per_window is not None:
            throttle = _SlidingWindow(limit_per_window, window_seconds, self._clock)
        with self._lock:
            self._throttle = throttle

    def inject(self, kind: FaultKind, count: int = 1) -> None:
        """Queue ``count`` one-shot faults for the next authenticated vault requests.

        ``429``/``503``: that status with the service's error body (429 with ``Retry-After: 1``);
        ``drop``: close the connection without answering; ``malformed``: 200 with a truncated JSON
        body; ``empty_json``: 200 with ``{}``; ``stall``: answer nothing until ``stop()``.
        """
        if kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {kind!r}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.extend([kind] * count)

    def clear_faults(self) -> None:
        """Drop the faults still queued."""
        with self._lock:
            self._faults.clear()

    @property
    def journal(self) -> list[tuple[float, str]]:
        """``(arrival time on the server's clock, outcome)`` of each authenticated vault
        request: ``fault_<kind>``, ``throttled``, or the operation that ran (``unwrapkey``...)."""
        with self._lock:
            return list(self._journal)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters.

        ``connections``, ``requests``, ``challenges`` (401s), ``tokens`` (issued), ``throttled``,
        ``fault_<kind>``, ``errors`` (4xx/5xx from the vault logic), ``internal_errors`` (bugs),
        ``connection_errors``, and one per operation that ran: ``create``, ``get``,
        ``list_versions``, ``update``, ``wrapkey``, ``unwrapkey``, ``encrypt``, ``decrypt``.
        """
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            self._journal.clear()

    # -- request handling (called from handler threads) -----------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> _Reply | None:
        """Answer one request; None means send nothing and close the connection."""
        self._count("requests")
        parts = urlsplit(path)
        segments = parts.path.split("/")[1:]
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if segments[0] != "keys" and segments[1:2] in (["v2.0"], ["oauth2"]):
            return self._identity(method, segments, body)
        token = headers.get("authorization", "")
        if not self._authorized(token):
            self._count("challenges")
            challenge = (
                f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
                f'resource="{VAULT_RESOURCE}"'
            )
            message = (
                "AKV10000: Request is missing a Bearer or PoP token."
                if not token
                else ("Access token is not valid for this test server.")
            )
            return _Reply.json(
                401,
                {"error": {"code": "Unauthorized", "message": message}},
                ("WWW-Authenticate", challenge),
            )
        arrived = self._clock()
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            retry_after = self._throttle.admit() if self._throttle else None
            if fault:
                self._stats[f"fault_{fault}"] += 1
                self._journal.append((arrived, f"fault_{fault}"))
            elif retry_after is not None:
                self._stats["throttled"] += 1
                self._journal.append((arrived, "throttled"))
        if fault:
            return self._fault_reply(fault)
        if retry_after is not None:
            return _Reply.json(429, _THROTTLED, ("Retry-After", str(retry_after)))
        reply = self._run_vault(method, segments, query, body)
        operation = segments[-1] if method == "POST" else method.lower()
        with self._lock:
            self._journal.append((arrived, operation))
        return reply

    def _fault_reply(self, kind: FaultKind) -> _Reply | None:
        if kind == "429":
            return _Reply.json(429, _THROTTLED, ("Retry-After", "1"))
        if kind == "503":
            message = "The service is temporarily unavailable (injected fault)."
            return _Reply.json(503, {"error": {"code": "ServiceUnavailable", "message": message}})
        if kind == "malformed":
            return _Reply(200, b'{"kid": "https://', (("Content-Type", "application/json"),))
        if kind == "empty_json":
            return _Reply.json(200, {})
        if kind == "stall":
            self._stopping.wait()
        return None  # "drop", and "stall" once the server stops

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        with self._lock:
            return self.accept_any_token or token.strip() in self._tokens

    def _run_vault(
        self, method: str, segments: list[str], query: dict[str, str], body: bytes
    ) -> _Reply:
        assert self._vault is not None
        if method == "POST" and segments[-1] in _CRYPTO_OPS and self._latency:
            self._stopping.wait(self._latency)
        try:
            if "api-version" not in query:
                raise _bad("The api-version query parameter is required.")
            try:
                parsed = json.loads(body) if body else {}
            except ValueError as exc:
                raise _bad("The request body is not valid JSON.") from exc
            if not isinstance(parsed, dict):
                raise _bad("The request body must be a JSON object.")
            operation, result = self._vault.dispatch(method, segments, query, parsed)
        except _VaultError as exc:
            self._count("errors")
            return _Reply.json(exc.status, exc.body())
        self._count(operation)
        return _Reply.json(200, result)

    def _identity(self, method: str, segments: list[str], body: bytes) -> _Reply:
        """The Entra endpoints a ClientSecretCredential (MSAL) calls: discovery and token."""
        base = f"{self.url}/{self.tenant_id}"
        if segments[:1] != [self.tenant_id]:
            return _aad_error(
                400, "invalid_tenant", f"AADSTS90002: Tenant '{segments[0]}' not found."
            )
        if method == "GET" and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return _Reply.json(
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                },
            )
        if method != "POST" or segments[1:] != ["oauth2", "v2.0", "token"]:
            return _aad_error(404, "not_found", "No such endpoint.")
        form = {k: v[0] for k, v in parse_qs(body.decode("ascii", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", "Only client_credentials is served.")
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return _aad_error(
                401, "invalid_client", "AADSTS7000215: Invalid client secret provided."
            )
        if f"{VAULT_RESOURCE}/.default" not in form.get("scope", "").split():
            return _aad_error(400, "invalid_scope", f"Only {VAULT_RESOURCE}/.default is served.")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(token)
            self._stats["tokens"] += 1
        return _Reply.json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            },
        )


def _aad_error(status: int, error: str, description: str) -> _Reply:
    return _Reply.json(status, {"error": error, "error_description": description})


class _TlsHttpServer(ThreadingHTTPServer):
    """A threading HTTP server that speaks TLS, disables Nagle and can close all its connections."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, owner: KeyVaultServer
    ) -> None:
        self.context, self.owner = context, owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._connections_lock:
            self._connections.add(tls)
        self.owner._count("connections")
        return tls, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.owner._count("connection_errors")  # handshake failures, resets: counted, not printed


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every response has Content-Length and goes out in one write."""

    protocol_version = "HTTP/1.1"
    server_version = "field-encrypt-akv-test"
    wbufsize = 1 << 16
    timeout = 120
    server: _TlsHttpServer

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        return  # no request log: quiet tests, and nothing from a request ends up in a log

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._write(
                _Reply.json(
                    411, {"error": {"code": "LengthRequired", "message": "Send Content-Length."}}
                )
            )
            self.close_connection = True
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner = self.server.owner
        try:
            reply = owner._respond(self.command, self.path, headers, body)
        except Exception:  # noqa: BLE001 - the one boundary: a server bug answers 500, not a "drop"
            owner._count("internal_errors")
            reply = _Reply.json(500, {"error": {"code": "InternalError", "message": "Server bug."}})
        if reply is None:
            self.close_connection = True
        else:
            self._write(reply)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        names = {name.lower() for name, _ in reply.headers}
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; print what clients need (no key material)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.keyvault", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: ephemeral)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per crypto call")
    parser.add_argument("--limit", type=int, default=None, help="requests allowed per window")
    parser.add_argument("--window", type=float, default=10.0, help="throttle window in seconds")
    parser.add_argument(
        "--any-token", action="store_true", help="accept any non-empty bearer token"
    )
    parser.add_argument("--tls-dir", type=Path, default=None, help="where to write the CA and cert")
    args = parser.parse_args(argv)
    server = KeyVaultServer(
        port=args.port,
        latency=args.latency,
        limit_per_window=args.limit,
        window_seconds=args.window,
        accept_any_token=args.any_token,
        tls_dir=args.tls_dir,
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with server:
        print(f"url={server.url}")
        print(f"ca_cert={server.ca_cert}")
        print(f"tenant_id={server.tenant_id}")
        print(f"client_id={server.client_id}")
        print(f"client_secret={server.client_secret}", flush=True)
        done.wait()
        print(json.dumps(server.stats, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
