"""The KeyProvider contract, written once; every provider runs it (see conftest.py)."""

from __future__ import annotations

import base64
import os
import time

import pytest

from field_encrypt.errors import (
    ConfigurationError,
    DecryptionError,
    FieldEncryptError,
    KeyProviderUnavailableError,
    KeyVersionDisabledError,
    KeyVersionNotFoundError,
)
from field_encrypt.providers.base import (
    BatchRewrapper,
    KeyProvider,
    WrappedDek,
    dek_context,
    unwrap_many,
    wrap_many,
)
from field_encrypt.providers.observed import ObservedBatchProvider
from tests.harnesses import AkvHarness, Fault

from .conftest import ProviderHarness, RemoteHarness

CTX = dek_context("contract", "0" * 32)
UNMADE_KINDS = ["akv", "aws-kms", "pkcs11"]
"""The providers that can name a MEK with no version yet (a local keyring file is created
with its first version, the env key is its configuration, the KEK tier sits on local)."""
BATCH_REWRAP_KINDS = ["local", "env"]
"""The providers that rewrap in batches (``BatchRewrapper``); the others one DEK at a time."""
OTHER_CTX = dek_context("contract", "1" * 32)


def test_is_a_key_provider(provider_harness: ProviderHarness) -> None:
    """The provider satisfies the runtime-checkable protocol."""
    assert isinstance(provider_harness.make(1), KeyProvider)


def test_versions_and_states(provider_harness: ProviderHarness) -> None:
    """Versions are listed oldest first with their state; the newest is current."""
    provider = provider_harness.make(3, disabled=frozenset({0}))
    versions = provider.versions()
    assert len(versions) == 3
    assert [v.enabled for v in versions] == [False, True, True]
    assert [v.current for v in versions] == [False, False, True]
    assert provider.current_version() == versions[-1].version
    assert len({v.version for v in versions}) == 3


def test_the_kind_lists_say_what_each_provider_can(
    provider_harness: ProviderHarness, request: pytest.FixtureRequest
) -> None:
    """UNMADE_KINDS and BATCH_REWRAP_KINDS name exactly the providers the two tests below
    apply to, so a provider that gains either ability is tested, not left out."""
    kind = request.node.callspec.params["provider_harness"]
    assert (provider_harness.unmade() is not None) == (kind in UNMADE_KINDS)
    assert isinstance(provider_harness.make(1), BatchRewrapper) == (kind in BATCH_REWRAP_KINDS)


@pytest.mark.parametrize("provider_harness", UNMADE_KINDS, indirect=True)
def test_a_mek_the_service_does_not_have_yet_lists_no_versions(
    provider_harness: ProviderHarness,
) -> None:
    """A new key name, alias or label (no version made yet): ``current_version`` is
    KeyVersionNotFoundError and ``versions()`` is empty, not an error (the protocol's rule),
    so that ``keys create`` can announce its first version and ``audit verify`` can resolve
    that intent after a crash (a 404 there once stopped `keys create` on a new Key Vault key)."""
    provider = provider_harness.unmade()
    assert provider is not None
    with pytest.raises(KeyVersionNotFoundError):
        provider.current_version()
    assert provider.versions() == []
    assert ObservedBatchProvider(provider).versions() == []
    made = provider.create_version()
    assert [v.version for v in provider.versions()] == [made.version]


def test_round_trip_under_every_enabled_version(provider_harness: ProviderHarness) -> None:
    """A DEK wrapped under any enabled version unwraps to itself under that version."""
    provider = provider_harness.make(2)
    dek = os.urandom(32)
    for version in provider.versions():
        wrapped = provider.wrap(dek, context=CTX, version=version.version)
        assert wrapped.mek_version == version.version
        assert dek not in wrapped.ciphertext
        assert provider.unwrap(wrapped.ciphertext, version=version.version, context=CTX) == dek


def test_wrap_defaults_to_the_current_version(provider_harness: ProviderHarness) -> None:
    """Without a version, wrap uses the current one (for the KEK tier: a KEK on the current one)."""
    provider = provider_harness.make(2)
    effective = getattr(provider, "effective_version", lambda version: version)
    assert effective(provider.wrap(os.urandom(32), context=CTX).mek_version) == (
        provider.current_version()
    )


