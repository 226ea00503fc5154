"""The compiled read path (``field_encrypt._gcm``) reads exactly what the pure-Python path
reads: the same values, and for every damaged token the same error class and message."""

from __future__ import annotations

import os
import pickle
import sys
import threading
from typing import Any

import pytest

from field_encrypt import DekMissingError, FieldEncryptor, compiled
from field_encrypt import token as tokens
from field_encrypt.cache import DekCache

FIELDS = {"notes": ["title", "body"]}
VALUES: list[object] = [
    "Shopping list",
    "",
    "ünïcödé ✓ 𝄞",
    b"\x00\x01binary",
    b"",
    [1, "two", None],
    {"pin": 1234},
    42,
    True,
]

needs_extension = pytest.mark.skipif(not compiled.built(), reason="field_encrypt._gcm is not built")


def test_ci_builds_the_compiled_path() -> None:
    """In CI (``CI`` set, as .ci/run sets it) the extension must have built and be active:
    a broken build fails here instead of silently reading in pure Python."""
    if not os.environ.get("CI") and not compiled.built():
        pytest.skip("field_encrypt._gcm is not built (not CI: the pure-Python path serves)")
    assert compiled.built(), "field_encrypt._gcm did not build: see scripts/setup's output"
    assert not compiled.forced_off(), f"{compiled.PURE_PYTHON_ENV} is set in CI"


def _pair(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch, form: str = "binary"
) -> tuple[FieldEncryptor, ...]:
    """A compiled-path and a pure-Python encryptor on the same keys, flat fields."""
    made = []
    for pure in ("", "1"):
        monkeypatch.setenv(compiled.PURE_PYTHON_ENV, pure)
        made.append(
            FieldEncryptor(
                product=encryptor.product,
                provider=encryptor.provider,
                store=encryptor.store,
                collections=FIELDS,
                token_form=form,  # type: ignore[arg-type]
                cache=DekCache(ttl_seconds=60),
            )
        )
    monkeypatch.delenv(compiled.PURE_PYTHON_ENV)
    return tuple(made)


def _outcome(fe: FieldEncryptor, page: list[tuple[str, dict[str, Any]]]) -> object:
    """What a read gives: the documents, or the error's class and message."""
    try:
        return ("ok", fe.decrypt_documents("notes", page))
    except Exception as error:  # noqa: BLE001 - the test compares whatever is raised
        return (type(error), str(error))


def _one(fe: FieldEncryptor, doc_id: str, doc: dict[str, Any]) -> object:
    try:
        return ("ok", fe.decrypt_document("notes", doc_id, doc))
    except Exception as error:  # noqa: BLE001 - the test compares whatever is raised
        return (type(error), str(error))


