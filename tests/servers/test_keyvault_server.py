"""The local Key Vault server, driven by the real azure-keyvault-keys and azure-identity SDKs."""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.keyvault.keys", reason="needs the akv extra: pip install -e .[akv]")

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.servers.keyvault import KeyVaultServer

DEK = bytes(range(32))
OAEP_256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sdk_options(server: KeyVaultServer, **extra: Any) -> dict[str, Any]:
    """What every SDK client needs to trust and talk to the local vault."""
    return {
        "verify_challenge_resource": False,
        "connection_verify": str(server.ca_cert),
        **extra,
    }


def make_credential(server: KeyVaultServer) -> ClientSecretCredential:
    return ClientSecretCredential(
        server.tenant_id,
        server.client_id,
        server.client_secret,
        authority=server.authority,
        disable_instance_discovery=True,
        connection_verify=str(server.ca_cert),
    )


@pytest.fixture
def server() -> Iterator[KeyVaultServer]:
    with KeyVaultServer() as running:
        yield running


@pytest.fixture
def credential(server: KeyVaultServer) -> Iterator[ClientSecretCredential]:
    with make_credential(server) as real_credential:
        yield real_credential


@pytest.fixture
def keys(server: KeyVaultServer, credential: ClientSecretCredential) -> Iterator[KeyClient]:
    """A KeyClient without SDK retries, so each test sees the server's raw answer."""
    with KeyClient(server.url, credential, **sdk_options(server, retry_total=0)) as client:
        yield client


def crypto_for(
    key: KeyVaultKey, server: KeyVaultServer, credential: Any, **extra: Any
) -> CryptographyClient:
    return CryptographyClient(key, credential, **sdk_options(server, retry_total=0, **extra))


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wrap_locally(key: KeyVaultKey, dek: bytes = DEK) -> bytes:
    """RSA-OAEP-256 under the key's public half, as a caller holding only the public key would."""
    assert key.key.n is not None and key.key.e is not None
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big")
    )
    return numbers.public_key().encrypt(dek, OAEP_256)


def test_create_makes_a_new_version_each_call_and_lists_them_page_by_page(
    keys: KeyClient,
) -> None:
    """Each create adds a version; get with no version gives the latest; paging follows nextLink."""
    first = keys.create_rsa_key("mek", size=2048)
    second = keys.create_rsa_key("mek", size=2048)
    third = keys.create_rsa_key("mek", size=3072)

    assert len({first.properties.version, second.properties.version, third.properties.version}) == 3
    assert keys.get_key("mek").id == third.id
    assert keys.get_key("mek", first.properties.version).key.n == first.key.n
    pages = list(keys.list_properties_of_key_versions("mek", max_page_size=1).by_page())
    assert len(pages) == 3
    listed = sorted(p.version for page in pages for p in page)
    assert listed == sorted(k.properties.version for k in (first, second, third))
    assert first.properties.created_on is not None
    assert first.properties.enabled is True
    assert first.key.key_ops == ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]


def test_rsa_4096_keys_are_generated(keys: KeyClient) -> None:
    """A 4096-bit key (slow to generate) works end to end at least once."""
    key = keys.create_rsa_key("big-mek", size=4096)

    assert key.key.n is not None and len(key.key.n) == 512


def test_unsupported_key_sizes_are_rejected(keys: KeyClient) -> None:
    """Only 2048, 3072 and 4096-bit RSA keys are created; others get 400 BadParameter."""
    with pytest.raises(HttpResponseError) as caught:
        keys.create_rsa_key("odd", size=1024)

    assert caught.value.status_code == 400
    assert caught.value.error is not None and caught.value.error.code == "BadParameter"


def test_a_dek_wrapped_locally_unwraps_remotely(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """Wrap with the public key here, unwrap with CryptographyClient there: same DEK back."""
    key = keys.create_rsa_key("mek", size=2048)

    with crypto_for(key, server, credential) as crypto:
        result = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrap_locally(key))

    assert result.key == DEK
    assert result.key_id == key.id
    assert server.stats["unwrapkey"] == 1


def test_decrypt_is_served_like_unwrap(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """CryptographyClient.decrypt (always remote for RSA) returns the plaintext."""
    key = keys.create_rsa_key("mek", size=2048)

    with crypto_for(key, server, credential) as crypto:
        result = crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, wrap_locally(key, b"field"))

    assert result.plaintext == b"field"
    assert server.stats["decrypt"] == 1


