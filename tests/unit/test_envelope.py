"""Envelope encryption of document fields: round trips, binding, tampering, rotation."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from field_encrypt import (
    DecryptionError,
    DekMissingError,
    FieldEncryptor,
    KeyVersionDisabledError,
)
from field_encrypt import token as tokens
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.cache import DekCache
from field_encrypt.providers.local import LocalKeyProvider

from .conftest import COLLECTIONS

pytestmark = pytest.mark.usefixtures("read_path")  # compiled and pure-Python reads

NOTE: dict[str, Any] = {
    "workspaceId": "w1",
    "title": "Shopping list",
    "body": "milk, eggs, bread",
    "tags": ["home"],
    "meta": {"secret": {"pin": 1234}, "color": "red"},
}


def _fresh(encryptor: FieldEncryptor) -> FieldEncryptor:
    """Another process's view: same provider and store, cold cache."""
    return FieldEncryptor(
        product=encryptor.product,
        provider=encryptor.provider,
        store=encryptor.store,
        collections=COLLECTIONS,
    )


@pytest.mark.parametrize("form", ["text", "binary"])
def test_round_trip(encryptor: FieldEncryptor, form: str) -> None:
    """Encrypted fields become tokens, the rest stays clear, and decryption restores all."""
    encryptor.token_form = form  # type: ignore[assignment]
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    assert tokens.is_token(sealed["title"]) and tokens.is_token(sealed["body"])
    assert tokens.is_token(sealed["meta"]["secret"])
    assert sealed["tags"] == ["home"] and sealed["meta"]["color"] == "red"
    assert NOTE["title"] == "Shopping list", "the input document is not modified"
    assert _fresh(encryptor).decrypt_document("notes", "n1", sealed) == NOTE


def test_one_dek_per_document(encryptor: FieldEncryptor) -> None:
    """All fields of a document share one DEK; two documents never share one."""
    a = encryptor.encrypt_document("notes", "a", NOTE)
    b = encryptor.encrypt_document("notes", "b", NOTE)
    ids = {tokens.read_header(tokens.as_binary(a[f])).dek_id for f in ("title", "body")}
    assert len(ids) == 1
    assert encryptor.dek_id_of("notes", a) != encryptor.dek_id_of("notes", b)
    assert encryptor.store.count_by_version() == {"1": 2}


def test_update_keeps_the_dek(encryptor: FieldEncryptor) -> None:
    """Re-encrypting a document with its dekId reuses the DEK and adds no row."""
    first = encryptor.encrypt_document("notes", "n1", NOTE)
    dek_id = encryptor.dek_id_of("notes", first)
    second = encryptor.encrypt_document("notes", "n1", {**NOTE, "title": "New"}, dek_id=dek_id)
    assert encryptor.dek_id_of("notes", second) == dek_id
    assert encryptor.store.count_not_on("x") == 1
    assert encryptor.decrypt_document("notes", "n1", second)["title"] == "New"


