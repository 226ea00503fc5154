"""A note's tags: one encrypted field with a blind index, so ``?tag=`` stays a lookup.

The tags of a note are sealed together as one field (``tags``, a JSON list under the
note's DEK, like ``title`` and ``body``); beside them each distinct tag has a blind-index
value (:mod:`field_encrypt.blind_index`, HMAC-SHA256 under an index key derived from the
product's index root key), kept by the repository in its tag index (SQL: ``note_tags``;
Cosmos DB: ``tagIndex``). A tag is normalised as the library documents (Unicode NFC,
leading and trailing whitespace stripped; case kept), so ``work`` and `` work `` match,
``work`` and ``Work`` do not.

:class:`TagIndex` opens the product's index on first use (creating index-key version 1
when the first tag is indexed: a product whose notes have no tags holds no index key) and re-opens it every ``refresh_seconds``, so a process picks
up a new index-key version (``field-encrypt index-keys create``) within that time:
it then writes the new version's values and looks up both (docs/queryable.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from field_encrypt import FieldEncryptor
from field_encrypt.blind_index import BlindIndex, IndexedField
from field_encrypt.index_keys import IndexKeyring
from field_encrypt.index_values import sibling
from notelett.binding import COLLECTION

TAGS = "tags"
TAG_INDEX_FIELD = sibling(TAGS)
"""Where the rotation tools see a note's index values (``tags__bi``)."""
INDEXED = (IndexedField(collection=COLLECTION, path=TAGS),)
REFRESH_SECONDS = 60.0
"""How often a process re-opens the index to pick up a new index-key version."""


class TagIndex:
    """The blind index of notes' tags, for one process."""

    def __init__(
        self,
        keyring: IndexKeyring,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keyring = keyring
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._index: BlindIndex | None = None
        self._opened = 0.0

    @classmethod
    def of(cls, encryptor: FieldEncryptor) -> TagIndex:
        """The tag index of ``encryptor``'s product, its root keys in the same dek_store."""
        return cls(
            IndexKeyring(
                product=encryptor.product,
                provider=encryptor.provider,
                store=encryptor.store,
                audit=encryptor.audit,
            )
        )

    def __repr__(self) -> str:
        return f"TagIndex({self.keyring!r}, refresh_seconds={self.refresh_seconds})"

    def current(self, *, create: bool = True) -> BlindIndex | None:
        """The index, (re-)opened when older than ``refresh_seconds``; with ``create`` the
        product's first index key is made when it has none (else ``None`` then)."""
        with self._lock:
            now = self._clock()
            if self._index is None or now - self._opened >= self.refresh_seconds:
                if not self.keyring.versions():
                    if not create:
                        return None
                    self.keyring.create(1)  # idempotent: racing processes share one key
                self._index = self.keyring.open(INDEXED)
                self._opened = now
            return self._index

    def values(self, tags: Iterable[str]) -> tuple[str, ...]:
        """A note's index values: one per distinct tag, current version, sorted. The first
        tag ever indexed creates the product's index key; no tags need none."""
        tags = list(tags)
        if not tags:
            return ()
        index = self.current()
        assert index is not None
        return index.values(COLLECTION, TAGS, tags)

    def lookup(self, tag: str) -> tuple[str, ...]:
        """What a note tagged ``tag`` may be indexed under: one value per index-key version
        (none while the product has no index key: no note is tagged yet)."""
        index = self.current(create=False)
        return () if index is None else index.lookup_values(COLLECTION, TAGS, tag)

    def same(self, a: str, b: str) -> bool:
        """Whether two tags are equal once normalised (drops a truncated index's false
        positives after decrypting)."""
        index = self.current(create=False)
        return a == b if index is None else index.same(COLLECTION, TAGS, a, b)
