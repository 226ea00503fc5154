"""The integration suites run the production providers against real local servers, started
once for this package (see ``tests/harnesses.py``)."""

from tests.harnesses import (  # noqa: F401 - package-scoped fixtures
    akv_harness,
    aws_kms_harness,
    keyvault,
    kms,
    pkcs11_harness,
    softhsm,
)