def test_tokens_carry_dek_id_and_mek_version(encryptor: FieldEncryptor) -> None:
    """Each token names its dekId and the MEK version current when it was sealed."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    header = tokens.read_header(tokens.as_binary(sealed["title"]))
    assert header.dek_id.hex() == encryptor.dek_id_of("notes", sealed)
    assert header.mek_version == "1"


@pytest.mark.parametrize(("form", "strict"), [("text", False), ("text", True), ("binary", True)])
def test_every_flipped_byte_is_refused(encryptor: FieldEncryptor, form: str, strict: bool) -> None:
    """Flipping any single byte of a stored token fails decryption with the one documented error.

    (A binary token whose version byte is flipped looks like plaintext bytes, so binary
    tokens are only tamper-proof in strict mode, ``allow_plaintext=False``.)
    """
    encryptor.token_form = form  # type: ignore[assignment]
    encryptor.allow_plaintext = not strict
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    raw = tokens.as_binary(sealed["body"])
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            bad = raw[:i] + bytes([raw[i] ^ bit]) + raw[i + 1 :]
            value: str | bytes = tokens.to_text(bad) if form == "text" else bad
            with pytest.raises(DecryptionError):
                encryptor.decrypt_document("notes", "n1", {**sealed, "body": value})


@pytest.mark.parametrize(
    ("document_id", "field"),
    [("n2", "body"), ("n1", "title")],
    ids=["other-document", "other-field"],
)
def test_tokens_cannot_be_moved(encryptor: FieldEncryptor, document_id: str, field: str) -> None:
    """A token copied into another document or another field fails to decrypt."""
    source = encryptor.encrypt_document("notes", "n1", NOTE)
    target = encryptor.encrypt_document("notes", document_id, NOTE)
    moved = {**target, field: source["body"]}
    with pytest.raises(DecryptionError):
        encryptor.decrypt_document("notes", document_id, moved)


def test_tokens_cannot_be_moved_to_another_collection(encryptor: FieldEncryptor) -> None:
    """The collection is part of the binding."""
    encryptor.collections["drafts"] = ("title", "body")
    other = FieldEncryptor(
        product="notelett",
        provider=encryptor.provider,
        store=encryptor.store,
        collections={"notes": ["body"], "drafts": ["body"]},
    )
    sealed = other.encrypt_document("notes", "n1", NOTE)
    with pytest.raises(DecryptionError):
        other.decrypt_document("drafts", "n1", sealed)


def test_wrapped_dek_cannot_be_moved_to_another_row(encryptor: FieldEncryptor) -> None:
    """Swapping the wrapped DEKs of two rows makes both documents fail to decrypt."""
    a = encryptor.encrypt_document("notes", "a", NOTE)
    b = encryptor.encrypt_document("notes", "b", NOTE)
    store: SqliteDekStore = encryptor.store  # type: ignore[assignment]
    ra = store.get(encryptor.dek_id_of("notes", a) or "")
    rb = store.get(encryptor.dek_id_of("notes", b) or "")
    store.database.execute(
        "UPDATE dek_store SET wrapped = ? WHERE dek_id = ?", (rb.wrapped, ra.dek_id)
    )
    with pytest.raises(DecryptionError):
        _fresh(encryptor).decrypt_document("notes", "a", a)


def test_every_flipped_byte_of_a_wrapped_dek_is_refused(encryptor: FieldEncryptor) -> None:
    """A stored wrapped DEK with any byte flipped does not unwrap."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    store: SqliteDekStore = encryptor.store  # type: ignore[assignment]
    row = store.get(encryptor.dek_id_of("notes", sealed) or "")
    for i in range(len(row.wrapped)):
        bad = row.wrapped[:i] + bytes([row.wrapped[i] ^ 0x04]) + row.wrapped[i + 1 :]
        store.database.execute(
            "UPDATE dek_store SET wrapped = ? WHERE dek_id = ?", (bad, row.dek_id)
        )
        with pytest.raises(DecryptionError):
            _fresh(encryptor).decrypt_document("notes", "n1", sealed)


def test_old_documents_read_after_a_new_version(encryptor: FieldEncryptor) -> None:
    """A document sealed under MEK v1 still decrypts once v2 exists and is current."""
    old = encryptor.encrypt_document("notes", "old", NOTE)
    created = encryptor.provider.create_version()
    assert created.version == "2" and encryptor.provider.current_version() == "2"
    new = encryptor.encrypt_document("notes", "new", NOTE)
    reader = _fresh(encryptor)
    assert reader.decrypt_document("notes", "old", old) == NOTE
    assert reader.decrypt_document("notes", "new", new) == NOTE
    assert encryptor.store.count_by_version() == {"1": 1, "2": 1}


