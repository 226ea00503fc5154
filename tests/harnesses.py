"""Production providers built against real local servers, for the contract, integration and
rotation suites.

Each service is started by a package-scoped fixture defined here and imported into a
package's ``conftest.py``: the contract suite and the integration suite each get their own
servers, which stop when the package's last test has run. That matters for the two
process-wide services: SoftHSM reads its configuration once per process (one token open at a
time) and moto keeps one KMS state per process, and ``tests/servers`` opens its own.

A harness makes providers on fresh MEKs (a new name each time) in the shared service, so
tests never see each other's versions.
"""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import uuid
from collections.abc import Iterator
from typing import Any, Literal, Protocol

import pytest

from field_encrypt.providers.base import KeyProvider
from tests.conftest import require

Fault = Literal["throttle", "unavailable", "drop", "stall"]
FAST_KEY_SIZE = 2048  # RSA keys for tests: 4096 is the production default, and slow to make
_names = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{uuid.uuid4().hex[:6]}"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class RemoteHarness(Protocol):
    """A harness whose server can inject faults and count requests."""

    secrets: list[bytes]
    throttle_retry_after: float | None
    """The ``retry_after`` an injected throttle must surface as."""
    stall_seconds: float | None
    """How long the server holds a stalled request before it answers it (``None``: never)."""

    def make(
        self, versions: int, disabled: frozenset[int] = frozenset(), *, read_timeout: float = 10.0
    ) -> KeyProvider: ...

    def provider(self, mek_name: str | None = None, **options: Any) -> Any:
        """Another provider object (``mek_name``: on that MEK, versions already made)."""
        ...

    def inject(self, fault: Fault) -> None:
        """Make the server answer its next request with ``fault``."""
        ...

    def requests(self) -> int:
        """Requests the server has received so far (faulted ones included)."""
        ...


def _populate(provider: Any, versions: int, disabled: frozenset[int]) -> Any:
    for _ in range(versions):
        provider.create_version()
    names = [v.version for v in provider.versions()]
    for index in disabled:
        provider.set_enabled(names[index], False)
    return provider


# -- PKCS#11 (SoftHSM2) ------------------------------------------------------------------------


class Pkcs11Harness:
    def __init__(self, hsm: Any) -> None:
        self.hsm = hsm
        self.secrets: list[bytes] = [hsm.user_pin.encode(), hsm.so_pin.encode()]
        self._providers: list[Any] = []

    def provider(self, mek_name: str | None = None) -> Any:
        from field_encrypt.providers.pkcs11 import Pkcs11KeyProvider

        provider = Pkcs11KeyProvider(
            module=str(self.hsm.module_path),
            token_label=self.hsm.token_label,
            pin=self.hsm.user_pin,
            mek_name=mek_name or _name("mek"),
        )
        self._providers.append(provider)
        return provider

    def unmade(self) -> KeyProvider:
        """A provider on a MEK the service does not have yet (a new name, no version made)."""
        provider: KeyProvider = self.provider()
        return provider

    def make(self, versions: int, disabled: frozenset[int] = frozenset()) -> KeyProvider:
        provider: KeyProvider = _populate(self.provider(), versions, disabled)
        return provider

    def close(self) -> None:
        for provider in self._providers:
            provider.close()


@pytest.fixture(scope="package")
def softhsm() -> Iterator[Any]:
    """A SoftHSM2 token for this package, with the PKCS#11 library initialised on it."""
    require(_has("pkcs11"), "python-pkcs11 is not installed (scripts/setup dev)")
    require(
        shutil.which("softhsm2-util") is not None, "SoftHSM2 missing: scripts/install-system-deps"
    )
    import pkcs11

    from tests.servers.softhsm import SoftHsmToken

    with SoftHsmToken() as token:
        lib = pkcs11.lib(str(token.module_path))
        lib.reinitialize()  # SoftHSM reads SOFTHSM2_CONF at C_Initialize
        try:
            yield token
        finally:
            lib.finalize()


@pytest.fixture(scope="package")
def pkcs11_harness(softhsm: Any) -> Iterator[Pkcs11Harness]:
    harness = Pkcs11Harness(softhsm)
    yield harness
    harness.close()


# -- Azure Key Vault (the local Key Vault server) ----------------------------------------------


