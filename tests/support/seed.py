"""Seeding the sample product with documents: :mod:`field_encrypt.rehearsal`, re-exported.

``python -m tests.support.seed`` is ``python -m field_encrypt.rehearsal``.
"""

from __future__ import annotations

import sys

from field_encrypt.rehearsal import document, main, read_all, seed

__all__ = ["document", "read_all", "seed"]

if __name__ == "__main__":
    sys.exit(main())