def test_disabled_version_raises_the_documented_error(encryptor: FieldEncryptor) -> None:
    """A DEK whose MEK version is disabled raises KeyVersionDisabledError on a cold read."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    encryptor.provider.create_version()
    encryptor.provider.set_enabled("1", False)
    with pytest.raises(KeyVersionDisabledError):
        _fresh(encryptor).decrypt_document("notes", "n1", sealed)


def test_cache_serves_warm_reads_until_invalidated(encryptor: FieldEncryptor, clock: Any) -> None:
    """A warm read needs no unwrap; invalidating the version forces one, which then fails."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    encryptor.provider.create_version()
    encryptor.provider.set_enabled("1", False)
    assert encryptor.decrypt_document("notes", "n1", sealed) == NOTE  # warm: within the TTL
    assert encryptor.cache.invalidate_version("1") == 1
    with pytest.raises(KeyVersionDisabledError):
        encryptor.decrypt_document("notes", "n1", sealed)
    encryptor.provider.set_enabled("1", True)
    assert encryptor.decrypt_document("notes", "n1", sealed) == NOTE, "no negative caching"


def test_cache_ttl_bounds_a_disabled_version(encryptor: FieldEncryptor, clock: Any) -> None:
    """After the TTL, a DEK of a disabled version is unwrapped again and refused."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    encryptor.provider.create_version()
    encryptor.provider.set_enabled("1", False)
    clock.advance(61)
    with pytest.raises(KeyVersionDisabledError):
        encryptor.decrypt_document("notes", "n1", sealed)


def test_shred_makes_the_document_unreadable(encryptor: FieldEncryptor) -> None:
    """Deleting a document's DEK makes its fields permanently unreadable."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    dek_id = encryptor.dek_id_of("notes", sealed) or ""
    assert encryptor.shred(dek_id) is True
    with pytest.raises(DekMissingError) as info:
        encryptor.decrypt_document("notes", "n1", sealed)
    assert info.value.dek_id == dek_id
    assert encryptor.shred(dek_id) is False


