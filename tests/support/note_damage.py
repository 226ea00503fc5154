"""Damage one stored note the two ways NoteLett must survive: a tampered ciphertext, a lost DEK.

Shared by the single-note error tests (``tests/service/test_diagnostics.py``) and the
listing's error items (``tests/service/test_list_errors.py``); both go through the notes
repository and the encryptor, so they work on every store.
"""

from __future__ import annotations

from notelett.backend import Backend


def tamper_title(backend: Backend, note_id: str) -> str:
    """Flip the last byte of the note's stored title ciphertext (compare-and-swap on its
    revision, every other column kept); the note's dekId."""
    record = backend.notes.get(note_id)
    assert isinstance(record.title, bytes) and record.dek_id is not None
    tampered = bytearray(record.title)
    tampered[-1] ^= 0x01
    backend.notes.replace(
        note_id,
        expected_revision=record.revision,
        title=bytes(tampered),
        body=record.body,
        tags=record.tags,
        dek_id=record.dek_id,
        updated_at=record.updated_at,
    )
    return record.dek_id


def lose_dek(backend: Backend, note_id: str) -> str:
    """Shred the note's DEK while its row stays live (a lost DEK, not a delete); the dekId."""
    dek_id = backend.notes.get(note_id).dek_id
    assert dek_id is not None
    backend.encryptor.shred(dek_id)
    return dek_id