@needs_extension
def test_the_environment_variable_turns_it_off(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FIELD_ENCRYPT_PURE_PYTHON=1 at construction gives a pure-Python encryptor."""
    fast, pure = _pair(encryptor, monkeypatch)
    assert fast._open is not None and pure._open is None
    monkeypatch.setenv(compiled.PURE_PYTHON_ENV, "1")
    assert compiled.reader() is None


@needs_extension
@pytest.mark.parametrize("form", ["binary", "text"])
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_every_value_type_reads_alike(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch, value: object, form: str
) -> None:
    """Text, bytes and JSON values come back equal, and of the same type, on both paths."""
    fast, pure = _pair(encryptor, monkeypatch, form)
    page = [(f"n{i}", fast.encrypt_document("notes", f"n{i}", {"title": value})) for i in range(3)]
    got = fast.decrypt_documents("notes", page)
    assert got == pure.decrypt_documents("notes", page) == [{"title": value}] * 3
    assert all(type(d["title"]) is type(value) for d in got)
    assert _one(fast, *page[0]) == _one(pure, *page[0])


@needs_extension
@pytest.mark.parametrize("form", ["binary", "text"])
@pytest.mark.parametrize("strict", [True, False])
def test_every_flipped_byte_fails_alike(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch, strict: bool, form: str
) -> None:
    """Every single-bit flip of every byte of a token, on a page and alone: the same error
    class and message (or, when it stops being a token under allow_plaintext, the same
    pass-through) on both paths; never a partly opened page."""
    fast, pure = _pair(encryptor, monkeypatch, form)
    for fe in (fast, pure):
        fe.allow_plaintext = not strict
    page = [
        (f"n{i}", fast.encrypt_document("notes", f"n{i}", {"title": f"t{i}", "body": f"b{i}"}))
        for i in range(3)
    ]
    raw = tokens.as_binary(page[1][1]["body"])
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            flipped = raw[:i] + bytes([raw[i] ^ bit]) + raw[i + 1 :]
            bad = tokens.to_text(flipped) if form == "text" else flipped
            tampered = [page[0], ("n1", {**page[1][1], "body": bad}), page[2]]
            expected = _outcome(pure, tampered)
            assert _outcome(fast, tampered) == expected, (i, bit)
            assert _one(fast, *tampered[1]) == _one(pure, *tampered[1]), (i, bit)
            if strict:
                assert expected[0] != "ok", (i, bit)


@needs_extension
def test_every_changed_character_of_a_text_token_fails_alike(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text token with any character replaced (outside the alphabet, padding, non-ASCII,
    whitespace, the unused bits of the last character), cut short or lengthened: the same
    outcome on both paths."""
    fast, pure = _pair(encryptor, monkeypatch, "text")
    for value in ("ab", "abcd", "abcde", "x" * 5):  # every padding length
        doc = ("n1", fast.encrypt_document("notes", "n1", {"title": value}))
        text = doc[1]["title"]
        variants = [text[:-1], text + "=", text + "A===", text[:-4], "fe1:", "fe1:" + "A" * 4]
        for i in range(len(text)):
            for c in ("A", "B", "=", "-", "_", "é", " ", "\n", "/", "+"):
                variants.append(text[:i] + c + text[i + 1 :])
        for bad in variants:
            tampered = ("n1", {**doc[1], "title": bad})
            assert _one(fast, *tampered) == _one(pure, *tampered), bad
            assert _outcome(fast, [doc, tampered]) == _outcome(pure, [doc, tampered]), bad


@needs_extension
def test_a_mixed_page_reads_alike(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binary and text tokens, None, absent fields and a cold cache on one page: the same
    documents on both paths (the compiled path hands what it does not open to pure Python)."""
    fast, _ = _pair(encryptor, monkeypatch)
    page: list[tuple[str, dict[str, Any]]] = [
        (f"n{i}", fast.encrypt_document("notes", f"n{i}", {"title": f"t{i}", "body": f"b{i}"}))
        for i in range(4)
    ]
    fast.token_form = "text"
    page.append(("t1", fast.encrypt_document("notes", "t1", {"title": "text", "body": None})))
    page.append(("a1", {"other": 1}))
    page.append(("n9", {**page[0][1]}))  # the DEK of n0 under another id: refused
    cold_fast, cold_pure = _pair(encryptor, monkeypatch)
    assert _outcome(cold_fast, page) == _outcome(cold_pure, page)
    assert _outcome(cold_fast, page[:-1]) == _outcome(cold_pure, page[:-1])
    assert _outcome(cold_fast, page[:-1])[0] == "ok"


@needs_extension
def test_a_dek_cached_without_a_compiled_key_still_reads(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DEK another component cached with only its AESGCM cipher takes the pure path."""
    fast, _ = _pair(encryptor, monkeypatch)
    page = [
        (f"n{i}", fast.encrypt_document("notes", f"n{i}", {"title": f"t{i}"})) for i in range(2)
    ]
    raw_id = page[0][1]["title"][1:17]
    cipher, version = fast.cache.lookup(raw_id)  # type: ignore[misc]
    fast.cache.put(raw_id, cipher, version)  # no key=
    assert fast.cache.key(raw_id) is None
    assert fast.decrypt_documents("notes", page) == [{"title": "t0"}, {"title": "t1"}]


@needs_extension
def test_a_missing_dek_is_named_alike(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shredded DEK: DekMissingError naming it, on both paths, page and single document."""
    fast, _ = _pair(encryptor, monkeypatch)
    page = [
        (f"n{i}", fast.encrypt_document("notes", f"n{i}", {"title": f"t{i}"})) for i in range(3)
    ]
    fast.shred(tokens.read_header(page[1][1]["title"]).dek_id.hex())
    cold_fast, cold_pure = _pair(encryptor, monkeypatch)
    outcome = _outcome(cold_fast, page)
    assert outcome == _outcome(cold_pure, page) and outcome[0] is DekMissingError
    assert _one(cold_fast, *page[1]) == _one(cold_pure, *page[1])


@needs_extension
def test_a_key_holds_no_readable_key_material() -> None:
    """A Key has no repr of its bytes, cannot be pickled or copied, and checks its length."""
    from field_encrypt._gcm import Key

    secret = bytes(range(32))
    key = Key(secret)
    assert secret.hex() not in repr(key) and "Key" in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(ValueError, match="32-byte"):
        Key(secret[:31])


@needs_extension
def test_threads_reading_pages_at_once_get_their_own_documents(
    encryptor: FieldEncryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four threads decrypting pages through one encryptor (the C call lets other threads
    run while it asks the cache for a key) each get exactly their documents."""
    fast, _ = _pair(encryptor, monkeypatch)
    pages = [
        [
            (f"p{p}n{i}", fast.encrypt_document("notes", f"p{p}n{i}", {"title": f"{p}/{i}"}))
            for i in range(20)
        ]
        for p in range(4)
    ]
    wrong: list[int] = []

    def read(p: int) -> None:
        expected = [{"title": f"{p}/{i}"} for i in range(20)]
        for _ in range(100):
            if fast.decrypt_documents("notes", pages[p]) != expected:
                wrong.append(p)

    threads = [threading.Thread(target=read, args=(p,)) for p in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
