"""The reliability suites: real servers (Key Vault, KMS, SoftHSM) for this package, and helpers.

``FIELD_ENCRYPT_SOAK=1`` turns every suite's bounded CI figures into the longer soak
variant (``scripts/soak`` sets it).
"""

from __future__ import annotations

import os

from tests.harnesses import (  # noqa: F401 - package-scoped fixtures
    akv_harness,
    aws_kms_harness,
    keyvault,
    kms,
    pkcs11_harness,
    softhsm,
)
from tests.support.fixtures import store_kind  # noqa: F401 - the races run on every store

SOAK = os.environ.get("FIELD_ENCRYPT_SOAK", "") not in ("", "0")


def scaled(ci: int, soak: int) -> int:
    """``ci`` in the CI run, ``soak`` under ``FIELD_ENCRYPT_SOAK=1``."""
    return soak if SOAK else ci