class AkvHarness:
    throttle_retry_after: float | None = 1.0  # the server's injected 429 says Retry-After: 1
    stall_seconds: float | None = None  # a stalled request is never answered

    def __init__(self, server: Any, credential: Any) -> None:
        self.server = server
        self.credential = credential
        self.secrets: list[bytes] = [server.client_secret.encode()]
        self._providers: list[Any] = []

    def provider(self, mek_name: str | None = None, **options: Any) -> Any:
        from field_encrypt.providers.azure_key_vault import AzureKeyVaultProvider

        options.setdefault("key_size", FAST_KEY_SIZE)
        provider = AzureKeyVaultProvider(
            vault_url=self.server.url,
            mek_name=mek_name or _name("mek"),
            credential=self.credential,
            client_options={
                "connection_verify": str(self.server.ca_cert),
                "verify_challenge_resource": False,
            },
            **options,
        )
        self._providers.append(provider)
        return provider

    def unmade(self) -> KeyProvider:
        """A provider on a MEK the service does not have yet (a new name, no version made)."""
        provider: KeyProvider = self.provider()
        return provider

    def make(
        self, versions: int, disabled: frozenset[int] = frozenset(), *, read_timeout: float = 10.0
    ) -> KeyProvider:
        provider: KeyProvider = _populate(
            self.provider(read_timeout=read_timeout), versions, disabled
        )
        return provider

    def inject(self, fault: Fault) -> None:
        kinds = {"throttle": "429", "unavailable": "503", "drop": "drop", "stall": "stall"}
        self.server.inject(kinds[fault])

    def requests(self) -> int:
        count: int = self.server.stats.get("requests", 0)
        return count

    def close(self) -> None:
        for provider in self._providers:
            provider.close()


@pytest.fixture(scope="package")
def keyvault() -> Iterator[Any]:
    require(_has("azure.keyvault.keys"), "azure-keyvault-keys is not installed (scripts/setup dev)")
    from tests.servers.keyvault import KeyVaultServer

    with KeyVaultServer() as server:
        yield server


@pytest.fixture(scope="package")
def akv_harness(keyvault: Any) -> Iterator[AkvHarness]:
    from azure.identity import ClientSecretCredential

    with ClientSecretCredential(
        keyvault.tenant_id,
        keyvault.client_id,
        keyvault.client_secret,
        authority=keyvault.authority,
        disable_instance_discovery=True,
        connection_verify=str(keyvault.ca_cert),
    ) as credential:
        harness = AkvHarness(keyvault, credential)
        yield harness
        harness.close()


# -- AWS KMS (moto on loopback) -----------------------------------------------------------------


class AwsKmsHarness:
    throttle_retry_after: float | None = None  # KMS sends no Retry-After with a throttle
    stall_seconds: float | None = 4.0  # then moto answers the stalled request (room for a slow,
    # loaded machine: the timeout test needs 5 answered calls under it; CI once had 0.34 s each)

    def __init__(self, kms: Any) -> None:
        self.kms = kms
        self.secrets: list[bytes] = []

    def provider(self, mek_name: str | None = None, **options: Any) -> Any:
        import boto3

        from field_encrypt.providers.aws_kms import AwsKmsKeyProvider

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        return AwsKmsKeyProvider(
            mek_name=mek_name or _name("mek"),
            region=self.kms.region,
            endpoint_url=self.kms.endpoint_url,
            session=session,
            **options,
        )

    def unmade(self) -> KeyProvider:
        """A provider on a MEK the service does not have yet (a new name, no version made)."""
        provider: KeyProvider = self.provider()
        return provider

    def make(
        self, versions: int, disabled: frozenset[int] = frozenset(), *, read_timeout: float = 10.0
    ) -> KeyProvider:
        provider: KeyProvider = _populate(
            self.provider(read_timeout=read_timeout), versions, disabled
        )
        return provider

    def inject(self, fault: Fault) -> None:
        kinds = {"throttle": "throttle", "unavailable": "503", "drop": "drop", "stall": "stall"}
        self.kms.inject(kinds[fault])

    def requests(self) -> int:
        return sum(self.kms.calls.values())


@pytest.fixture(scope="package")
def kms() -> Iterator[Any]:
    require(_has("boto3") and _has("moto"), "boto3 or moto is not installed (scripts/setup dev)")
    from tests.servers.kms import KmsServer

    with KmsServer(stall_seconds=AwsKmsHarness.stall_seconds) as server:
        yield server


@pytest.fixture
def aws_kms_harness(kms: Any) -> AwsKmsHarness:
    """The harness on a KMS emptied for this test: listing versions reads the tags of every
    key in the account, so keys left by earlier tests would only slow each test down."""
    kms.reset()
    return AwsKmsHarness(kms)


HARNESS_FIXTURES = {"akv": "akv_harness", "aws-kms": "aws_kms_harness", "pkcs11": "pkcs11_harness"}
"""The fixture that gives each production provider's harness."""
