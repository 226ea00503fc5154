"""Run ``field-encrypt`` or ``notelett`` as a process, pointed at the test Key Vault if asked.

``python -m tests.support.launch field-encrypt ARGS`` (or ``notelett ARGS``) runs the real
entry point with ``ARGS``. When ``TEST_KEYVAULT_CA`` is set, the Key Vault provider that
the settings build is given what only a test needs to reach the local Key Vault server
(``tests/servers/keyvault.py``): a client-secret credential signing in at that server's own
token endpoint (``AZURE_AUTHORITY_HOST``, no instance discovery), trust in the server's CA,
and no check that the vault's host is under ``vault.azure.net``. In production those come
from ``DefaultAzureCredential`` (workload identity), the public CA and the real vault host;
everything else (settings, the provider, the CLI, the service) is what users run.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

PROGRAMS = {"field-encrypt": "field_encrypt.cli", "notelett": "notelett"}


def _wire_keyvault(ca: str) -> None:
    from azure.identity import ClientSecretCredential

    from field_encrypt.providers import azure_key_vault

    provider = azure_key_vault.AzureKeyVaultProvider
    original = provider.__init__

    def init(self: Any, **options: Any) -> None:
        if options.get("credential") is None:
            options["credential"] = ClientSecretCredential(
                os.environ["AZURE_TENANT_ID"],
                os.environ["AZURE_CLIENT_ID"],
                os.environ["AZURE_CLIENT_SECRET"],
                authority=os.environ["AZURE_AUTHORITY_HOST"],
                disable_instance_discovery=True,
                connection_verify=ca,
            )
        client = {"connection_verify": ca, "verify_challenge_resource": False}
        options["client_options"] = {**client, **(options.get("client_options") or {})}
        original(self, **options)

    provider.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    program, *args = sys.argv[1:]
    ca = os.environ.get("TEST_KEYVAULT_CA")
    if ca:
        _wire_keyvault(ca)
    sys.argv = [program, *args]
    runpy.run_module(PROGRAMS[program], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
