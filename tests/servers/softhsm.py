"""A fresh SoftHSM2 token in a temporary directory, for PKCS#11 provider tests.

What is real: SoftHSM2 (Debian's ``softhsm2`` package; ``scripts/install-system-deps``
installs it), a software PKCS#11 module that the provider loads exactly as it would load a
hardware HSM's module. Keys live in the token; wrap and unwrap run inside the module.

What was adapted for tests: the token directory is a temporary directory named by a
``softhsm2.conf`` of our own, the PINs are fixed test values, and the file object store is
used. ``SOFTHSM2_CONF`` is set in ``os.environ`` while the token is open (SoftHSM reads it
when the module is initialised) and ``env`` carries it for subprocesses such as the CLI.

SoftHSM reads its configuration once per process, at ``C_Initialize``. So only one
``SoftHsmToken`` may be open at a time in a process, and a PKCS#11 library object loaded
before the token was opened still sees the previous token directory until it is
re-initialised (python-pkcs11: ``lib.reinitialize()``).

Known SoftHSM 2.6 behaviour a provider must allow for (pinned in ``test_softhsm.py``):
RFC 5649 key wrap is mechanism ``CKM_AES_KEY_WRAP_PAD`` (0x210A), not the PKCS#11 3.0
``CKM_AES_KEY_WRAP_KWP`` (0x210B) that other HSMs use for it; the wrap mechanisms work through
``C_WrapKey``/``C_UnwrapKey`` only, not ``C_Encrypt``; and ``C_WrapKey`` zero-pads a key whose
length is not a multiple of 8 before wrapping (32-byte DEKs are unaffected).

    with SoftHsmToken() as hsm:
        lib = pkcs11.lib(str(hsm.module_path))
        with lib.get_token(token_label=hsm.token_label).open(user_pin=hsm.user_pin, rw=True):
            ...
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

__all__ = ["SoftHsmError", "SoftHsmToken", "find_module"]

CONF_VARIABLE = "SOFTHSM2_CONF"
_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/*/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


class SoftHsmError(RuntimeError):
    """SoftHSM2 is missing, or the token could not be created; the message says why."""


def find_module() -> Path:
    """Return the path of ``libsofthsm2.so``."""
    for pattern in _MODULE_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            return Path(path)
    raise SoftHsmError("libsofthsm2.so not found; run scripts/install-system-deps")


class SoftHsmToken:
    """One initialised SoftHSM2 token in a temporary directory; a context manager."""

    _open_token: ClassVar[SoftHsmToken | None] = None

    def __init__(
        self,
        *,
        token_label: str = "field-encrypt-test",
        user_pin: str = "user-pin-1234",
        so_pin: str = "so-pin-1234",
        base_dir: Path | None = None,
    ):
        self.module_path = find_module()
        self._util = shutil.which("softhsm2-util")
        if self._util is None:
            raise SoftHsmError("softhsm2-util not found; run scripts/install-system-deps")
        self.token_label = token_label
        self.user_pin = user_pin
        self.so_pin = so_pin
        self._base_dir = base_dir
        self._root: Path | None = None
        self._previous_conf: str | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            raise SoftHsmError("the token is not open")
        return self._root

    @property
    def conf_path(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def token_dir(self) -> Path:
        return self.root / "tokens"

    @property
    def env(self) -> dict[str, str]:
        """Environment entries a subprocess needs to see this token."""
        return {CONF_VARIABLE: str(self.conf_path)}

    def __enter__(self) -> Self:
        if SoftHsmToken._open_token is not None:
            raise SoftHsmError("another SoftHsmToken is open in this process")
        self._root = Path(tempfile.mkdtemp(prefix="field-encrypt-softhsm-", dir=self._base_dir))
        try:
            self.token_dir.mkdir()
            self.conf_path.write_text(
                f"directories.tokendir = {self.token_dir}\n"
                "objectstore.backend = file\n"
                "log.level = ERROR\n"
                "slots.removable = false\n"
            )
            self._init_token()
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            raise
        self._previous_conf = os.environ.get(CONF_VARIABLE)
        os.environ[CONF_VARIABLE] = str(self.conf_path)
        SoftHsmToken._open_token = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._previous_conf is None:
            os.environ.pop(CONF_VARIABLE, None)
        else:
            os.environ[CONF_VARIABLE] = self._previous_conf
        SoftHsmToken._open_token = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _init_token(self) -> None:
        assert self._util is not None
        result = subprocess.run(
            [
                self._util,
                "--init-token",
                "--free",
                f"--label={self.token_label}",
                f"--so-pin={self.so_pin}",
                f"--pin={self.user_pin}",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
        )
        if result.returncode != 0:
            raise SoftHsmError(f"softhsm2-util --init-token failed: {result.stderr.strip()}")
