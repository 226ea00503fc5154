"""Field encrypt/decrypt throughput against raw AES-GCM, measured in the same run.

    .venv/bin/python bench/field_throughput.py [--seconds 0.5] [--repeat 5]

The baseline is ``AESGCM.decrypt``/``encrypt`` on the same two fields (title, body) with the
cipher already built, which is the floor: no parsing, no binding, no cache. The library's
figure is ``FieldEncryptor.decrypt_document`` on a two-field document with a warm DEK cache,
in both token forms. Each figure is the best of ``--repeat`` timed loops (µs per document).

Reads are measured on both read paths in the same run: ``compiled`` (``field_encrypt._gcm``,
when it was built) and ``pure`` (``FIELD_ENCRYPT_PURE_PYTHON=1`` at the encryptor's
construction). The load average is printed before and after the timings; the figures
are timed in rounds, each round timing every figure and its floor one after the other.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt import FieldEncryptor, compiled
from field_encrypt.backends.sqlite.db import SqliteDatabase
from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
from field_encrypt.providers.local import LocalKeyProvider

TITLE = "Quarterly planning notes"
BODY = "Agenda: budget review, hiring plan, roadmap for Q3; owners and dates to follow."
PATHS = ("compiled", "pure") if compiled.built() else ("pure",)


def encryptor(
    provider: LocalKeyProvider, store: SqliteDekStore, form: str, path: str
) -> FieldEncryptor:
    """A two-field encryptor reading with ``path`` (picked at construction)."""
    os.environ[compiled.PURE_PYTHON_ENV] = "1" if path == "pure" else ""
    try:
        return FieldEncryptor(
            product="notelett",
            provider=provider,
            store=store,
            collections={"notes": ["title", "body"]},
            token_form=form,  # type: ignore[arg-type]
        )
    finally:
        del os.environ[compiled.PURE_PYTHON_ENV]


def best_us(
    timed: dict[str, Callable[[], object]], seconds: float, repeat: int, per: int = 1
) -> dict[str, float]:
    """Best time in µs per call (divided by ``per``) of each function over ``repeat``
    rounds; each round times every function for about ``seconds``, one after the other,
    so a change of load in the middle of a run hits a figure and its floor alike."""
    loops = {
        name: max(1, int(timeit.Timer(fn).autorange()[0] * seconds / 0.2))
        for name, fn in timed.items()
    }
    figures: dict[str, float] = {}
    for _ in range(repeat):
        for name, fn in timed.items():
            us = timeit.timeit(fn, number=loops[name]) / loops[name] / per * 1e6
            figures[name] = min(figures.get(name, us), us)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--page", type=int, default=50, help="Documents on a list page.")
    args = parser.parse_args()

    key = os.urandom(32)
    raw = AESGCM(key)
    n1, n2 = os.urandom(12), os.urandom(12)
    ad = b"notelett/notes/note-1"
    c1 = raw.encrypt(n1, TITLE.encode(), ad)
    c2 = raw.encrypt(n2, BODY.encode(), ad)

    def raw_open() -> None:
        raw.decrypt(n1, c1, ad)
        raw.decrypt(n2, c2, ad)

    def raw_seal() -> None:
        raw.encrypt(os.urandom(12), TITLE.encode(), ad)
        raw.encrypt(os.urandom(12), BODY.encode(), ad)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        provider = LocalKeyProvider(Path(tmp) / "keyring.json", mek_name="bench")
        database = SqliteDatabase(Path(tmp) / "bench.db")
        store = SqliteDekStore(database, product="notelett")
        doc = {"workspaceId": "w1", "title": TITLE, "body": BODY, "tags": ["q3"]}
        timed: dict[str, Callable[[], object]] = {
            "raw AES-GCM open, 2 fields": raw_open,
            "raw AES-GCM seal, 2 fields": raw_seal,
        }
        for form in ("binary", "text"):
            fe = encryptor(provider, store, form, "pure")
            sealed = fe.encrypt_document("notes", "note-1", doc)
            dek_id = fe.dek_id_of("notes", sealed)
            for path in PATHS:
                reader = encryptor(provider, store, form, path)
                assert reader.decrypt_document("notes", "note-1", sealed) == doc
                timed[f"decrypt_document, {form} tokens, {path}"] = (
                    lambda fe=reader, sealed=sealed: fe.decrypt_document("notes", "note-1", sealed)
                )
            timed[f"encrypt_document (existing DEK), {form} tokens"] = lambda fe=fe, dek_id=dek_id: (
                fe.encrypt_document("notes", "note-1", doc, dek_id=dek_id)
            )
        results = best_us(timed, args.seconds, args.repeat)
        page = page_figures(provider, store, args.page, args.seconds, args.repeat)
        database.close()

    floor_open = results["raw AES-GCM open, 2 fields"]
    floor_seal = results["raw AES-GCM seal, 2 fields"]
    loads = " / ".join(" ".join(f"{x:.2f}" for x in la) for la in (load_before, os.getloadavg()))
    print(f"load average (1, 5, 15 min) before / after: {loads}")
    if not compiled.built():
        print("field_encrypt._gcm is not built: the pure-Python path only")
    print(f"{'operation':56} {'µs/doc':>8} {'docs/s':>10} {'x raw':>7}")
    for name, us in results.items():
        floor = floor_seal if "encrypt" in name or "seal" in name else floor_open
        print(f"{name:56} {us:8.2f} {1e6 / us:10,.0f} {us / floor:7.2f}")
    print(f"\na page of {args.page} documents, each under its own DEK (all cached), per document:")
    page_floor = page["raw AES-GCM open, 2 fields, page"]
    for name, us in page.items():
        print(f"{name:56} {us:8.2f} {1e6 / us:10,.0f} {us / page_floor:7.2f}")


def page_figures(
    provider: LocalKeyProvider, store: SqliteDekStore, size: int, seconds: float, repeat: int
) -> dict[str, float]:
    """µs per document for a list page: raw opens, ``decrypt_document`` each, the batch
    (on each read path)."""
    fe = encryptor(provider, store, "binary", "pure")
    readers = {path: encryptor(provider, store, "binary", path) for path in PATHS}
    docs = [
        (f"note-{i}", fe.encrypt_document("notes", f"note-{i}", {"title": TITLE, "body": BODY}))
        for i in range(size)
    ]
    plain = [{"title": TITLE, "body": BODY} for _ in range(size)]
    for reader in readers.values():
        assert reader.decrypt_documents("notes", docs) == plain
        assert [reader.decrypt_document("notes", i, d) for i, d in docs] == plain
    # the floor: each document's two fields opened with its DEK's cipher already at hand
    raw_fields = []
    for i, _ in docs:
        head = b"notelett/notes/" + i.encode()
        dek = os.urandom(32)
        cipher = AESGCM(dek)
        for value in (TITLE, BODY):
            nonce = os.urandom(12)
            raw_fields.append((cipher, nonce, cipher.encrypt(nonce, value.encode(), head), head))

    def raw_page() -> None:
        for cipher, nonce, ct, ad in raw_fields:
            cipher.decrypt(nonce, ct, ad)

    def single_page(fe: FieldEncryptor) -> Callable[[], None]:
        def run() -> None:
            for i, d in docs:
                fe.decrypt_document("notes", i, d)

        return run

    def batch_page(fe: FieldEncryptor) -> Callable[[], None]:
        def run() -> None:
            fe.decrypt_documents("notes", docs)

        return run

    # The least pure Python can do per token: slice nonce, ciphertext and header out of
    # it, build the associated data, open it (no checks, no cache, no output document).
    ciphers = {d["title"][1:17]: fe.cache.get(d["title"][1:17]) for _, d in docs}
    bound = [
        (d[name], b"\x00\x08notelett\x00\x05notes" + len(i).to_bytes(2, "big") + i.encode()
         + len(name).to_bytes(2, "big") + name.encode())
        for i, d in docs for name in ("title", "body")
    ]  # fmt: skip

    def bound_page() -> None:
        for t, binding in bound:
            e = 18 + t[17]
            ciphers[t[1:17]].decrypt(t[e : e + 12], t[e + 12 :], t[:e] + binding)  # type: ignore[union-attr]

    bound_page()  # the bindings above are the library's: this opens every token

    timed: dict[str, Callable[[], object]] = {"raw AES-GCM open, 2 fields, page": raw_page}
    for path, reader in readers.items():
        timed[f"decrypt_document x page, binary tokens, {path}"] = single_page(reader)
        timed[f"decrypt_documents (batch), binary tokens, {path}"] = batch_page(reader)
    timed["lower bound: slice + open only, pure Python"] = bound_page
    return best_us(timed, seconds, repeat, per=size)


if __name__ == "__main__":
    main()
