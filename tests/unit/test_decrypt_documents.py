"""``decrypt_documents``: a page decrypted at once gives what one-by-one gives, errors included."""

from __future__ import annotations

from typing import Any

import pytest

from field_encrypt import DecryptionError, DekMissingError, FieldEncryptor
from field_encrypt import token as tokens
from field_encrypt.cache import DekCache

pytestmark = pytest.mark.usefixtures("read_path")  # compiled and pure-Python reads

PAGE_FIELDS = {"notes": ["title", "body"]}


def _flat(encryptor: FieldEncryptor, form: str = "binary") -> FieldEncryptor:
    """An encryptor on the same keys and store with only top-level fields (the batch path)."""
    return FieldEncryptor(
        product=encryptor.product,
        provider=encryptor.provider,
        store=encryptor.store,
        collections=PAGE_FIELDS,
        token_form=form,  # type: ignore[arg-type]
        cache=DekCache(ttl_seconds=60),
    )


def _page(fe: FieldEncryptor, n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"n{i}", fe.encrypt_document("notes", f"n{i}", {"title": f"t{i}", "body": f"b{i}"}))
        for i in range(n)
    ]


def test_the_encryptor_reads_with_the_path_under_test(
    encryptor: FieldEncryptor, read_path: str
) -> None:
    """The read_path fixture is set before the encryptor is made, so it takes that path."""
    assert (encryptor._open is not None) == (read_path == "compiled")


@pytest.mark.parametrize("form", ["binary", "text"])
def test_a_page_decrypts_like_one_document_at_a_time(encryptor: FieldEncryptor, form: str) -> None:
    """Every document of a page comes back as decrypt_document returns it, in order."""
    fe = _flat(encryptor, form)
    page = _page(fe, 7)
    cold = _flat(encryptor, form)  # DEKs not cached: each is unwrapped once
    assert cold.decrypt_documents("notes", page) == [
        fe.decrypt_document("notes", i, d) for i, d in page
    ]
    assert cold.decrypt_documents("notes", []) == []
    assert page[0][1]["title"] != "t0", "the input documents are not modified"


def test_plaintext_and_missing_fields_pass_through_when_allowed(encryptor: FieldEncryptor) -> None:
    """With allow_plaintext=True (a backfill), a page mixing tokens, plaintext and absent
    fields gives the one-document answers."""
    fe = _flat(encryptor)
    fe.allow_plaintext = True
    page = [*_page(fe, 3), ("p1", {"title": "plain", "body": None}), ("p2", {"other": 1})]
    assert fe.decrypt_documents("notes", iter(page)) == [
        fe.decrypt_document("notes", i, d) for i, d in page
    ]


def test_plaintext_on_a_page_is_refused_by_default(encryptor: FieldEncryptor) -> None:
    """By default plaintext in an encrypted field fails the page, as it fails one document;
    absent fields and None still pass."""
    fe = _flat(encryptor)
    page = [*_page(fe, 3), ("p2", {"other": 1}), ("p3", {"title": None})]
    assert fe.decrypt_documents("notes", page) == [
        fe.decrypt_document("notes", i, d) for i, d in page
    ]
    plain = ("p1", {"title": "plain", "body": None})
    with pytest.raises(DecryptionError):
        fe.decrypt_document("notes", *plain)
    with pytest.raises(DecryptionError):
        fe.decrypt_documents("notes", [*page, plain])


def test_nested_fields_take_the_one_document_path(encryptor: FieldEncryptor) -> None:
    """A collection with nested encrypted fields still decrypts a page correctly."""
    docs = [
        (f"n{i}", encryptor.encrypt_document("notes", f"n{i}", {"meta": {"secret": i}}))
        for i in range(3)
    ]
    assert encryptor.decrypt_documents("notes", docs) == [{"meta": {"secret": i}} for i in range(3)]


def test_each_dek_is_read_from_the_cache_once_per_page(encryptor: FieldEncryptor) -> None:
    """Ten documents under ten cached DEKs: ten cache hits, no unwrap."""
    fe = _flat(encryptor)
    page = _page(fe, 10)
    before = fe.cache.stats()
    fe.decrypt_documents("notes", page)
    after = fe.cache.stats()
    assert (after.hits - before.hits, after.misses - before.misses) == (10, 0)


@pytest.mark.parametrize("strict", [False, True])
def test_a_flipped_byte_anywhere_on_the_page_is_refused(
    encryptor: FieldEncryptor, strict: bool
) -> None:
    """Flipping any byte of one token of one document fails the page as that document fails."""
    fe = _flat(encryptor)
    fe.allow_plaintext = not strict
    page = _page(fe, 4)
    raw = page[2][1]["body"]
    for i in range(len(raw)):
        bad = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        tampered = [*page[:2], ("n2", {**page[2][1], "body": bad}), *page[3:]]
        if not strict and i == 0:  # no longer a token: plaintext bytes, as one by one
            assert fe.decrypt_documents("notes", tampered)[2]["body"] == bad
            continue
        with pytest.raises(DecryptionError):
            fe.decrypt_documents("notes", tampered)


def test_a_token_moved_to_another_document_is_refused(encryptor: FieldEncryptor) -> None:
    """The binding still names each document: swapping two documents' titles fails."""
    fe = _flat(encryptor)
    page = _page(fe, 3)
    swapped = [
        (page[0][0], {**page[0][1], "title": page[1][1]["title"]}),
        (page[1][0], {**page[1][1], "title": page[0][1]["title"]}),
        page[2],
    ]
    with pytest.raises(DecryptionError):
        fe.decrypt_documents("notes", swapped)


def test_a_shredded_dek_names_itself(encryptor: FieldEncryptor) -> None:
    """A document whose DEK was shredded fails the page with DekMissingError naming it."""
    fe = _flat(encryptor)
    page = _page(fe, 3)
    dek_id = tokens.read_header(page[1][1]["title"]).dek_id.hex()
    fe.shred(dek_id)
    with pytest.raises(DekMissingError) as caught:
        _flat(encryptor).decrypt_documents("notes", page)
    assert caught.value.dek_id == dek_id
