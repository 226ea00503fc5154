"""``field-encrypt console``: serve the read-only operator console (docs/console.md).

Binds 127.0.0.1 by default. Any other address needs a token (``--token-file`` or
``FIELD_ENCRYPT_CONSOLE_TOKEN``), which every request must then present; without one the
command refuses to start (exit 3). The token is never printed.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from field_encrypt.cli.common import ProductOpt, guarded
from field_encrypt.errors import ConfigurationError

TOKEN_ENV = "FIELD_ENCRYPT_CONSOLE_TOKEN"
REMOTE_REFRESH_SECONDS = 5.0
"""How often a remote provider's version list is re-read when the settings do not say
(the library's default, 60 s, would show a version created meanwhile as unknown)."""
MIN_TOKEN_LENGTH = 16
DEFAULT_PORT = 4017


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The token from ``--token-file`` (its first line) or the environment, checked."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read --token-file {str(token_file)!r}: {exc.strerror}"
            ) from None
    else:
        token = env.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise ConfigurationError(
            f"the console token must be at least {MIN_TOKEN_LENGTH} characters without spaces "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def console_command(
    product: ProductOpt,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (anything but loopback needs a token).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to bind (0: any free one).")
    ] = DEFAULT_PORT,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help=f"A file holding the access token (or set {TOKEN_ENV})."),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="The scheduled rotation's policy file (as rotate takes)."),
    ] = None,
    soak: Annotated[
        float | None,
        typer.Option("--soak", min=0, help="The gate's soak in hours (default: the policy's, 24)."),
    ] = None,
    retention_days: Annotated[
        float | None,
        typer.Option("--retention-days", min=0, help="The gate's retention (default: 30 days)."),
    ] = None,
    gate_sample: Annotated[
        int,
        typer.Option(
            "--gate-sample",
            min=0,
            help="Documents the gate decrypts per version, as keys retire --sample (default 0).",
        ),
    ] = 0,
) -> None:
    """Serve the read-only operator console: versions, runs, the gate, the audit trail."""
    token = read_token(token_file)
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the console on {host}: binding anything but loopback needs a "
            f"token (--token-file FILE or {TOKEN_ENV})"
        )
    import socket  # here, not at the module's top: every command's start-up paid for it

    from field_encrypt.config import load_settings
    from field_encrypt.products import load_product
    from field_encrypt.rotation import load_policy
    from field_encrypt.runtime import start_background

    policy = load_policy(policy_file)
    try:
        import uvicorn

        from field_encrypt.console.app import create_app
        from field_encrypt.console.panels import PanelOptions, Panels
    except ImportError as exc:
        raise ConfigurationError(
            f"the console needs the 'console' extra (pip install 'field-encrypt[console]'): {exc}"
        ) from None
    options = PanelOptions(
        policy=policy, soak_hours=soak, retention_days=retention_days, gate_sample=gate_sample
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    settings = load_settings()
    if "provider_refresh_seconds" not in settings.model_fields_set and (
        settings.key_provider != "local"
    ):
        settings = load_settings(provider_refresh_seconds=REMOTE_REFRESH_SECONDS)
    rt = load_product(product).open(settings)
    start_background(rt, watch=True)  # long-running: revocations reach its cache (key_epoch)
    try:
        panels = Panels(rt, options=options)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"cannot bind {host}:{port}: {exc.strerror} (choose another --port)"
            ) from None
        sock.listen(128)  # before the URL is printed: a client reading it may connect at once
        bound = sock.getsockname()[1]
        shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
        app = create_app(panels, token=token)
        print(
            f"field-encrypt console for {panels.product} on http://{shown}:{bound}/ "
            f"(read-only{'; token required' if token else ''}; Ctrl-C stops it)",
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        rt.close()


command = guarded(console_command)
