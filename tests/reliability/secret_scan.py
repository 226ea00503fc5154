"""A pytest plugin that records every secret a test run makes and scans everything it printed.

Load it into a pytest run (``-p tests.reliability.secret_scan``, with
``--log-level=DEBUG``); ``tests/reliability/test_secret_hygiene.py`` does, over a broad
slice of the suite. It records, through hooks on the library in the test process:

* every MEK (the in-process keyrings' keys) and every DEK (each one wrapped or unwrapped by
  any provider: the in-process keyrings, the RSA-OAEP/AES-KWP binding, KMS);
* every bearer token minted (``jwt.encode``) and every note plaintext canary
  (``CANARY-`` + 32 hex digits, from ``tests/reliability/canaries.py``);

and collects what could leak them: each test's captured stdout, stderr and log records
(at DEBUG, every logger), the bodies of every HTTP answer with a 4xx or 5xx status and of
every answer of the operator console (its page and JSON endpoints, whatever the status), the
output of every subprocess a test ran, every ``*.log`` file under the run's
temporary directory (the uvicorn servers' logs), and every OpenTelemetry span the
run made in this process (tracing is on for the whole run: names, attributes, events,
status), through an exporter of the SDK. At the end it looks for each secret in
every form it could take in text: hex, base64 (standard and URL-safe, with and without
padding), a Python ``bytes`` repr, and the token or canary as is. The JSON report (path
in ``$SECRET_SCAN_REPORT``) lists how many of each secret were recorded, how much text was
scanned, every hit, and each test's outcome.
"""

from __future__ import annotations

import ast
import base64
import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

SECRETS: dict[str, set[bytes]] = {"mek": set(), "dek": set()}
TOKENS: set[str] = set()
CANARIES: set[str] = set()
TEXTS: list[tuple[str, str]] = []
SPANS: list[int] = []
OUTCOMES: dict[str, dict[str, str]] = {}
"""Each test's outcome (passed, failed or skipped, and why): the main run reports the
slice's tests from it (``tests/reliability/test_secret_hygiene.py``)."""
CANARY = re.compile(r"CANARY-[0-9a-f]{32}")
PREFIX = 16  # bytes of a key that identify it
CONSOLE_PATHS = ("/api/versions", "/api/runs", "/api/gate", "/api/audit", "/api/rotation")
"""The console's endpoints: every answer is scanned, not only errors (NoteLett's are
under ``/api/notes`` and hold note plaintexts by design, so they are not)."""


def _keep(kind: str, value: object) -> None:
    if isinstance(value, bytes | bytearray) and len(value) >= PREFIX:
        SECRETS[kind].add(bytes(value))


def _text(where: str, value: object) -> None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value:
        TEXTS.append((where, value))


