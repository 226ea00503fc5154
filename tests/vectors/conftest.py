"""The vector suites that run through a real token use this package's own SoftHSM."""

from tests.harnesses import softhsm  # noqa: F401 - package-scoped fixture
