"""The KMS harness behaves like AWS KMS for the calls the provider makes, faults included."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError  # noqa: E402
from moto.kms.models import KmsBackend  # noqa: E402

from tests.servers import kms as kms_harness  # noqa: E402
from tests.servers.kms import KmsServer  # noqa: E402

NO_RETRIES = Config(retries={"total_max_attempts": 1})
CONTEXT = {"dekId": "d-1", "purpose": "wrap"}


def test_key_state_check_is_confined_to_running_servers() -> None:
    """moto's KmsBackend is wrapped only while a KmsServer runs (this test runs before the
    module's shared server starts)."""
    assert kms_harness._patch_users == 0
    with KmsServer():
        assert KmsBackend.encrypt is kms_harness._encrypt_if_enabled
    assert KmsBackend.encrypt is kms_harness._moto_encrypt
    assert KmsBackend.decrypt is kms_harness._moto_decrypt


@pytest.fixture(scope="module")
def server() -> Iterator[KmsServer]:
    with KmsServer(stall_seconds=1.0) as kms:
        yield kms


@pytest.fixture
def kms(server: KmsServer) -> KmsServer:
    server.clear_faults()
    return server


@pytest.fixture
def client(kms: KmsServer) -> Any:
    return kms.client(NO_RETRIES)


def new_key(client: Any) -> str:
    key_id: str = client.create_key(Description="field-encrypt test MEK")["KeyMetadata"]["KeyId"]
    return key_id


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    code: str = excinfo.value.response["Error"]["Code"]
    return code


def test_encrypt_decrypt_binds_the_encryption_context(client: Any) -> None:
    """Decrypt needs the EncryptionContext used to encrypt; otherwise InvalidCiphertextException."""
    key_id = new_key(client)
    client.create_alias(AliasName="alias/notelett-mek", TargetKeyId=key_id)

    sealed = client.encrypt(
        KeyId="alias/notelett-mek", Plaintext=b"k" * 32, EncryptionContext=CONTEXT
    )
    opened = client.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT)

    assert opened["Plaintext"] == b"k" * 32
    assert opened["KeyId"] == sealed["KeyId"] and sealed["KeyId"].endswith(key_id)
    for wrong in ({}, {**CONTEXT, "dekId": "d-2"}):
        with pytest.raises(client.exceptions.InvalidCiphertextException):
            client.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=wrong)


def test_reencrypt_moves_a_ciphertext_to_another_key(client: Any) -> None:
    """ReEncrypt yields a ciphertext under the destination key, decryptable with its context."""
    old, new = new_key(client), new_key(client)
    sealed = client.encrypt(KeyId=old, Plaintext=b"dek", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]

    moved = client.re_encrypt(
        CiphertextBlob=sealed,
        SourceEncryptionContext=CONTEXT,
        DestinationKeyId=new,
        DestinationEncryptionContext=CONTEXT,
    )

    assert moved["SourceKeyId"].endswith(old) and moved["KeyId"].endswith(new)
    opened = client.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert (opened["Plaintext"], opened["KeyId"]) == (b"dek", moved["KeyId"])


