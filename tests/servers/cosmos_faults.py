"""Faults the Cosmos DB test server never produces, injected under the real SDK.

``FaultTransport`` is the SDK's own ``RequestsTransport`` with a queue of faults in front: a
request that matches the next fault's method and path gets a synthetic HTTP response (a 429
with ``x-ms-retry-after-ms``, a 500 ...) or a connection error instead of going to the
server. Everything above the transport (the SDK's retry policies, its error parsing, our
error conversion) runs unchanged. Give it to a client with ``transport=``::

    faults = FaultTransport(connection_verify=str(server.ca_cert))
    database = CosmosDatabase.connect(url, key=server.key, transport=faults)
    faults.inject(Fault(status=429, retry_after_ms=1500, method="PUT"), times=3)
"""

from __future__ import annotations

import json
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport, RequestsTransportResponse

__all__ = ["Fault", "FaultTransport"]


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected answer: an HTTP status (with headers) or, if ``status`` is 0, no answer."""

    status: int
    method: str | None = None
    """Only requests with this HTTP method (``GET``, ``PUT`` ...); ``None`` matches any."""
    path_contains: str = "/docs"
    """Only requests whose URL path contains this (item operations by default)."""
    retry_after_ms: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, request: Any) -> bool:
        path = requests.utils.urlparse(request.url).path
        method_ok = self.method is None or request.method == self.method
        return method_ok and self.path_contains in path


class FaultTransport(RequestsTransport):  # type: ignore[misc]
    """A ``RequestsTransport`` that answers some requests itself, as a failing service would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.injected: list[tuple[str, str, int]] = []
        """``(method, path, status)`` of every request answered with a fault."""
        self.threads: set[str] = set()
        """Names of the threads that sent item requests (to see batches run in parallel)."""

    def inject(self, fault: Fault, *, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with ``fault``."""
        with self._lock:
            self._faults.extend([fault] * times)

    def pending(self) -> int:
        """Faults not yet used."""
        with self._lock:
            return len(self._faults)

    def send(
        self, request: Any, *, proxies: MutableMapping[str, str] | None = None, **kwargs: Any
    ) -> Any:
        path = requests.utils.urlparse(request.url).path
        with self._lock:
            if "/docs" in path:
                self.threads.add(threading.current_thread().name)
            fault = next((f for f in self._faults if f.matches(request)), None)
            if fault is not None:
                self._faults.remove(fault)
                self.injected.append((request.method, path, fault.status))
        if fault is None:
            return super().send(request, proxies=proxies, **kwargs)
        if fault.status == 0:
            raise ServiceRequestError("injected: connection refused")
        return RequestsTransportResponse(request, _response(request, fault))


def _response(request: Any, fault: Fault) -> requests.Response:
    response = requests.Response()
    response.status_code = fault.status
    response.reason = "Injected"
    response.url = request.url
    response.headers.update({"Content-Type": "application/json", **fault.headers})
    if fault.retry_after_ms is not None:
        response.headers["x-ms-retry-after-ms"] = str(fault.retry_after_ms)
        response.headers.setdefault("x-ms-substatus", "3200")
    code = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(fault.status, "Injected")
    body = {"code": code, "message": f"injected {fault.status}"}
    response._content = json.dumps(body).encode()
    return response
