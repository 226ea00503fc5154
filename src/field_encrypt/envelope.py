"""What applications call: encrypt and decrypt the chosen fields of their documents.

One DEK per document. :meth:`FieldEncryptor.encrypt_document` seals each chosen field
under the document's DEK (creating and wrapping a fresh one for a new document);
:meth:`FieldEncryptor.decrypt_document` opens them again, unwrapping the DEK through the
key provider on a cache miss. A plaintext value in an encrypted field is refused like a bad
token, so nobody with write access to the database can swap a token for a value of their
choosing; ``allow_plaintext=True`` lets plaintext pass through untouched, for the duration of
the ``encrypt`` backfill of documents written before encryption was enabled.

With an audit trail, :meth:`FieldEncryptor.shred` records ``dek.shredded`` and an unwrap
refused because its MEK version is disabled records ``decrypt.denied`` (deduplicated, see
:class:`~field_encrypt.audit.DenialRecorder`). Neither event holds key material.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from field_encrypt import compiled, token
from field_encrypt.audit import DEK_SHREDDED, AuditTrail, DenialRecorder, recorded
from field_encrypt.backends.base import DekRecord, DekStore, NewDek, check_product_store
from field_encrypt.cache import DekCache
from field_encrypt.errors import (
    ConfigurationError,
    DecryptionError,
    DekMissingError,
    KeyVersionDisabledError,
    NotFoundError,
)
from field_encrypt.providers.base import (
    BatchWrapper,
    KeyProvider,
    dek_context,
    dek_context_prefix,
    unwrap_many,
)

if TYPE_CHECKING:
    from field_encrypt._gcm import Key
    from field_encrypt.lazy_rewrap import LazyRewrapper

TokenForm = Literal["text", "binary"]
_VERSION_BYTE = bytes((token.VERSION,))
_VERSION = token.VERSION
_TYPE_STR = token.TYPE_STR
_MIN_TOKEN = token.MIN_SIZE
_decode = token.decode_value


@dataclass(frozen=True, slots=True)
class _Field:
    path: str
    keys: tuple[str, ...]  # the path split on dots
    name: str  # the last key
    flat: bool  # a top-level field
    binding: bytes  # length-prefixed path: the last part of the associated data


@dataclass(frozen=True, slots=True)
class _Collection:
    prefix: bytes  # length-prefixed product and collection
    fields: tuple[_Field, ...]
    nested: bool
    columns: tuple[tuple[str, bytes], ...]  # (name, binding) of each field, for the compiled path


class FieldEncryptor:
    """Field-level envelope encryption for one product.

    ``collections`` maps each collection to the dotted paths of its encrypted fields.
    ``token_form`` is how new tokens are stored: ``"text"`` (``fe1:`` + base64, for JSON
    documents) or ``"binary"`` (for binary columns); both forms always decrypt.
    With ``enabled=False`` new writes stay plaintext; tokens already stored still decrypt.
    While encryption is on, a plaintext value in an encrypted field is a
    :class:`DecryptionError` (a stored token cannot be swapped for plaintext);
    ``allow_plaintext=True``, an explicit opt-in for the duration of the ``encrypt``
    backfill, passes it through instead. Left unset (``None``) it follows ``enabled``, as
    ``FIELD_ENCRYPT_ALLOW_PLAINTEXT`` does: refused when on, read when off.
    ``audit`` is the product's audit trail (``None``: no events).

    Reads of top-level fields take the compiled path (:mod:`field_encrypt.compiled`) when it
    was built and ``FIELD_ENCRYPT_PURE_PYTHON`` does not turn it off at construction: the
    same values and the same errors, since at anything unusual it hands the document to the
    pure-Python path.
    """

    def __init__(
        self,
        *,
        product: str,
        provider: KeyProvider,
        store: DekStore,
        collections: Mapping[str, Sequence[str]],
        cache: DekCache | None = None,
        enabled: bool = True,
        allow_plaintext: bool | None = None,
        token_form: TokenForm = "text",
        random_bytes: Callable[[int], bytes] = os.urandom,
        audit: AuditTrail | None = None,
    ) -> None:
        check_product_store(product, store)
        if token_form not in ("text", "binary"):
            raise ConfigurationError(f"token_form must be 'text' or 'binary', not {token_form!r}")
        self.product = product
        self.provider = provider
        self.store = store
        self.cache = cache if cache is not None else DekCache()
        self.enabled = enabled
        self.allow_plaintext = allow_plaintext if allow_plaintext is not None else not enabled
        self.token_form: TokenForm = token_form
        self.collections = {name: tuple(paths) for name, paths in collections.items()}
        self._random = random_bytes
        self.audit = audit
        self.rewrapper: LazyRewrapper | None = None
        """With lazy rewrap on (``field_encrypt.lazy_rewrap``): where a DEK read under an
        old MEK version is handed, to be rewrapped in the background."""
        self._denials = DenialRecorder(audit) if audit is not None else None
        self._plans = {
            name: _Collection(
                prefix=token.lp(product) + token.lp(name),
                fields=tuple(
                    _Field(p, tuple(p.split(".")), p.split(".")[-1], "." not in p, token.lp(p))
                    for p in paths
                ),
                nested=any("." in p for p in paths),
                columns=tuple((p, token.lp(p)) for p in paths),
            )
            for name, paths in self.collections.items()
        }
        reader = compiled.reader()
        self._open = reader.open_documents if reader is not None else None
        self._new_key = reader.key if reader is not None else None

    def __repr__(self) -> str:
        return (
            f"FieldEncryptor(product={self.product!r}, provider={self.provider.kind!r}, "
            f"enabled={self.enabled})"
        )

    # -- documents ---------------------------------------------------------------------

    def encrypt_document(
        self,
        collection: str,
        document_id: str,
        document: Mapping[str, Any],
        *,
        dek_id: str | None = None,
    ) -> dict[str, Any]:
        """A copy of ``document`` with its encrypted fields sealed.

        A new document gets a fresh DEK; pass the stored document's ``dek_id`` to keep
        its DEK on update. ``None`` values and values that are already tokens stay as
        they are.
        """
        plan = self._plan(collection)
        out = _copy(document, plan)
        if not self.enabled:
            return out
        if dek_id is None:
            dek_id = self.create_dek()
        raw_id = bytes.fromhex(dek_id)
        cipher, mek_version = self._cipher(raw_id)
        prefix = plan.prefix + token.lp(document_id)
        text = self.token_form == "text"
        for f in plan.fields:
            parent = _parent(out, f.keys)
            if parent is None:
                continue
            value = parent.get(f.keys[-1])
            if value is None or token.is_token(value):
                continue
            raw = token.seal(
                cipher,
                self._random(12),
                dek_id=raw_id,
                mek_version=mek_version,
                binding=prefix + f.binding,
                value=value,
            )
            parent[f.keys[-1]] = token.to_text(raw) if text else raw
        return out

    def decrypt_document(
        self, collection: str, document_id: str, document: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A copy of ``document`` with its encrypted fields opened (plaintext in one is a
        :class:`DecryptionError` unless ``allow_plaintext``)."""
        plan = self._plan(collection)
        if self._open is not None and not plan.nested:
            out = dict(document)
            if self._open(
                [out], [document_id], plan.prefix, plan.columns, self.cache.key, _decode, 0
            ):
                return out
        return self._decrypt_pure(plan, document_id, document)

    def _decrypt_pure(
        self, plan: _Collection, document_id: str, document: Mapping[str, Any]
    ) -> dict[str, Any]:
        """:meth:`decrypt_document` in pure Python: every check of a read, and its errors."""
        out = _copy(document, plan) if plan.nested else dict(document)
        doc_id = document_id.encode()
        prefix = plan.prefix + len(doc_id).to_bytes(2, "big") + doc_id
        current = b""
        cipher: AESGCM | None = None
        lookup = self.cache.lookup
        for f in plan.fields:
            parent = out if f.flat else _parent(out, f.keys)
            if parent is None:
                continue
            value = parent.get(f.name)
            if value.__class__ is bytes and value[:1] == _VERSION_BYTE:
                pass
            elif token.is_token(value):
                value = token.from_text(value)  # type: ignore[arg-type]
            elif value is None or self.allow_plaintext:
                continue
            else:
                raise DecryptionError()
            raw_id = value[1:17]
            if raw_id != current:
                entry = lookup(raw_id)
                cipher = entry[0] if entry is not None else self._load(raw_id)[0]
                current = raw_id
            parent[f.name] = token.open_(cipher, value, prefix + f.binding)  # type: ignore[arg-type]
        return out

    def decrypt_documents(
        self, collection: str, documents: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> list[dict[str, Any]]:
        """:meth:`decrypt_document` for each ``(document_id, document)``, in order.

        The same results; a page that fails raises what :meth:`decrypt_document` raises
        for its first failing document (when several fail for different reasons, a DEK
        that cannot be loaded may be reported before an earlier document's bad token).
        This is what a list page calls: the per-call work is done once per page (the
        plan, one read of the DEK cache for every DEK on it) and each field is opened a
        column at a time. Pages of binary tokens take that path; text tokens, plaintext
        and nested fields take the one-document path for each document.

        With the compiled path, the page is opened a document at a time in one call, and a
        document it stops at (text tokens, plaintext, an uncached DEK, a token that does not
        open) takes the pure-Python path alone, so a failing page raises exactly what its
        first failing document raises.
        """
        plan = self._plan(collection)
        docs = documents if isinstance(documents, list) else list(documents)
        if plan.nested or not docs:
            return [self.decrypt_document(collection, i, d) for i, d in docs]
        if self._open is not None:
            return self._open_page(self._open, plan, docs)
        outs = [dict(d) for _, d in docs]
        columns: list[tuple[str, bytes, list[bytes], list[bytes]]] = []
        for f in plan.fields:
            values = [out.get(f.name) for out in outs]
            tokens = [
                v
                for v in values
                if v.__class__ is bytes
                and len(v) >= _MIN_TOKEN
                and v[0] == _VERSION
                and v[17]
                and len(v) >= v[17] + 47  # header, nonce, tag and the type byte
            ]
            if len(tokens) != len(values):  # not all well-formed binary tokens
                return [self.decrypt_document(collection, i, d) for i, d in docs]
            columns.append((f.name, f.binding, tokens, [t[1:17] for t in tokens]))
        ciphers = self.cache.lookup_many(set().union(*(ids for _, _, _, ids in columns)))
        head = plan.prefix
        prefixes = [head + len(b).to_bytes(2, "big") + b for b in [i.encode() for i, _ in docs]]
        cipher_of = ciphers.get
        for name, field_binding, tokens, ids in columns:
            ends = [18 + t[17] for t in tokens]
            try:
                plaintexts = list(
                    map(
                        AESGCM.decrypt,
                        [cipher_of(i) or self._page_cipher(ciphers, i) for i in ids],
                        [t[e : e + 12] for t, e in zip(tokens, ends, strict=True)],
                        [t[e + 12 :] for t, e in zip(tokens, ends, strict=True)],
                        [
                            t[:e] + p + field_binding
                            for t, e, p in zip(tokens, ends, prefixes, strict=True)
                        ],
                    )
                )
            except InvalidTag:  # which document, and why: the one-document path says
                return [self.decrypt_document(collection, i, d) for i, d in docs]
            for out, plaintext in zip(outs, plaintexts, strict=True):
                out[name] = (
                    plaintext[1:].decode()
                    if plaintext[0] == _TYPE_STR
                    else token.decode_value(plaintext)
                )
        return outs

    def _open_page(
        self,
        open_: compiled.OpenDocuments,
        plan: _Collection,
        docs: list[tuple[str, Mapping[str, Any]]],
    ) -> list[dict[str, Any]]:
        """:meth:`decrypt_documents` on the compiled path ``open_`` (flat fields)."""
        outs = [dict(d) for _, d in docs]
        ids = [i for i, _ in docs]
        prefix, columns, key_of = plan.prefix, plan.columns, self.cache.key
        at = open_(outs, ids, prefix, columns, key_of, _decode, 0)
        while at < len(outs):  # the document it stopped at: the pure-Python path says why
            outs[at] = self._decrypt_pure(plan, *docs[at])
            at = open_(outs, ids, prefix, columns, key_of, _decode, at + 1)
        return outs

    def _page_cipher(self, ciphers: dict[bytes, AESGCM], raw_id: bytes) -> AESGCM:
        """A DEK missing from the page's cache read: unwrapped (and cached) now."""
        cipher = ciphers[raw_id] = self._cipher(raw_id)[0]
        return cipher

    def dek_id_of(self, collection: str, document: Mapping[str, Any]) -> str | None:
        """The dekId a stored document's fields were sealed under, or ``None`` if plaintext."""
        for f in self._plan(collection).fields:
            parent = _parent(document, f.keys)
            value = parent.get(f.keys[-1]) if parent is not None else None
            if token.is_token(value):
                return token.read_header(token.as_binary(value)).dek_id.hex()  # type: ignore[arg-type]
        return None

    # -- single values -------------------------------------------------------------------

    def encrypt_value(
        self, collection: str, document_id: str, field_path: str, value: object, *, dek_id: str
    ) -> str | bytes:
        """One field's token under the DEK ``dek_id``, in this encryptor's token form."""
        raw_id = bytes.fromhex(dek_id)
        cipher, mek_version = self._cipher(raw_id)
        raw = token.seal(
            cipher,
            self._random(12),
            dek_id=raw_id,
            mek_version=mek_version,
            binding=token.binding(self.product, collection, document_id, field_path),
            value=value,
        )
        return token.to_text(raw) if self.token_form == "text" else raw

    def decrypt_value(
        self, collection: str, document_id: str, field_path: str, value: str | bytes
    ) -> object:
        """One field's value from its token (either form)."""
        raw = token.as_binary(value)
        cipher = self._cipher(token.read_header(raw).dek_id)[0]
        return token.open_(
            cipher, raw, token.binding(self.product, collection, document_id, field_path)
        )

    # -- DEKs --------------------------------------------------------------------------

    def create_dek(self, *, version: str | None = None) -> str:
        """Generate a DEK, wrap it under the current MEK version, store it; its dekId.

        ``version`` picks another wrapping version, e.g. a partition's KEK
        (``KekTierProvider.dek_version(partition)``).
        """
        dek_id = uuid.UUID(bytes=self._random(16), version=4).hex
        dek = self._random(32)
        wrapped = self.provider.wrap(
            dek, context=dek_context(self.product, dek_id), version=version
        )
        NewDek.of(dek_id, mek_name=self.provider.mek_name, wrapped=wrapped).create_in(self.store)
        self.remember(bytes.fromhex(dek_id), dek, wrapped.mek_version)
        return dek_id

    def remember(
        self, raw_id: bytes, dek: bytes, mek_version: str, *, generation: int | None = None
    ) -> AESGCM:
        """Cache ``dek`` (unwrapped under ``mek_version``) for reads: its cipher, and the
        compiled path's key when this encryptor reads with it; the cipher. What a rotation
        that makes DEKs of its own (re-encrypt) calls, so its documents read as fast."""
        cipher = AESGCM(dek)
        self.cache.put(raw_id, cipher, mek_version, generation=generation, key=self._key(dek))
        return cipher

    def shred(self, dek_id: str) -> bool:
        """Delete a DEK: every field sealed under it becomes permanently unreadable.

        Whether there was one to delete; recorded as ``dek.shredded`` in the audit trail in
        the same unit as the delete (:func:`~field_encrypt.audit.recorded`): the delete
        and its event are stored together or not at all.
        """
        self.cache.invalidate(bytes.fromhex(dek_id))
        with recorded(
            self.audit,
            DEK_SHREDDED,
            subject=f"dek/{dek_id}",
            data={"dekId": dek_id},
            check={"dekId": dek_id},
        ) as event:
            existed = self.store.delete(dek_id)
            event.data["existed"] = existed
        return existed

    def _cipher(self, raw_id: bytes) -> tuple[AESGCM, str]:
        entry = self.cache.lookup(raw_id)
        return entry if entry is not None else self._load(raw_id)

    def _load(self, raw_id: bytes) -> tuple[AESGCM, str]:
        """Unwrap a DEK through the provider and cache it."""
        dek_id = raw_id.hex()
        generation = self.cache.generation  # before the load: see DekCache.put
        try:
            record = self.store.get(dek_id)
        except NotFoundError:
            raise DekMissingError(dek_id) from None
        return self._unwrap(raw_id, record, generation)

    def load_record(self, record: DekRecord, *, generation: int) -> None:
        """Unwrap a DEK row the caller has already read and cache it, unless it is cached.

        For a page of documents whose DEK rows were read in one batch (``re-encrypt``): each
        then costs its unwrap but no store read. ``generation`` is the cache's
        :attr:`~DekCache.generation` read before the rows were; failures are what a read of
        the DEK raises (a disabled version is recorded as ``decrypt.denied``). Nothing is
        done when the cache keeps nothing (the read then loads the DEK as always).
        """
        cache = self.cache
        if not cache.max_entries or not cache.ttl_seconds or cache.suspended:
            return
        raw_id = bytes.fromhex(record.dek_id)
        if cache.lookup(raw_id) is None:
            self._unwrap(raw_id, record, generation)

    def load_records(self, records: Iterable[DekRecord], *, generation: int) -> None:
        """:meth:`load_record` for many rows, unwrapped in one provider call.

        Only for providers that batch in process (:class:`BatchWrapper`: ``local``,
        ``env``); with any other, and for a row that fails to unwrap, nothing is done, so
        the read of that document loads its DEK alone and fails as it always has (a
        disabled version is recorded as ``decrypt.denied`` there). At most the cache's
        ``max_entries`` rows are loaded, so none is evicted before it is read.
        """
        cache = self.cache
        provider = self.provider
        if (
            not isinstance(provider, BatchWrapper)
            or not cache.max_entries
            or not cache.ttl_seconds
            or cache.suspended
        ):
            return
        lookup = cache.lookup
        todo = [(raw_id, r) for r in records if lookup(raw_id := bytes.fromhex(r.dek_id)) is None][
            : cache.max_entries
        ]
        if not todo:
            return
        prefix = dek_context_prefix(self.product)
        deks = unwrap_many(
            provider, [(r.wrapped, r.mek_version, prefix + r.dek_id.encode()) for _, r in todo]
        )
        remember, rewrapper = self.remember, self.rewrapper
        for (raw_id, record), dek in zip(todo, deks, strict=True):
            if dek.__class__ is bytes and len(dek) == 32:
                remember(raw_id, dek, record.mek_version, generation=generation)
                if rewrapper is not None:
                    rewrapper.offer(record)  # never blocks, never raises

    def _unwrap(self, raw_id: bytes, record: DekRecord, generation: int) -> tuple[AESGCM, str]:
        dek_id = record.dek_id
        try:
            dek = self.provider.unwrap(
                record.wrapped,
                version=record.mek_version,
                context=dek_context(self.product, dek_id),
            )
        except KeyVersionDisabledError:
            if self._denials is not None:
                self._denials.record(
                    dek_id=dek_id, mek_version=record.mek_version, mek_name=record.mek_name
                )
            raise
        if len(dek) != 32:
            raise DecryptionError()
        cipher = self.remember(raw_id, dek, record.mek_version, generation=generation)
        if self.rewrapper is not None:
            self.rewrapper.offer(record)  # never blocks, never raises
        return cipher, record.mek_version

    def _key(self, dek: bytes) -> Key | None:
        """The DEK as the compiled path's key, when this encryptor reads with it."""
        return self._new_key(dek) if self._new_key is not None else None

    def _plan(self, collection: str) -> _Collection:
        try:
            return self._plans[collection]
        except KeyError:
            raise ConfigurationError(
                f"collection {collection!r} has no encrypted fields configured"
            ) from None


def _parent(document: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = document
    for part in keys[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node if isinstance(node, dict) else None


def _copy(document: Mapping[str, Any], plan: _Collection) -> dict[str, Any]:
    """Copy the document, and each nested dict on an encrypted path, so the input is untouched."""
    out = dict(document)
    if plan.nested:
        for f in plan.fields:
            node = out
            for part in f.keys[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    break
                node[part] = child = dict(child)
                node = child
    return out