def test_concurrent_unwraps_all_succeed(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """Eight threads sharing one CryptographyClient unwrap 200 times between them."""
    key = keys.create_rsa_key("mek", size=2048)
    wrapped = wrap_locally(key)

    with crypto_for(key, server, credential) as crypto, ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda _: crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key, range(200)
            )
        )

    assert results == [DEK] * 200
    assert server.stats["unwrapkey"] == 200


def test_remote_wrapkey_with_rsa_oaep_round_trips(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """POST .../wrapkey (sent raw, since the SDK wraps locally) then unwrap, with RSA-OAEP."""
    key = keys.create_rsa_key("mek", size=2048)
    request = HttpRequest(
        "POST",
        f"/keys/mek/{key.properties.version}/wrapkey",
        json={"alg": "RSA-OAEP", "value": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"},
    )

    response = keys.send_request(request)
    response.raise_for_status()
    wrapped = response.json()
    with crypto_for(key, server, credential) as crypto:
        result = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep, unb64url(wrapped["value"]))

    assert wrapped["kid"] == key.id
    assert "=" not in wrapped["value"]
    assert result.key == DEK


def test_a_disabled_version_refuses_unwrap_with_403_key_disabled_but_can_still_be_read(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """A disabled version refuses unwrap (403 Forbidden/KeyDisabled); the other version works."""
    old = keys.create_rsa_key("mek", size=2048)
    new = keys.create_rsa_key("mek", size=2048)
    keys.update_key_properties("mek", old.properties.version, enabled=False)

    with crypto_for(old, server, credential) as crypto, pytest.raises(HttpResponseError) as caught:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrap_locally(old))
    error = caught.value
    assert error.status_code == 403
    assert error.error is not None  # azure.core's parsed OData error
    assert error.error.code == "Forbidden"
    assert error.error.innererror == {"code": "KeyDisabled"}
    assert error.model.error.inner_error.code == "KeyDisabled"  # the SDK's typed KeyVaultError
    assert "Operation unwrapKey is not allowed on a disabled key." in str(error)
    assert keys.get_key("mek", old.properties.version).properties.enabled is False
    with crypto_for(new, server, credential) as crypto:
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrap_locally(new)).key == DEK


def test_remote_wrapkey_on_a_disabled_version_is_403_with_the_service_body(
    keys: KeyClient,
) -> None:
    """POST .../wrapkey under a disabled version answers the service's exact KeyDisabled body."""
    key = keys.create_rsa_key("mek", size=2048)
    keys.update_key_properties("mek", key.properties.version, enabled=False)
    request = HttpRequest(
        "POST",
        f"/keys/mek/{key.properties.version}/wrapkey",
        json={"alg": "RSA-OAEP-256", "value": "AAECAw"},
    )

    response = keys.send_request(request)

    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "Forbidden",
            "message": "Operation wrapKey is not allowed on a disabled key.",
            "innererror": {"code": "KeyDisabled"},
        }
    }


def test_the_sdk_wraps_locally_even_under_a_disabled_version(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """CryptographyClient.wrap_key uses the public key it holds: the vault never sees the call,
    so a disabled version does not stop a wrap made through the SDK."""
    key = keys.create_rsa_key("mek", size=2048)
    keys.update_key_properties("mek", key.properties.version, enabled=False)

    with crypto_for(key, server, credential) as crypto:
        result = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, DEK)

    assert result.encrypted_key
    assert "wrapkey" not in server.stats


def test_a_re_enabled_version_unwraps_again(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """PATCH enabled=true undoes a disable."""
    key = keys.create_rsa_key("mek", size=2048)
    keys.update_key_properties("mek", key.properties.version, enabled=False)
    updated = keys.update_key_properties("mek", key.properties.version, enabled=True)

    with crypto_for(key, server, credential) as crypto:
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrap_locally(key)).key == DEK
    assert updated.properties.enabled is True


def test_unknown_keys_and_versions_are_404_key_not_found(keys: KeyClient) -> None:
    """A missing name or version is ResourceNotFoundError with code KeyNotFound."""
    keys.create_rsa_key("mek", size=2048)

    for version in (None, "0" * 32):
        with pytest.raises(ResourceNotFoundError) as caught:
            keys.get_key("mek" if version else "nope", version)
        assert caught.value.status_code == 404
        assert caught.value.error is not None and caught.value.error.code == "KeyNotFound"