def test_disabled_encryption_writes_plaintext_and_still_reads_tokens(
    encryptor: FieldEncryptor,
) -> None:
    """With encryption off new writes stay clear; stored tokens still decrypt."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    encryptor.enabled = False
    assert encryptor.encrypt_document("notes", "n2", NOTE) == NOTE
    assert encryptor.decrypt_document("notes", "n1", sealed) == NOTE


def test_an_encryptor_refuses_plaintext_unless_told_otherwise(
    provider: LocalKeyProvider, store: SqliteDekStore
) -> None:
    """Built with the defaults, an encryptor refuses plaintext in an encrypted field (a token
    swapped for a value of the attacker's choosing); only an explicit ``allow_plaintext=True``,
    for the backfill, reads it as it is."""
    strict = FieldEncryptor(
        product="notelett", provider=provider, store=store, collections=COLLECTIONS
    )
    assert strict.allow_plaintext is False
    with pytest.raises(DecryptionError):
        strict.decrypt_document("notes", "n1", NOTE)
    backfill = FieldEncryptor(
        product="notelett",
        provider=provider,
        store=store,
        collections=COLLECTIONS,
        allow_plaintext=True,
    )
    assert backfill.decrypt_document("notes", "n1", NOTE) == NOTE
    off = FieldEncryptor(
        product="notelett", provider=provider, store=store, collections=COLLECTIONS, enabled=False
    )
    assert off.allow_plaintext is True  # encryption off: what it writes, it reads
    assert off.decrypt_document("notes", "n1", off.encrypt_document("notes", "n1", NOTE)) == NOTE


def test_plaintext_fields_pass_through_decryption_when_allowed(encryptor: FieldEncryptor) -> None:
    """With allow_plaintext=True, documents written before encryption was enabled read as
    they are (for the backfill)."""
    encryptor.allow_plaintext = True
    assert encryptor.decrypt_document("notes", "n1", NOTE) == NOTE
    assert encryptor.dek_id_of("notes", NOTE) is None


@pytest.mark.parametrize("form", ["text", "binary"])
def test_strict_mode_refuses_plaintext(encryptor: FieldEncryptor, form: str) -> None:
    """With allow_plaintext=False a token swapped for plaintext (or a mangled prefix) is refused."""
    encryptor.token_form = form  # type: ignore[assignment]
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    encryptor.allow_plaintext = False
    assert encryptor.decrypt_document("notes", "n1", sealed) == NOTE
    mangled = ("fe0:" + sealed["body"][4:]) if form == "text" else b"\x02" + sealed["body"][1:]
    for value in ("plain text", b"raw", mangled):
        with pytest.raises(DecryptionError):
            encryptor.decrypt_document("notes", "n1", {**sealed, "body": value})
    assert encryptor.decrypt_document("notes", "n1", {**sealed, "body": None})["body"] is None


def test_none_and_missing_fields_stay_as_they_are(encryptor: FieldEncryptor) -> None:
    """None values and absent paths are left alone."""
    doc = {"title": None, "meta": "not-a-dict"}
    sealed = encryptor.encrypt_document("notes", "n1", doc)
    assert sealed["title"] is None and "body" not in sealed and sealed["meta"] == "not-a-dict"


def test_single_values(encryptor: FieldEncryptor) -> None:
    """encrypt_value/decrypt_value seal one field under a given DEK."""
    dek_id = encryptor.create_dek()
    value = encryptor.encrypt_value("notes", "n1", "title", {"x": 1}, dek_id=dek_id)
    assert encryptor.decrypt_value("notes", "n1", "title", value) == {"x": 1}
    with pytest.raises(DecryptionError):
        encryptor.decrypt_value("notes", "n1", "body", value)


def test_reprs_hold_no_key_material(encryptor: FieldEncryptor, provider: LocalKeyProvider) -> None:
    """No repr of the library's objects shows a MEK or a DEK."""
    sealed = encryptor.encrypt_document("notes", "n1", NOTE)
    dek = encryptor.provider.unwrap(
        encryptor.store.get(encryptor.dek_id_of("notes", sealed) or "").wrapped,
        version="1",
        context=b"field-encrypt/dek/v1\x00notelett\x00"
        + (encryptor.dek_id_of("notes", sealed) or "").encode(),
    )
    import json

    meks = [base64.b64decode(v["key"]) for v in json.loads(provider.path.read_text())["versions"]]
    texts = " ".join(
        repr(o)
        for o in (
            encryptor,
            provider,
            encryptor.store,
            encryptor.cache,
            encryptor.cache.stats(),
            encryptor.store.get(encryptor.dek_id_of("notes", sealed) or ""),
        )
    )
    for secret in [dek, *meks]:
        assert secret.hex() not in texts
        assert base64.b64encode(secret).decode() not in texts
        assert repr(secret) not in texts


def test_unknown_collection_is_a_configuration_error(encryptor: FieldEncryptor) -> None:
    """Encrypting a collection with no configured fields fails loudly, not silently."""
    from field_encrypt import ConfigurationError

    with pytest.raises(ConfigurationError):
        encryptor.encrypt_document("unknown", "x", NOTE)


def test_store_of_another_product_is_refused(
    provider: LocalKeyProvider, store: SqliteDekStore
) -> None:
    """An encryptor refuses a dek_store that belongs to another product."""
    from field_encrypt import ConfigurationError

    with pytest.raises(ConfigurationError):
        FieldEncryptor(
            product="other", provider=provider, store=store, collections={}, cache=DekCache()
        )


@pytest.mark.parametrize("product", ["", "other"])
def test_encryptor_and_index_keyring_check_their_store_with_one_function(
    provider: LocalKeyProvider, store: SqliteDekStore, product: str
) -> None:
    """FieldEncryptor and IndexKeyring refuse a missing product name or another product's
    dek_store through the one shared check, with the same message."""
    from field_encrypt import ConfigurationError, IndexKeyring
    from field_encrypt.backends.base import check_product_store

    with pytest.raises(ConfigurationError) as shared:
        check_product_store(product, store)
    with pytest.raises(ConfigurationError) as by_encryptor:
        FieldEncryptor(product=product, provider=provider, store=store, collections={})
    with pytest.raises(ConfigurationError) as by_keyring:
        IndexKeyring(product=product, provider=provider, store=store)
    assert str(by_encryptor.value) == str(by_keyring.value) == str(shared.value)
    check_product_store("notelett", store)  # its own product: no error
