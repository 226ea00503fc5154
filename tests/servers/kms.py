"""An AWS KMS endpoint on loopback (moto), with disabled-key enforcement and fault injection.

What is real: moto's KMS server (``moto[server,kms]``) answering the real AWS JSON protocol
over HTTP on 127.0.0.1, reached by a real ``boto3`` client. Keys, aliases, EncryptionContext
binding, ReEncrypt and key states are moto's.

What was adapted, and why here:

- **Disabled keys are refused, as in AWS.** moto 5.x records ``DisableKey`` but still encrypts
  and decrypts under the key. Real KMS answers ``DisabledException`` (HTTP 400) for a
  ``Disabled`` key and ``KMSInvalidStateException`` for one pending deletion. moto routes
  Encrypt, GenerateDataKey(WithoutPlaintext), Decrypt and both halves of ReEncrypt through two
  backend methods, ``KmsBackend.encrypt`` and ``KmsBackend.decrypt``, so while a ``KmsServer``
  runs those two are wrapped with a key-state check (and restored when the last server stops).
  The check sits where moto has already resolved aliases, ARNs and the key inside a
  ciphertext; a WSGI-level check would have to redo all of that from the request. One
  difference remains: moto decrypts before the check, so a ciphertext that is both invalid
  and under a disabled key is reported as invalid.
- **A Decrypt naming the wrong key is refused, as in AWS.** moto answers a ``KeyId`` that is
  not the ciphertext's key with ``AccessDeniedException``; AWS answers
  ``IncorrectKeyException``, which is what a client must treat as "wrong key for this
  ciphertext". The same wrapper checks the key inside the ciphertext against ``KeyId`` first.
- **Faults are injected in front of moto.** A WSGI middleware answers queued faults before
  moto sees the request: ``throttle`` (400 ``ThrottlingException``), ``503``
  (``ServiceUnavailable``), ``drop`` (connection closed with no response) and ``stall`` (the
  request is held ``stall_seconds``, then moto answers it: the operation happens even if the
  client has timed out). It also counts calls per operation from the ``X-Amz-Target`` header.
- The server is werkzeug's threaded server around moto's own WSGI application, as
  ``ThreadedMotoServer`` does, so the middleware can sit in front and port 0 can be bound.

moto keeps its state per process, so one ``KmsServer`` should run at a time; starting one
clears moto's KMS state (other services are left alone).

    with KmsServer() as kms:
        client = kms.client()
        kms.inject("throttle", count=2, operation="Decrypt")
"""

from __future__ import annotations

import io
import json
import socket
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import boto3
from botocore.config import Config
from moto.core.exceptions import JsonRESTError
from moto.kms.models import KmsBackend, kms_backends
from moto.kms.utils import _deserialize_ciphertext_blob
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = [
    "DisabledException",
    "FaultKind",
    "IncorrectKeyException",
    "KMSInvalidStateException",
    "KmsServer",
]

HOST = "127.0.0.1"
FaultKind = Literal["throttle", "503", "drop", "stall"]
FAULT_KINDS: tuple[FaultKind, ...] = ("throttle", "503", "drop", "stall")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


# -- disabled-key enforcement -------------------------------------------------------------


class DisabledException(JsonRESTError):
    code = 400

    def __init__(self, message: str):
        super().__init__("DisabledException", message)


class KMSInvalidStateException(JsonRESTError):
    code = 400

    def __init__(self, message: str):
        super().__init__("KMSInvalidStateException", message)


class IncorrectKeyException(JsonRESTError):
    code = 400

    def __init__(self, message: str):
        super().__init__("IncorrectKeyException", message)


_STATE_WORDS = {"PendingDeletion": "pending deletion", "PendingImport": "pending import"}


def _require_enabled(backend: KmsBackend, key_id: str) -> None:
    key = backend.keys.get(key_id)
    if key is None or key.key_state == "Enabled":
        return  # unknown keys are moto's to report
    if key.key_state == "Disabled":
        raise DisabledException(f"{key.arn} is disabled.")
    raise KMSInvalidStateException(
        f"{key.arn} is {_STATE_WORDS.get(key.key_state, key.key_state)}."
    )


_moto_encrypt = KmsBackend.encrypt
_moto_decrypt = KmsBackend.decrypt


def _encrypt_if_enabled(
    self: KmsBackend, key_id: str, plaintext: bytes, encryption_context: dict[str, str]
) -> tuple[bytes, str]:
    _require_enabled(self, self.any_id_to_key_id(key_id))
    return _moto_encrypt(self, key_id, plaintext, encryption_context)


def _decrypt_if_enabled(
    self: KmsBackend,
    ciphertext_blob: bytes,
    encryption_context: dict[str, str],
    key_id: str | None = None,
) -> tuple[bytes, str]:
    if key_id is not None:
        _require_key_matches(self, ciphertext_blob, key_id)
    plaintext, arn = _moto_decrypt(self, ciphertext_blob, encryption_context, None)
    _require_enabled(self, self.get_key_id(arn))  # the plaintext is dropped if this raises
    return plaintext, arn