def test_rewrap_moves_a_dek_to_another_version(provider_harness: ProviderHarness) -> None:
    """rewrap gives the same DEK under the target version."""
    provider = provider_harness.make(2)
    old, new = (v.version for v in provider.versions())
    dek = os.urandom(32)
    wrapped = provider.wrap(dek, context=CTX, version=old)
    moved = provider.rewrap(wrapped.ciphertext, from_version=old, context=CTX, to_version=new)
    assert moved.mek_version == new
    assert provider.unwrap(moved.ciphertext, version=new, context=CTX) == dek


def test_wrap_many_and_unwrap_many_match_one_call_per_dek(
    provider_harness: ProviderHarness,
) -> None:
    """wrap_many and unwrap_many give what wrap and unwrap give, one result per item in
    order, and a bad item's error in its place without failing the others."""
    provider = provider_harness.make(2)
    old, new = (v.version for v in provider.versions())
    deks = [(os.urandom(32), dek_context("contract", f"{i:032x}")) for i in range(3)]
    for subject in (provider, ObservedBatchProvider(provider)):
        wrapped = wrap_many(subject, deks, version=old)
        assert all(isinstance(w, WrappedDek) for w in wrapped)
        wraps = [w for w in wrapped if isinstance(w, WrappedDek)]
        for (dek, context), w in zip(deks, wraps, strict=True):
            assert provider.unwrap(w.ciphertext, version=w.mek_version, context=context) == dek
        items = [(w.ciphertext, w.mek_version, c) for w, (_, c) in zip(wraps, deks, strict=True)]
        items[1] = (items[1][0], items[1][1], OTHER_CTX)  # moved to another dekId
        items.append((items[0][0], new, deks[0][1]))  # presented under another version
        results = unwrap_many(subject, items)
        assert results[0] == deks[0][0] and results[2] == deks[2][0]
        assert isinstance(results[1], DecryptionError)
        assert isinstance(results[3], DecryptionError)
        current = wrap_many(subject, deks[:1])  # without a version: the current one
        assert isinstance(current[0], WrappedDek)
        effective = getattr(provider, "effective_version", lambda version: version)
        assert effective(current[0].mek_version) == provider.current_version()


@pytest.mark.parametrize("provider_harness", BATCH_REWRAP_KINDS, indirect=True)
def test_rewrap_many_gives_each_bad_item_its_error_in_place(
    provider_harness: ProviderHarness,
) -> None:
    """A provider that rewraps in batches (BatchRewrapper) moves each good item to the
    target and puts a bad item's error (altered binding, unknown version) in its place."""
    provider = provider_harness.make(2)
    assert isinstance(provider, BatchRewrapper)
    old, new = (v.version for v in provider.versions())
    deks = [(os.urandom(32), dek_context("contract", f"{i:032x}")) for i in range(3)]
    wraps = [provider.wrap(dek, context=context, version=old) for dek, context in deks]
    items = [(w.ciphertext, old, c) for w, (_, c) in zip(wraps, deks, strict=True)]
    items[1] = (items[1][0], old, OTHER_CTX)  # moved to another dekId
    items.append((items[0][0], "no-such-version", deks[0][1]))
    results = provider.rewrap_many(items, to_version=new)
    for index in (0, 2):
        moved = results[index]
        assert isinstance(moved, WrappedDek) and moved.mek_version == new
        dek, context = deks[index]
        assert provider.unwrap(moved.ciphertext, version=new, context=context) == dek
    assert isinstance(results[1], DecryptionError)
    assert isinstance(results[3], KeyVersionNotFoundError)


def test_wrap_many_under_a_disabled_version_fails_each_item(
    provider_harness: ProviderHarness,
) -> None:
    """A disabled or unknown version fails every item of the batch, as it fails wrap."""
    provider = provider_harness.make(2, disabled=frozenset({0}))
    old = provider.versions()[0].version
    deks = [(os.urandom(32), CTX), (os.urandom(32), OTHER_CTX)]
    results = wrap_many(provider, deks, version=old)
    assert [type(r) for r in results] == [KeyVersionDisabledError] * 2
    results = wrap_many(provider, deks, version="no-such-version")
    assert [type(r) for r in results] == [KeyVersionNotFoundError] * 2
    assert isinstance(
        unwrap_many(provider, [(b"\x00" * 60, "no-such-version", CTX)])[0], KeyVersionNotFoundError
    )


def test_wrong_binding_is_refused(provider_harness: ProviderHarness) -> None:
    """A wrapped DEK moved to another dekId does not unwrap."""
    provider = provider_harness.make(1)
    wrapped = provider.wrap(os.urandom(32), context=CTX)
    with pytest.raises(DecryptionError):
        provider.unwrap(wrapped.ciphertext, version=wrapped.mek_version, context=OTHER_CTX)


