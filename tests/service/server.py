"""Start ``notelett serve`` as a real uvicorn process on a loopback port, for tests and bench."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environ() -> dict[str, str]:
    """The process environment without any NoteLett or field-encrypt setting."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTELETT_", "FIELD_ENCRYPT_", "AZURE_"))
    }


@dataclass
class NoteLettServer:
    """A running ``notelett serve`` process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    env: Mapping[str, str], *, workdir: Path, name: str = "server", timeout: float = 30.0
) -> NoteLettServer:
    """Start a server with ``env`` added to a clean environment; wait until /health answers."""
    port = free_port()
    log_path = workdir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "notelett", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        process = subprocess.Popen(
            command,
            env={**clean_environ(), **env},
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = NoteLettServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"notelett serve exited {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a starting process, not waiting for time to pass
    server.stop()
    raise RuntimeError(f"notelett serve did not answer within {timeout}s:\n{server.log()}")
