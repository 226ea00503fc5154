"""The compiled read path (``_gcm.c``): many binary field tokens opened in one call."""

from collections.abc import Callable
from typing import Any, final

@final
class Key:
    """A 32-byte AES-256-GCM key held in C memory (cleansed when freed; never readable)."""

    def __new__(cls, key: bytes, /) -> Key: ...

def open_documents(
    documents: list[dict[str, Any]],
    document_ids: list[str],
    prefix: bytes,
    fields: tuple[tuple[str, bytes], ...],
    key_of: Callable[[bytes], Key | None],
    decode: Callable[[bytes], object],
    start: int,
    /,
) -> int: ...