def _install() -> None:
    import httpx
    import jwt

    from field_encrypt import FieldEncryptor
    from field_encrypt.providers import binding, symmetric

    keyring_init = symmetric.SymmetricKeyring.__init__

    @functools.wraps(keyring_init)
    def init(self: Any, mek_name: str, keys: Any, enabled: Any) -> None:
        for key in keys.values():
            _keep("mek", key)
        keyring_init(self, mek_name, keys, enabled)

    symmetric.SymmetricKeyring.__init__ = init  # type: ignore[method-assign]

    for cls, name in ((symmetric.SymmetricKeyring, "wrap"),):
        original = getattr(cls, name)

        def wrap(self: Any, dek: bytes, *a: Any, _original: Any = original, **k: Any) -> Any:
            _keep("dek", dek)
            return _original(self, dek, *a, **k)

        setattr(cls, name, wrap)
    unwrap = symmetric.SymmetricKeyring.unwrap

    def unwrapped(self: Any, *a: Any, **k: Any) -> Any:
        dek = unwrap(self, *a, **k)
        _keep("dek", dek)
        return dek

    symmetric.SymmetricKeyring.unwrap = unwrapped  # type: ignore[method-assign]
    seal, open_ = binding.seal, binding.open_

    def sealed(dek: bytes, context: bytes) -> bytes:
        _keep("dek", dek)
        return seal(dek, context)

    def opened(value: bytes, context: bytes) -> bytes:
        dek = open_(value, context)
        _keep("dek", dek)
        return dek

    binding.seal, binding.open_ = sealed, opened  # type: ignore[assignment]
    try:
        from field_encrypt.providers import aws_kms
    except ImportError:  # pragma: no cover - the dev extra installs boto3
        aws_kms = None  # type: ignore[assignment]
    if aws_kms is not None:
        kms_wrap, kms_unwrap = aws_kms.AwsKmsKeyProvider.wrap, aws_kms.AwsKmsKeyProvider.unwrap

        def kms_wrapped(self: Any, dek: bytes, **k: Any) -> Any:
            _keep("dek", dek)
            return kms_wrap(self, dek, **k)

        def kms_unwrapped(self: Any, ciphertext: bytes, **k: Any) -> bytes:
            dek = kms_unwrap(self, ciphertext, **k)
            _keep("dek", dek)
            return dek

        aws_kms.AwsKmsKeyProvider.wrap = kms_wrapped  # type: ignore[method-assign]
        aws_kms.AwsKmsKeyProvider.unwrap = kms_unwrapped  # type: ignore[method-assign]

    encrypt_document = FieldEncryptor.encrypt_document

    def encrypting(self: Any, collection: str, document_id: str, document: Any, **k: Any) -> Any:
        for value in _strings(document):
            CANARIES.update(CANARY.findall(value))
        return encrypt_document(self, collection, document_id, document, **k)

    FieldEncryptor.encrypt_document = encrypting  # type: ignore[method-assign]
    encode = jwt.encode

    @functools.wraps(encode)
    def minted(*a: Any, **k: Any) -> str:
        token = encode(*a, **k)
        TOKENS.add(token)
        return token

    jwt.encode = minted  # type: ignore[assignment]
    send = httpx.Client.send

    def sending(self: Any, request: Any, *a: Any, **k: Any) -> Any:
        response = send(self, request, *a, **k)
        if response.status_code >= 400 or request.url.path in CONSOLE_PATHS:
            response.read()
            _text(f"HTTP {response.status_code} {request.url.path}", response.content)
        return response

    httpx.Client.send = sending  # type: ignore[method-assign]
    run = subprocess.run

    @functools.wraps(run)
    def running(*a: Any, **k: Any) -> Any:
        result = run(*a, **k)
        _text("subprocess stdout", getattr(result, "stdout", None))
        _text("subprocess stderr", getattr(result, "stderr", None))
        return result

    subprocess.run = running  # type: ignore[assignment]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _trace() -> None:
    """Turn tracing on for the run and scan every span it finishes."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from field_encrypt import tracing

    class ToTexts(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            for span in spans:
                assert isinstance(span, ReadableSpan)
                SPANS.append(1)
                seen = {
                    "name": span.name,
                    "attributes": dict(span.attributes or {}),
                    "events": [(e.name, dict(e.attributes or {})) for e in span.events],
                    "status": span.status.description,
                }
                _text(f"span {span.name}", json.dumps(seen, default=repr))
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ToTexts()))
    trace.set_tracer_provider(provider)
    tracing.enable(True)


def pytest_configure(config: pytest.Config) -> None:
    _install()
    _trace()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, content in report.sections:
        _text(f"{report.nodeid} [{name}]", content)
    if report.longreprtext:
        _text(f"{report.nodeid} [failure]", report.longreprtext)
    outcome = OUTCOMES.setdefault(report.nodeid, {"outcome": "passed", "detail": ""})
    if report.failed:
        outcome["outcome"] = "failed"
        detail = f"{outcome['detail']}[{report.when}] {report.longreprtext}"
        outcome["detail"] = detail[-6000:]
    elif report.skipped and outcome["outcome"] == "passed":
        reason = report.longrepr
        outcome["outcome"] = "skipped"
        outcome["detail"] = str(reason[2] if isinstance(reason, tuple) else reason)


def _forms(secret: bytes) -> dict[str, str]:
    head = secret[:PREFIX]
    return {
        "hex": head.hex(),
        "HEX": head.hex().upper(),
        "base64": base64.b64encode(secret).decode()[:20],
        "base64url": base64.urlsafe_b64encode(secret).decode()[:20],
    }


HEX = re.compile(r"[0-9a-fA-F]{32,}")
B64 = re.compile(r"[A-Za-z0-9+/_-]{20,}")
BYTES = re.compile(r"""b(['"])((?:\\.|(?!\1).){16,}?)\1""")


def scan(texts: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Every appearance of a recorded secret in ``texts``."""
    wanted: dict[str, tuple[str, str]] = {}
    heads: dict[bytes, str] = {}
    for kind, secrets in SECRETS.items():
        for secret in secrets:
            for form, value in _forms(secret).items():
                wanted[value] = (kind, form)
            heads[secret[:PREFIX]] = kind
    hits = []
    for where, text in texts:
        for match in HEX.finditer(text):
            run = match.group()
            for i in range(len(run) - 31):
                if run[i : i + 32] in wanted:
                    kind, form = wanted[run[i : i + 32]]
                    hits.append({"secret": kind, "form": form, "where": where})
        for match in B64.finditer(text):
            found = wanted.get(match.group()[:20])
            if found:
                hits.append({"secret": found[0], "form": found[1], "where": where})
        for match in BYTES.finditer(text):
            try:
                raw = ast.literal_eval("b" + match.group(1) + match.group(2) + match.group(1))
            except (ValueError, SyntaxError):
                continue
            for i in range(max(0, len(raw) - PREFIX + 1)):
                if raw[i : i + PREFIX] in heads:
                    hits.append(
                        {"secret": heads[raw[i : i + PREFIX]], "form": "repr", "where": where}
                    )
        for canary in CANARY.findall(text):
            if canary in CANARIES:
                hits.append({"secret": "plaintext canary", "form": "text", "where": where})
        for token in TOKENS:
            if token in text:
                hits.append({"secret": "bearer token", "form": "text", "where": where})
    return hits


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    for log in Path(base).rglob("*.log"):
        _text(str(log.relative_to(base)), log.read_text(errors="replace"))
    hits = scan(TEXTS)
    report = {
        "tests_exit_status": int(exitstatus),
        "secrets": {
            "meks": len(SECRETS["mek"]),
            "deks": len(SECRETS["dek"]),
            "bearer_tokens": len(TOKENS),
            "plaintext_canaries": len(CANARIES),
        },
        "spans_scanned": len(SPANS),
        "texts_scanned": len(TEXTS),
        "characters_scanned": sum(len(t) for _, t in TEXTS),
        "hits": hits[:50],
        "hit_count": len(hits),
        "outcomes": OUTCOMES,
    }
    path = os.environ.get("SECRET_SCAN_REPORT")
    if path:
        Path(path).write_text(json.dumps(report, indent=2))
