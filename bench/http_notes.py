"""NoteLett HTTP benchmark: encryption on vs off, same data, same run, measured with wrk.

Starts three ``notelett serve`` processes on loopback, each on its own freshly seeded SQLite
database of the same size: one with encryption enabled (title and body sealed, one DEK
per note, binary tokens), one with ``FIELD_ENCRYPT_ENABLED=false`` (plaintext), and one
encrypted with the key-state watch off (``FIELD_ENCRYPT_KEY_STATE_POLL_SECONDS=0``: no
revocation polling, docs/reliability.md). Then drives
``GET /api/notes/?workspaceId=...&limit=50`` against each with wrk, rotating the order
every round so drift hits all alike, and reports throughput, p50 and p99 per round, their
medians, the p99 ratio (goal: encrypted p99 <= 1.3x plaintext p99) and the throughput the
1 s key-state poll costs (goal: <= 1 %), with the time one poll takes, measured in
process on the same database.

    scripts/install-system-deps        # wrk
    .venv/bin/python bench/http_notes.py [--notes 3000] [--duration 10] [--rounds 3]

Requests cycle through the workspaces' first pages (a wrk Lua script), so each request
decrypts 50 notes' titles and bodies under 50 DEKs, served from the warm DEK cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

MODES = {
    "encrypted": {"FIELD_ENCRYPT_ENABLED": "true"},
    "plaintext": {"FIELD_ENCRYPT_ENABLED": "false"},
    "no-epoch-poll": {"FIELD_ENCRYPT_ENABLED": "true", "FIELD_ENCRYPT_KEY_STATE_POLL_SECONDS": "0"},
}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True, slots=True)
class Sample:
    mode: str
    round: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Server:
    mode: str
    process: subprocess.Popen[bytes]
    port: int
    token: str


def _environ(workdir: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTELETT_", "FIELD_ENCRYPT_"))}
    env.update(settings)
    env["NOTELETT_DATABASE"] = str(workdir / "notelett.db")
    env["NOTELETT_JWT_SECRET_FILE"] = str(workdir / "jwt-secret")
    env["FIELD_ENCRYPT_KEYRING"] = str(workdir / "keyring.json")
    return env


def _notelett(*args: str, env: dict[str, str], cwd: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "notelett", *args],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(mode: str, root: Path, *, notes: int, workspaces: int) -> Server:
    workdir = root / mode
    workdir.mkdir()
    env = _environ(workdir, MODES[mode])
    _notelett("seed", "--notes", str(notes), "--workspaces", str(workspaces), env=env, cwd=workdir)
    token = _notelett("token", "--user", "demo", "--ttl", "86400", env=env, cwd=workdir).strip()
    with sqlite3.connect(workdir / "notelett.db") as db:
        (deks,) = db.execute("SELECT COUNT(*) FROM dek_store").fetchone()
        (plain,) = db.execute("SELECT COUNT(*) FROM notes WHERE typeof(title) = 'text'").fetchone()
    print(f"{mode}: seeded {notes} notes, {deks} DEKs, {plain} plaintext titles", flush=True)
    port = _free_port()
    log = (workdir / "server.log").open("wb")
    command = [sys.executable, "-m", "notelett", "serve", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return Server(mode, process, port, token)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{mode} server did not start; see {workdir / 'server.log'}")


def poll_cost(workdir: Path, polls: int = 2000) -> float:
    """Microseconds one key-state poll takes (a watcher's ``check()``), on ``workdir``'s
    database, in this process: what each serving process spends per poll interval."""
    from field_encrypt import DekCache
    from field_encrypt.backends.sqlite.db import SqliteDatabase
    from field_encrypt.backends.sqlite.key_state import SqliteKeyStateStore
    from field_encrypt.key_epoch import KeyEpochWatcher
    from field_encrypt.providers.local import LocalKeyProvider

    database = SqliteDatabase(workdir / "notelett.db", create=False)
    try:
        watcher = KeyEpochWatcher(
            SqliteKeyStateStore(database, product="notelett"),
            cache=DekCache(),
            provider=LocalKeyProvider(workdir / "keyring.json", mek_name="field-encrypt-mek"),
        )
        watcher.check()
        started = time.perf_counter()
        for _ in range(polls):
            watcher.check()
        return (time.perf_counter() - started) / polls * 1e6
    finally:
        database.close()


def wrk(server: Server, *, script: Path, duration: int, connections: int) -> tuple[float, ...]:
    """``(requests/s, p50 ms, p99 ms, non-2xx + socket errors)`` of one wrk run."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    command += ["-H", f"Authorization: Bearer {server.token}", f"http://127.0.0.1:{server.port}"]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    percentiles = {
        p: float(v) * UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)$", out, re.M)
    }
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return rps, percentiles["50"], percentiles["99"], errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=3000, help="notes seeded per server")
    parser.add_argument("--workspaces", type=int, default=3)
    parser.add_argument("--limit", type=int, default=50, help="page size requested")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run scripts/install-system-deps")

    root = Path(tempfile.mkdtemp(prefix="notelett-bench-"))
    script = root / "pages.lua"
    script.write_text(
        "local i = 0\n"
        "request = function()\n"
        f"  i = (i % {args.workspaces}) + 1\n"
        f'  return wrk.format("GET", "/api/notes/?workspaceId=ws-" .. i .. "&limit={args.limit}")\n'
        "end\n"
    )
    servers = [start(m, root, notes=args.notes, workspaces=args.workspaces) for m in MODES]
    samples: list[Sample] = []
    try:
        for server in servers:
            wrk(server, script=script, duration=args.warmup, connections=args.connections)
        for n in range(1, args.rounds + 1):
            shift = (n - 1) % len(servers)
            order = servers[shift:] + servers[:shift]
            for server in order:
                rps, p50, p99, errors = wrk(
                    server, script=script, duration=args.duration, connections=args.connections
                )
                samples.append(Sample(server.mode, n, rps, p50, p99, int(errors)))
                print(
                    f"round {n} {server.mode:9}  {rps:8.1f} req/s  p50 {p50:7.2f} ms  "
                    f"p99 {p99:7.2f} ms  errors {int(errors)}",
                    flush=True,
                )
        poll_us = poll_cost(root / "encrypted")
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(timeout=15)
    medians = {
        mode: {
            key: statistics.median(getattr(s, key) for s in samples if s.mode == mode)
            for key in ("requests_per_second", "p50_ms", "p99_ms")
        }
        for mode in MODES
    }
    ratio = medians["encrypted"]["p99_ms"] / medians["plaintext"]["p99_ms"]
    print(
        f"\nGET /api/notes/?workspaceId=...&limit={args.limit}: {args.notes} notes per server, "
        f"{args.connections} connections, {args.rounds} x {args.duration}s rounds (medians)"
    )
    print("| mode | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for mode, m in medians.items():
        print(
            f"| {mode} | {m['requests_per_second']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
        )
    print(f"\np99 ratio encrypted/plaintext: {ratio:.2f} (goal <= 1.30)")
    polled = medians["encrypted"]["requests_per_second"]
    unpolled = medians["no-epoch-poll"]["requests_per_second"]
    poll_share = 1 - polled / unpolled
    print(
        f"key-state poll (1 s): throughput {polled:.0f} vs {unpolled:.0f} req/s without it "
        f"({poll_share:+.2%} cost, goal <= 1 %); one poll takes {poll_us:.1f} us, "
        f"{poll_us / 1e4:.4f} % of one core at one poll per second"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "samples": [asdict(s) for s in samples],
                    "p99_ratio": ratio,
                    "poll_throughput_cost": poll_share,
                    "poll_us": poll_us,
                },
                indent=2,
            )
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
