"""DEK stores: the durable home of wrapped DEKs. A store never sees a plaintext key."""

from field_encrypt.stores.base import DekPage, DekRecord, DekStore, WrapUpdate

__all__ = ["DekPage", "DekRecord", "DekStore", "WrapUpdate"]