def test_bad_ciphertext_is_400_bad_parameter(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """A ciphertext the key cannot decrypt (one byte flipped) is 400 BadParameter."""
    key = keys.create_rsa_key("mek", size=2048)
    tampered = bytearray(wrap_locally(key))
    tampered[-1] ^= 0x01

    with crypto_for(key, server, credential) as crypto, pytest.raises(HttpResponseError) as caught:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, bytes(tampered))

    assert caught.value.status_code == 400
    assert caught.value.error is not None and caught.value.error.code == "BadParameter"


def test_an_operation_missing_from_key_ops_is_403_key_operation_forbidden(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """A key created without unwrapKey in key_ops refuses unwrap."""
    key = keys.create_rsa_key("mek", size=2048, key_operations=["wrapKey"])

    with crypto_for(key, server, credential) as crypto, pytest.raises(HttpResponseError) as caught:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrap_locally(key))

    assert caught.value.status_code == 403
    assert caught.value.error is not None
    assert caught.value.error.innererror == {"code": "KeyOperationForbidden"}


def test_a_request_without_a_token_gets_the_key_vault_challenge(server: KeyVaultServer) -> None:
    """No Authorization header: 401 with the Bearer challenge naming the tenant and the resource."""
    context = ssl.create_default_context(cafile=str(server.ca_cert))
    request = urllib.request.Request(f"{server.url}/keys/mek?api-version=7.4")

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=context, timeout=5)

    assert caught.value.code == 401
    assert caught.value.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{server.tenant_id}", '
        'resource="https://vault.azure.net"'
    )
    caught.value.close()


def test_the_real_credential_fetches_one_token_and_reuses_it(
    keys: KeyClient, server: KeyVaultServer
) -> None:
    """ClientSecretCredential gets a token from the local Entra endpoint once, then caches it."""
    keys.create_rsa_key("mek", size=2048)
    keys.get_key("mek")
    keys.get_key("mek")

    assert server.stats["tokens"] == 1


