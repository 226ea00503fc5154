"""Coverage-guided fuzzing (atheris) of the token parser and the document decrypt path.

    .venv/bin/python -m tests.fuzz.fuzz_token -max_total_time=60 [-runs=N]

The target feeds arbitrary bytes, as a binary token and as a text token, to
``FieldEncryptor.decrypt_document`` (strict and permissive modes), ``token.read_header``
and ``token.from_text``. Anything raised that is not a ``FieldEncryptError`` is a crash,
and so is any difference between the compiled read path (``field_encrypt._gcm``, when
built) and the pure-Python one on a top-level field: value, or error class and message,
for one document and for a page.
It also seeds the corpus with real tokens so the fuzzer starts from valid structure.
libFuzzer prints ``Done N runs`` at the end (tests/fuzz/test_fuzz.py reads it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from field_encrypt import FieldEncryptor, compiled, token
    from field_encrypt.backends.sqlite.db import SqliteDatabase
    from field_encrypt.backends.sqlite.dek_store import SqliteDekStore
    from field_encrypt.errors import FieldEncryptError
    from field_encrypt.providers.local import LocalKeyProvider

# test_fuzz.py passes its tmp_path (libFuzzer ends the process with C exit(), so Python's
# atexit never runs to clean up); a person fuzzing by hand gets a fresh directory.
_tmp = Path(os.environ.get("FUZZ_WORKDIR") or tempfile.mkdtemp(prefix="fuzz-token-"))
_provider = LocalKeyProvider(_tmp / "ring.json", mek_name="fuzz")
_store = SqliteDekStore(SqliteDatabase(_tmp / "fuzz.db"), product="fuzz")
_fe = FieldEncryptor(
    product="fuzz",
    provider=_provider,
    store=_store,
    collections={"c": ["f", "a.b"]},
    allow_plaintext=True,
)
_strict = FieldEncryptor(
    product="fuzz",
    provider=_provider,
    store=_store,
    collections={"c": ["f", "a.b"]},
    allow_plaintext=False,
)


def _flat(path: str) -> FieldEncryptor:
    """A permissive encryptor of the top-level field ``f`` reading with ``path``."""
    os.environ[compiled.PURE_PYTHON_ENV] = "1" if path == "pure" else ""
    try:
        return FieldEncryptor(
            product="fuzz",
            provider=_provider,
            store=_store,
            collections={"c": ["f"]},
            allow_plaintext=True,
        )
    finally:
        del os.environ[compiled.PURE_PYTHON_ENV]


_paths = [_flat("compiled"), _flat("pure")] if compiled.built() else []


def _outcome(fe: FieldEncryptor, value: object) -> object:
    """What reading ``value`` gives, alone and on a page after a valid document."""
    results: list[object] = []
    for read in (
        lambda: fe.decrypt_document("c", "d", {"f": value}),
        lambda: fe.decrypt_documents("c", [("d", _valid), ("d", {"f": value})]),
    ):
        try:
            results.append(read())
        except FieldEncryptError as error:
            results.append((type(error), str(error)))
    return results


def seeds() -> list[bytes]:
    """Real tokens of a few sizes, binary form, to start the corpus."""
    out = []
    for size in (0, 1, 20, 300):
        doc = _fe.encrypt_document("c", "d", {"f": "x" * size})
        out.append(token.from_text(doc["f"]))
    return out


def target(data: bytes) -> None:
    text = "fe1:" + data.decode("latin-1")
    for value in (data, text, data.decode("latin-1")):
        for fe in (_fe, _strict):
            with contextlib.suppress(FieldEncryptError):
                fe.decrypt_document("c", "d", {"f": value, "a": {"b": value}})
        if _paths:
            fast, pure = (_outcome(fe, value) for fe in _paths)
            if fast != pure:
                raise AssertionError(f"the read paths differ on {value!r}: {fast!r} != {pure!r}")
    with contextlib.suppress(FieldEncryptError):
        token.read_header(data)
    with contextlib.suppress(FieldEncryptError):
        token.from_text(text)


def main() -> None:
    corpus = _tmp / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds()):
        (corpus / f"seed{i}").write_bytes(seed)
    atheris.Setup([*sys.argv, str(corpus)], target)
    atheris.Fuzz()


_valid = _fe.encrypt_document("c", "d", {"f": "seed"})

if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