def test_wrong_version_is_refused(provider_harness: ProviderHarness) -> None:
    """A DEK presented under another version than the one that wrapped it does not unwrap."""
    provider = provider_harness.make(2)
    old, new = (v.version for v in provider.versions())
    wrapped = provider.wrap(os.urandom(32), context=CTX, version=old)
    with pytest.raises(DecryptionError):
        provider.unwrap(wrapped.ciphertext, version=new, context=CTX)


def test_every_flipped_byte_is_refused(provider_harness: ProviderHarness) -> None:
    """Flipping any single byte of a wrapped DEK makes it fail to unwrap."""
    provider = provider_harness.make(1)
    wrapped = provider.wrap(os.urandom(32), context=CTX)
    data = wrapped.ciphertext
    positions = range(len(data)) if len(data) <= 128 else range(0, len(data), len(data) // 64)
    for i in positions:
        tampered = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        with pytest.raises(DecryptionError):
            provider.unwrap(tampered, version=wrapped.mek_version, context=CTX)


def test_disabled_version_refuses_wrap_and_unwrap(provider_harness: ProviderHarness) -> None:
    """Nothing is wrapped or unwrapped under a disabled version."""
    enabled = provider_harness.make(2)
    old = enabled.versions()[0].version
    wrapped = enabled.wrap(os.urandom(32), context=CTX, version=old)
    disabled = provider_harness.make(2, disabled=frozenset({0}))
    old = disabled.versions()[0].version
    with pytest.raises(KeyVersionDisabledError):
        disabled.wrap(os.urandom(32), context=CTX, version=old)
    with pytest.raises((KeyVersionDisabledError, DecryptionError)):
        disabled.unwrap(wrapped.ciphertext, version=old, context=CTX)
    mine = disabled.wrap(os.urandom(32), context=CTX)
    with pytest.raises(KeyVersionDisabledError):
        disabled.rewrap(mine.ciphertext, from_version=mine.mek_version, context=CTX, to_version=old)


def test_unknown_version_is_not_found(provider_harness: ProviderHarness) -> None:
    """An unknown version is KeyVersionNotFoundError, for wrap and unwrap."""
    provider = provider_harness.make(1)
    with pytest.raises(KeyVersionNotFoundError):
        provider.wrap(os.urandom(32), context=CTX, version="no-such-version")
    with pytest.raises(KeyVersionNotFoundError):
        provider.unwrap(b"\x00" * 60, version="no-such-version", context=CTX)


def test_manage_versions_or_refuse_clearly(provider_harness: ProviderHarness) -> None:
    """create_version makes a new current version and set_enabled toggles state, or the
    provider refuses with a ConfigurationError saying how to do it instead."""
    provider = provider_harness.make(1)
    try:
        created = provider.create_version()
    except ConfigurationError as exc:
        assert "FIELD_ENCRYPT" in str(exc)
        return
    assert created.current and created.enabled
    assert provider.current_version() == created.version
    old = provider.versions()[0].version
    assert provider.set_enabled(old, False).enabled is False
    assert provider.versions()[0].enabled is False
    assert provider.set_enabled(old, True).enabled is True
    with pytest.raises(KeyVersionNotFoundError):
        provider.set_enabled("no-such-version", False)


def test_key_material_stays_out_of_reprs_and_errors(provider_harness: ProviderHarness) -> None:
    """No repr or error message of the provider contains any key, raw, hex or base64."""
    provider = provider_harness.make(2, disabled=frozenset({0}))
    dek = os.urandom(32)
    wrapped = provider.wrap(dek, context=CTX)
    texts = [repr(provider), repr(wrapped), str(wrapped), repr(provider.versions())]
    for call in (
        lambda: provider.unwrap(wrapped.ciphertext, version=wrapped.mek_version, context=OTHER_CTX),
        lambda: provider.wrap(dek, context=CTX, version=provider.versions()[0].version),
        lambda: provider.unwrap(b"garbage", version=wrapped.mek_version, context=CTX),
    ):
        with pytest.raises(FieldEncryptError) as info:
            call()
        texts += [str(info.value), repr(info.value)]
    for secret in [*provider_harness.secrets, dek]:
        forms = [secret.hex(), base64.b64encode(secret).decode(), repr(secret)]
        for text in texts:
            assert not any(form in text for form in forms)


# -- providers that call a service: transient failures, as the rotation engine sees them --------


def _warm(harness: RemoteHarness, **options: float) -> tuple[KeyProvider, bytes, bytes]:
    """A provider that has already wrapped and unwrapped once (credentials, keys, connections
    ready), the DEK and its wrap."""
    provider = harness.make(1, **options)
    dek = os.urandom(32)
    wrapped = provider.wrap(dek, context=CTX).ciphertext
    assert provider.unwrap(wrapped, version=provider.current_version(), context=CTX) == dek
    return provider, dek, wrapped


def test_throttling_is_transient_and_left_to_the_caller(remote_harness: RemoteHarness) -> None:
    """A throttled call is KeyProviderUnavailableError carrying the service's Retry-After, after
    exactly one request (the SDK does not retry behind the caller's back); a retry succeeds."""
    provider, dek, wrapped = _warm(remote_harness)
    version = provider.current_version()
    before = remote_harness.requests()
    remote_harness.inject("throttle")
    with pytest.raises(KeyProviderUnavailableError) as info:
        provider.unwrap(wrapped, version=version, context=CTX)
    assert info.value.retry_after == remote_harness.throttle_retry_after
    assert info.value.cause is not None
    assert remote_harness.requests() - before == 1
    assert provider.unwrap(wrapped, version=version, context=CTX) == dek


@pytest.mark.parametrize("fault", ["unavailable", "drop"])
def test_service_failures_are_transient(remote_harness: RemoteHarness, fault: Fault) -> None:
    """A 5xx answer or a dropped connection is KeyProviderUnavailableError, not retried inside."""
    provider, dek, wrapped = _warm(remote_harness)
    version = provider.current_version()
    before = remote_harness.requests()
    remote_harness.inject(fault)
    with pytest.raises(KeyProviderUnavailableError):
        provider.rewrap(wrapped, from_version=version, context=CTX)
    assert remote_harness.requests() - before == 1
    assert provider.unwrap(wrapped, version=version, context=CTX) == dek


def test_a_stalled_call_times_out(remote_harness: RemoteHarness) -> None:
    """A call the service never answers fails once the configured read timeout has passed,
    instead of hanging: not sooner (the client did wait for an answer) and not later than
    the timeout plus a margin measured in the same run (what a fresh provider's first,
    answered call takes), so a loaded machine moves the bound with it. The timeout is 0.3 s,
    or three such calls if that is longer, so that no answered call of the run trips it."""
    _times_out_when_stalled(remote_harness)


def test_a_stalled_call_times_out_when_every_answer_is_slow(akv_harness: AkvHarness) -> None:
    """What a loaded machine does to the test above, made on purpose: with 0.35 s added to
    every crypto call (more than the fixed 0.3 s read timeout the test once had, which
    then timed out while warming up), a stall is still told from a slow answer."""
    akv_harness.server.set_latency(0.35)
    try:
        _times_out_when_stalled(akv_harness)
    finally:
        akv_harness.server.set_latency(0.0)


def _times_out_when_stalled(remote_harness: RemoteHarness) -> None:
    provider, _, wrapped = _warm(remote_harness)  # the versions, made with the default timeout
    version = provider.current_version()
    started = time.monotonic()
    remote_harness.provider(provider.mek_name).unwrap(wrapped, version=version, context=CTX)
    cold = time.monotonic() - started  # connection, token, versions and the call: answered
    timeout = max(0.3, 3 * cold)
    margin = 0.2 + 2 * cold
    if remote_harness.stall_seconds is not None:  # the server answers a stall in the end
        assert timeout + margin < remote_harness.stall_seconds, (
            f"an answered call took {cold:.2f} s: too slow to tell the timeout from the "
            f"{remote_harness.stall_seconds} s stall"
        )
    stalled = remote_harness.provider(provider.mek_name, read_timeout=timeout)
    stalled.unwrap(wrapped, version=version, context=CTX)  # warm, under the short timeout
    remote_harness.inject("stall")
    started = time.monotonic()
    with pytest.raises(KeyProviderUnavailableError):
        stalled.unwrap(wrapped, version=version, context=CTX)
    elapsed = time.monotonic() - started
    assert timeout * 0.95 <= elapsed <= timeout + margin, (
        f"stalled call failed after {elapsed:.2f} s; read timeout {timeout:.2f} s, "
        f"margin {margin:.2f} s"
    )