def test_disabled_key_is_refused_like_aws(client: Any) -> None:
    """Every cryptographic call on a disabled key fails with DisabledException (HTTP 400);
    EnableKey restores them."""
    key_id, other = new_key(client), new_key(client)
    sealed = client.encrypt(KeyId=key_id, Plaintext=b"dek", EncryptionContext=CONTEXT)
    sealed_by_other = client.encrypt(KeyId=other, Plaintext=b"dek")["CiphertextBlob"]

    client.disable_key(KeyId=key_id)
    calls = {
        "Encrypt": lambda: client.encrypt(KeyId=key_id, Plaintext=b"x"),
        "Decrypt": lambda: client.decrypt(
            CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT
        ),
        "ReEncrypt from": lambda: client.re_encrypt(
            CiphertextBlob=sealed["CiphertextBlob"],
            SourceEncryptionContext=CONTEXT,
            DestinationKeyId=other,
        ),
        "ReEncrypt to": lambda: client.re_encrypt(
            CiphertextBlob=sealed_by_other, DestinationKeyId=key_id
        ),
        "GenerateDataKey": lambda: client.generate_data_key(KeyId=key_id, KeySpec="AES_256"),
        "GenerateDataKeyWithoutPlaintext": lambda: client.generate_data_key_without_plaintext(
            KeyId=key_id, KeySpec="AES_256"
        ),
    }
    for name, call in calls.items():
        with pytest.raises(client.exceptions.DisabledException) as excinfo:
            call()
        response = excinfo.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, name
        assert response["Error"]["Message"] == f"{sealed['KeyId']} is disabled.", name
    assert client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"

    client.enable_key(KeyId=key_id)
    opened = client.decrypt(CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert opened["Plaintext"] == b"dek"


def test_decrypt_naming_another_key_is_incorrect_key_like_aws(client: Any) -> None:
    """A Decrypt whose KeyId is not the ciphertext's key fails with IncorrectKeyException, as
    in AWS (moto alone says AccessDeniedException); naming the right key decrypts."""
    key_id, other = new_key(client), new_key(client)
    sealed = client.encrypt(KeyId=key_id, Plaintext=b"dek", EncryptionContext=CONTEXT)

    with pytest.raises(client.exceptions.IncorrectKeyException):
        client.decrypt(
            CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT, KeyId=other
        )
    opened = client.decrypt(
        CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext=CONTEXT, KeyId=key_id
    )
    assert opened["Plaintext"] == b"dek"


def test_key_pending_deletion_is_in_an_invalid_state(client: Any) -> None:
    """A key scheduled for deletion answers KMSInvalidStateException, as AWS does."""
    key_id = new_key(client)
    sealed = client.encrypt(KeyId=key_id, Plaintext=b"dek")["CiphertextBlob"]
    client.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with pytest.raises(client.exceptions.KMSInvalidStateException):
        client.decrypt(CiphertextBlob=sealed)


def test_update_alias_moves_the_alias(client: Any) -> None:
    """After UpdateAlias, encrypting through the alias uses the new key; old ciphertexts still
    decrypt under the old key."""
    v1, v2 = new_key(client), new_key(client)
    client.create_alias(AliasName="alias/rotating-mek", TargetKeyId=v1)
    before = client.encrypt(KeyId="alias/rotating-mek", Plaintext=b"dek")

    client.update_alias(AliasName="alias/rotating-mek", TargetKeyId=v2)
    after = client.encrypt(KeyId="alias/rotating-mek", Plaintext=b"dek")

    assert before["KeyId"].endswith(v1) and after["KeyId"].endswith(v2)
    assert client.decrypt(CiphertextBlob=before["CiphertextBlob"])["KeyId"].endswith(v1)


def test_injected_throttle_reaches_the_caller_without_retries(kms: KmsServer, client: Any) -> None:
    """With total_max_attempts=1 the client makes one attempt and raises ThrottlingException."""
    key_id = new_key(client)
    kms.inject("throttle", count=1, operation="Encrypt")

    with pytest.raises(ClientError) as excinfo:
        client.encrypt(KeyId=key_id, Plaintext=b"x")

    assert error_code(excinfo) == "ThrottlingException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert kms.calls["Encrypt"] == 1
    client.encrypt(KeyId=key_id, Plaintext=b"x")  # the fault was used up


def test_max_attempts_counts_retries_not_attempts(kms: KmsServer) -> None:
    """botocore's retries={"max_attempts": 1} still retries once; total_max_attempts is the cap."""
    client = kms.client(Config(retries={"max_attempts": 1, "mode": "standard"}))
    key_id = new_key(client)
    kms.inject("throttle", count=1, operation="Encrypt")

    client.encrypt(KeyId=key_id, Plaintext=b"x")  # throttled, retried, succeeded

    assert kms.calls["Encrypt"] == 2


def test_faults_can_target_one_operation(kms: KmsServer, client: Any) -> None:
    """A fault queued for Decrypt leaves Encrypt alone; calls are counted per operation."""
    key_id = new_key(client)
    kms.inject("503", count=2, operation="Decrypt")
    sealed = client.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]

    for _ in range(2):
        with pytest.raises(ClientError) as excinfo:
            client.decrypt(CiphertextBlob=sealed)
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert client.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"x"
    assert (kms.calls["CreateKey"], kms.calls["Encrypt"], kms.calls["Decrypt"]) == (1, 1, 3)


def test_dropped_connection(kms: KmsServer, client: Any) -> None:
    """A dropped request closes the connection with no response: ConnectionClosedError."""
    key_id = new_key(client)
    kms.inject("drop", operation="Encrypt")
    with pytest.raises(ConnectionClosedError):
        client.encrypt(KeyId=key_id, Plaintext=b"x")
    client.encrypt(KeyId=key_id, Plaintext=b"x")


def test_stalled_request_times_out_but_still_happens(kms: KmsServer) -> None:
    """A stalled request outlives the client's read timeout, then moto carries it out."""
    patient = kms.client(NO_RETRIES)  # calls with the 0.2 s client flake on a busy machine
    key_id = new_key(patient)
    client = kms.client(Config(retries={"total_max_attempts": 1}, read_timeout=0.2))
    kms.inject("stall", operation="CreateAlias")

    with pytest.raises(ReadTimeoutError):
        client.create_alias(AliasName="alias/late", TargetKeyId=key_id)

    deadline = time.monotonic() + 5
    while not _alias_exists(patient, "alias/late"):
        assert time.monotonic() < deadline, "the stalled CreateAlias never reached moto"
        time.sleep(0.05)


def _alias_exists(client: Any, name: str) -> bool:
    aliases = client.list_aliases()["Aliases"]
    return any(alias["AliasName"] == name for alias in aliases)


def test_unknown_fault_kind_is_refused(kms: KmsServer) -> None:
    """inject() checks its arguments before queueing anything."""
    with pytest.raises(ValueError):
        kms.inject("teapot")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        kms.inject("drop", count=0)