class StaticToken:
    """The minimal credential: any object with get_token (the fallback to a real credential)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def test_tokens_the_server_did_not_issue_are_refused_unless_any_token_is_accepted() -> None:
    """By default only issued tokens pass; accept_any_token=True admits any non-empty token."""
    with (
        KeyVaultServer() as strict,
        KeyClient(
            strict.url, StaticToken("forged"), **sdk_options(strict, retry_total=0)
        ) as client,
        pytest.raises(ClientAuthenticationError),
    ):
        client.create_rsa_key("mek", size=2048)

    with (
        KeyVaultServer(accept_any_token=True) as lax,
        KeyClient(lax.url, StaticToken("anything"), **sdk_options(lax, retry_total=0)) as client,
    ):
        assert client.create_rsa_key("mek", size=2048).name == "mek"


def test_the_throttle_answers_429_with_retry_after_until_the_window_moves() -> None:
    """Past the limit the vault says 429 Throttled with Retry-After; later it admits again."""
    clock = FakeClock()
    with (
        KeyVaultServer(limit_per_window=3, window_seconds=10, clock=clock) as limited,
        make_credential(limited) as credential,
        KeyClient(limited.url, credential, **sdk_options(limited, retry_total=0)) as client,
    ):
        client.create_rsa_key("mek", size=2048)
        client.get_key("mek")
        client.get_key("mek")
        with pytest.raises(HttpResponseError) as caught:
            client.get_key("mek")
        clock.now += 10.5
        client.get_key("mek")
        stats = limited.stats

    assert caught.value.status_code == 429
    assert caught.value.response is not None
    assert caught.value.response.headers["Retry-After"] == "10"
    assert caught.value.error is not None and caught.value.error.code == "Throttled"
    assert stats["throttled"] == 1


def test_the_sdk_retry_policy_waits_out_an_injected_429(
    server: KeyVaultServer, credential: ClientSecretCredential
) -> None:
    """With its default retries the SDK honours Retry-After: 1 and then succeeds."""
    with KeyClient(server.url, credential, **sdk_options(server)) as client:
        client.create_rsa_key("mek", size=2048)
        server.inject("429")
        started = time.monotonic()
        client.get_key("mek")
        elapsed = time.monotonic() - started

    assert server.stats["fault_429"] == 1
    assert elapsed >= 1.0


def test_an_injected_503_is_an_http_response_error(server: KeyVaultServer, keys: KeyClient) -> None:
    """A 503 reaches a caller without retries as HttpResponseError with status 503."""
    keys.create_rsa_key("mek", size=2048)
    server.inject("503")

    with pytest.raises(HttpResponseError) as caught:
        keys.get_key("mek")

    assert caught.value.status_code == 503
    assert server.pending_faults == 0


def test_a_dropped_connection_is_a_service_response_error(
    server: KeyVaultServer, keys: KeyClient
) -> None:
    """A connection closed without an answer surfaces as ServiceResponseError."""
    keys.create_rsa_key("mek", size=2048)
    server.inject("drop")

    with pytest.raises(ServiceResponseError):
        keys.get_key("mek")
    assert keys.get_key("mek").name == "mek"


def test_a_malformed_body_is_a_decode_error(server: KeyVaultServer, keys: KeyClient) -> None:
    """A 200 whose body is not JSON surfaces as azure.core DecodeError."""
    keys.create_rsa_key("mek", size=2048)
    server.inject("malformed")

    with pytest.raises(DecodeError):
        keys.get_key("mek")


def test_an_empty_json_answer_to_unwrap_yields_no_key(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """A 200 ``{}`` is no error to the SDK: unwrap returns key=None, which callers must check."""
    key = keys.create_rsa_key("mek", size=2048)
    server.inject("empty_json")

    with crypto_for(key, server, credential) as crypto:
        result = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrap_locally(key))

    assert result.key is None


def test_a_stalled_request_times_out_on_the_client(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """A stall answers nothing; a client with a short read_timeout gives up once it has
    passed: not sooner, and not later than the timeout plus a margin measured in this run
    (a fresh client's first, answered call). The key is made beforehand with the default
    timeout (RSA key generation on a loaded machine is no part of this), and the read
    timeout is 0.3 s, or three answered calls if that is longer."""
    keys.create_rsa_key("mek", size=2048)
    started = time.monotonic()
    with KeyClient(server.url, credential, **sdk_options(server, retry_total=0)) as fresh:
        fresh.get_key("mek")
    cold = time.monotonic() - started
    timeout = max(0.3, 3 * cold)
    margin = 0.2 + 2 * cold
    options = sdk_options(server, retry_total=0, connection_timeout=2, read_timeout=timeout)
    with KeyClient(server.url, credential, **options) as client:
        client.get_key("mek")  # connected, under the short timeout
        server.inject("stall")
        started = time.monotonic()
        with pytest.raises(ServiceResponseError):
            client.get_key("mek")
        elapsed = time.monotonic() - started
    assert timeout * 0.95 <= elapsed <= timeout + margin, (
        f"stalled request failed after {elapsed:.2f} s; read timeout {timeout:.2f} s, "
        f"margin {margin:.2f} s"
    )


def test_latency_is_added_to_crypto_calls_and_calls_reuse_one_connection(
    server: KeyVaultServer, keys: KeyClient, credential: ClientSecretCredential
) -> None:
    """Without latency 20 unwraps are quick on one kept-alive connection; latency slows each."""
    key = keys.create_rsa_key("mek", size=2048)
    wrapped = wrap_locally(key)
    with crypto_for(key, server, credential) as crypto:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        connections = server.stats["connections"]
        started = time.monotonic()
        for _ in range(20):
            crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        fast = time.monotonic() - started
        server.set_latency(0.1)
        started = time.monotonic()
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        slow = time.monotonic() - started

    assert fast < 0.6  # ~40 ms per call if Nagle or reconnects crept back in
    assert server.stats["connections"] == connections
    assert slow >= 0.1


def test_the_module_runs_standalone_and_prints_what_clients_need(tmp_path: Path) -> None:
    """``python -m tests.servers.keyvault`` prints url and ca_cert, serves, and stops on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.keyvault", "--latency", "0", "--limit", "50"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        printed = dict(process.stdout.readline().strip().split("=", 1) for _ in range(5))
        ca = printed["ca_cert"]
        credential = ClientSecretCredential(
            printed["tenant_id"],
            printed["client_id"],
            printed["client_secret"],
            authority=printed["url"],
            disable_instance_discovery=True,
            connection_verify=ca,
        )
        with (
            credential,
            KeyClient(
                printed["url"], credential, verify_challenge_resource=False, connection_verify=ca
            ) as client,
        ):
            assert client.create_rsa_key("mek", size=2048).name == "mek"
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert '"create": 1' in out