def _require_key_matches(backend: KmsBackend, ciphertext_blob: bytes, key_id: str) -> None:
    try:
        inside = _deserialize_ciphertext_blob(ciphertext_blob=ciphertext_blob).key_id
    except Exception:  # noqa: BLE001 - moto reports the invalid ciphertext itself
        return
    if inside != backend.any_id_to_key_id(key_id):
        raise IncorrectKeyException(
            "The key ID in the request does not identify a CMK that can perform this operation."
        )


_patch_lock = threading.Lock()
_patch_users = 0


def _enforce_key_state(on: bool) -> None:
    """Wrap (or restore) moto's KmsBackend.encrypt/decrypt; reference-counted per server."""
    global _patch_users
    with _patch_lock:
        _patch_users += 1 if on else -1
        if on and _patch_users == 1:
            setattr(KmsBackend, "encrypt", _encrypt_if_enabled)  # noqa: B010
            setattr(KmsBackend, "decrypt", _decrypt_if_enabled)  # noqa: B010
        elif not on and _patch_users == 0:
            setattr(KmsBackend, "encrypt", _moto_encrypt)  # noqa: B010
            setattr(KmsBackend, "decrypt", _moto_decrypt)  # noqa: B010


# -- fault injection ----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Fault:
    kind: FaultKind
    remaining: int
    operation: str | None


def _json_error(status: str, error_type: str, message: str) -> tuple[str, bytes]:
    return status, json.dumps({"__type": error_type, "message": message}).encode()


_CANNED = {
    "throttle": _json_error("400 Bad Request", "ThrottlingException", "Rate exceeded"),
    "503": _json_error("503 Service Unavailable", "ServiceUnavailable", "Service Unavailable"),
}


class _FaultInjector:
    """WSGI middleware: counts calls per KMS operation and serves queued faults first."""

    def __init__(self, app: WsgiApp, stall_seconds: float):
        self._app = app
        self._stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self.calls: Counter[str] = Counter()
        self.released = threading.Event()  # set on shutdown: stalled requests go on at once

    def inject(self, kind: FaultKind, count: int, operation: str | None) -> None:
        with self._lock:
            self._faults.append(_Fault(kind=kind, remaining=count, operation=operation))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.calls.clear()

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self.calls)

    def _take_fault(self, operation: str | None) -> FaultKind | None:
        with self._lock:
            if operation:
                self.calls[operation] += 1
            for fault in self._faults:
                if fault.operation in (None, operation):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault.kind
            return None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target.rpartition(".")[2] or None
        # Read the body first so a fault leaves the keep-alive connection in order.
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)

        kind = self._take_fault(operation)
        if kind in _CANNED:
            status, payload = _CANNED[kind]
            start_response(
                status,
                [
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("Content-Length", str(len(payload))),
                    ("x-amzn-RequestId", str(uuid.uuid4())),
                ],
            )
            return [payload]
        if kind == "drop":
            connection: socket.socket = environ["werkzeug.socket"]
            connection.shutdown(socket.SHUT_RDWR)
            start_response("500 Dropped", [("Content-Length", "0")])
            return []  # werkzeug sees the closed socket and drops the connection quietly
        if kind == "stall":
            self.released.wait(self._stall_seconds)
        return self._app(environ, start_response)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


# -- the server ---------------------------------------------------------------------------


class KmsServer:
    """moto's KMS on an ephemeral loopback port; a context manager."""

    def __init__(self, *, region: str = "us-east-1", stall_seconds: float = 5.0):
        self.region = region
        self._faults = _FaultInjector(
            DomainDispatcherApplication(create_backend_app), stall_seconds
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the KMS server is not running")
        return f"http://{HOST}:{self._server.server_port}"

    def client(self, config: Config | None = None) -> Any:
        """A real boto3 KMS client for this endpoint, with dummy credentials given as
        arguments (nothing is read from the environment's AWS variables). Pass ``config``
        to set retries and timeouts, e.g. ``Config(retries={"total_max_attempts": 1})``."""
        base = Config(connect_timeout=5, read_timeout=30)
        return boto3.session.Session().client(
            "kms",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=base.merge(config) if config else base,
        )

    # -- faults and counters --

    def inject(self, kind: FaultKind, count: int = 1, operation: str | None = None) -> None:
        """Answer the next ``count`` requests (of ``operation`` only, e.g. ``"Decrypt"``, if
        given) with fault ``kind`` instead of passing them to moto."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count < 1:
            raise ValueError("count must be at least 1")
        self._faults.inject(kind, count, operation)

    @property
    def calls(self) -> Counter[str]:
        """Requests received per operation (``X-Amz-Target``), faulted ones included."""
        return self._faults.counts()

    def clear_faults(self) -> None:
        """Drop queued faults and zero the call counters."""
        self._faults.clear()

    def reset(self) -> None:
        """Forget every KMS key and alias (moto's KMS state only), queued faults and counters."""
        for account_backends in kms_backends.values():
            account_backends.reset()
        self.clear_faults()

    # -- lifecycle --

    def __enter__(self) -> Self:
        self.reset()
        _enforce_key_state(True)
        try:
            self._server = make_server(
                HOST, 0, self._faults, threaded=True, request_handler=_QuietHandler
            )
        except BaseException:
            _enforce_key_state(False)
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long shutdown() may wait
            name="kms-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is None:
            return
        self._faults.released.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        _enforce_key_state(False)
