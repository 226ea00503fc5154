"""Header attacks on a real ``notelett serve``: oversized headers and slowloris.

Bounded (counts, sizes and time limited; loopback only): one 64 MB header, two 60 MB
headers at once and 50 slowloris connections, all at the same time, while a client
probes ``/health``. The server must cut the big headers off (431 or a closed
connection), close every slowloris connection once the header timeout passes, keep
``/health`` fast for the prober, and keep its memory flat.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from notelett import NoteLettSettings
from notelett.backend import Backend
from tests import figures

from .server import NoteLettServer, start_server
from .test_uvicorn import server_env

HEADER_TIMEOUT = 2.0
MB = 1024 * 1024
CHUNK = 64 * 1024
HEALTH_P99_MS = 50.0
"""The issue's goal for /health p99 under attack, on a machine with nothing else to do."""
SLOWDOWN = 3.0
"""How much slower than an unattacked server's /health, probed at the same time on the same
machine, the attacked one's may be at p99."""
ROUNDS = 3


@pytest.fixture
def server(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path
) -> Iterator[NoteLettServer]:
    env = {
        **server_env(settings, backend),
        "NOTELETT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "NOTELETT_MAX_HEADER_BYTES": "16384",
    }
    running = start_server(env, workdir=tmp_path, name="attacked")
    yield running
    running.stop()


@pytest.fixture
def control(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path
) -> Iterator[NoteLettServer]:
    """A second server, configured alike and never attacked: what /health costs on this
    machine at the same moment."""
    env = {
        **server_env(settings, backend),
        "NOTELETT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "NOTELETT_MAX_HEADER_BYTES": "16384",
    }
    running = start_server(env, workdir=tmp_path, name="control")
    yield running
    running.stop()


def _address(server: NoteLettServer) -> tuple[str, int]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return host, int(port)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class BigHeader:
    """One connection sending a header of ``size`` bytes as fast as it can."""

    size: int
    sent: int = 0
    answer: bytes = b""
    seconds: float = 0.0

    def run(self, address: tuple[str, int]) -> None:
        started = time.monotonic()
        with socket.create_connection(address, timeout=10) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
                chunk = b"a" * CHUNK
                while self.sent < self.size:
                    self.sent += sock.send(chunk)
            except OSError:
                pass  # the server closed the connection: what we want
            try:
                self.answer = sock.recv(4096)
            except OSError:
                self.answer = b""
        self.seconds = time.monotonic() - started


@dataclass
class Slowloris:
    """One connection trickling a header line every half second until it is closed."""

    closed_after: float | None = None

    def run(self, address: tuple[str, int], give_up: float) -> None:
        started = time.monotonic()
        with socket.create_connection(address, timeout=10) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
                while time.monotonic() - started < give_up:
                    readable, _, _ = select.select([sock], [], [], 0.5)
                    if readable and not sock.recv(4096):
                        break
                    sock.sendall(b"X-Slow: 1\r\n")
                else:
                    return
            except OSError:
                pass
            self.closed_after = time.monotonic() - started


@dataclass
class Prober:
    """Times GET /health over one kept-alive connection, and samples the server's RSS."""

    base_url: str
    pid: int
    latencies: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    ok = http.get("/health").status_code == 200
                except httpx.TransportError:
                    ok = False
                self.latencies.append(time.perf_counter() - started)
                self.failures += not ok
                self.rss.append(_rss_bytes(self.pid))
                self.stop.wait(0.01)  # pacing the probes, not waiting for a time to pass

    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] * 1000


def test_an_oversized_header_is_answered_431(server: NoteLettServer) -> None:
    """A request whose headers pass NOTELETT_MAX_HEADER_BYTES gets 431 and a closed connection."""
    with socket.create_connection(_address(server), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 17_000)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        while chunk := sock.recv(4096):  # then the server closes the connection
            answer += chunk
    with httpx.Client(base_url=server.base_url) as http:
        assert http.get("/health", headers={"X-Fine": "a" * 8000}).status_code == 200


def test_a_connection_sending_headers_too_slowly_is_closed(server: NoteLettServer) -> None:
    """A connection that never completes its headers is closed after the header timeout."""
    loris = Slowloris()
    loris.run(_address(server), give_up=HEADER_TIMEOUT * 4)
    assert loris.closed_after is not None
    assert HEADER_TIMEOUT * 0.9 <= loris.closed_after <= HEADER_TIMEOUT + 1.5


def test_connections_above_the_cap_are_answered_503(
    settings: NoteLettSettings, backend: Backend, tmp_path: Path
) -> None:
    """With NOTELETT_MAX_CONNECTIONS=4 and 4 idle connections open, a request gets 503 at
    once; when they close, requests are served again."""
    env = {**server_env(settings, backend), "NOTELETT_MAX_CONNECTIONS": "4"}
    capped = start_server(env, workdir=tmp_path, name="capped")
    try:
        idle = [socket.create_connection(_address(capped), timeout=10) for _ in range(4)]
        with httpx.Client(base_url=capped.base_url, timeout=10) as http:
            assert http.get("/health").status_code == 503
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 10
        status = 0
        while status != 200 and time.monotonic() < deadline:
            with httpx.Client(base_url=capped.base_url, timeout=10) as http:
                status = http.get("/health").status_code  # until the server saw the closes
        assert status == 200
    finally:
        capped.stop()


@dataclass
class Stutter:
    """A busy machine, made on purpose: the servers are stopped (SIGSTOP) together for
    ``pause`` seconds every ``period`` seconds, as other jobs taking the CPU stall them,
    until ``stop``."""

    pids: list[int]
    pause: float = 0.08
    period: float = 0.25
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for pid in self.pids:
                    os.kill(pid, signal.SIGSTOP)
                self.stop.wait(self.pause)
            finally:
                for pid in self.pids:
                    os.kill(pid, signal.SIGCONT)
            self.stop.wait(self.period - self.pause)


def test_header_attacks_leave_health_fast_and_memory_flat(
    server: NoteLettServer, control: NoteLettServer
) -> None:
    """64 MB + 2 x 60 MB headers and 50 slowloris connections at once: /health stays fast
    for others, every attack connection cut off, server RSS flat.

    "Fast" is measured against the same run: /health p99 under attack is under 50 ms (the
    issue's goal) or, on a machine busy with other work, at most ``SLOWDOWN`` times the
    p99 of an unattacked server probed the same way at the same time. A p99 of some 130
    probes is their second slowest, so one scheduling hiccup of another job can decide it:
    the attack is made up to ``ROUNDS`` times and one round must meet the bound (every
    round meets the others). Before the fix the attack cost /health whole seconds, in
    every round."""
    _attack_rounds(server, control, "header attacks")


def test_header_attacks_on_a_busy_machine(server: NoteLettServer, control: NoteLettServer) -> None:
    """The same attack with both servers stalled 80 ms in every 250 ms (other jobs taking
    the CPU): /health p99 passes 50 ms with or without the attack, which the fixed bound
    the test once had took for a failure; the bound measured in the run holds."""
    stutter = Stutter([server.process.pid, control.process.pid])
    stalls = threading.Thread(target=stutter.run)
    stalls.start()
    try:
        p99, unattacked = _attack_rounds(
            server, control, "header attacks, servers stalled 80 ms in 250 ms"
        )
    finally:
        stutter.stop.set()
        stalls.join(timeout=10)
    assert unattacked > HEALTH_P99_MS  # the stalls were felt: a fixed 50 ms bound fails here
    assert p99 > HEALTH_P99_MS


def _attack_rounds(
    server: NoteLettServer, control: NoteLettServer, name: str
) -> tuple[float, float]:
    """The attack, up to ``ROUNDS`` times until /health p99 under attack is within its bound;
    that round's p99 under attack and unattacked (ms)."""
    seen = []
    for round_ in range(1, ROUNDS + 1):
        p99, unattacked, bound = _attack(server, control, f"{name}, round {round_}")
        if p99 < bound:
            return p99, unattacked
        seen.append(f"p99 {p99:.1f} ms, unattacked {unattacked:.1f} ms, bound {bound:.1f} ms")
    raise AssertionError(f"/health p99 under attack out of bounds in every round: {seen}")


def _attack(
    server: NoteLettServer, control: NoteLettServer, name: str
) -> tuple[float, float, float]:
    """Run the attack on ``server`` and assert its bounds but the p99's; /health p99 (ms)
    under attack, on ``control`` at the same time, and the bound."""
    address = _address(server)
    pid = server.process.pid
    for running in (server, control):
        with httpx.Client(base_url=running.base_url) as http:
            for _ in range(20):
                http.get("/health")  # warm up before measuring
    rss_before = _rss_bytes(pid)
    prober = Prober(server.base_url, pid)
    calm = Prober(control.base_url, control.process.pid)
    big = [BigHeader(64 * MB), BigHeader(60 * MB), BigHeader(60 * MB)]
    lorises = [Slowloris() for _ in range(50)]
    attackers = [threading.Thread(target=b.run, args=(address,)) for b in big]
    attackers += [
        threading.Thread(target=s.run, args=(address, HEADER_TIMEOUT * 4)) for s in lorises
    ]
    probes = [threading.Thread(target=p.run) for p in (prober, calm)]
    for probe in probes:
        probe.start()
    started = time.monotonic()
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join(timeout=60)
    attack_seconds = time.monotonic() - started
    prober.stop.set()
    calm.stop.set()
    for probe in probes:
        probe.join(timeout=30)
    rss_after = _rss_bytes(pid)
    baseline = calm.p99_ms()
    p99_bound = max(HEALTH_P99_MS, SLOWDOWN * baseline)

    closed = [s.closed_after for s in lorises]
    assert all(c is not None for c in closed), "a slowloris connection was never closed"
    slowest_close = max(c for c in closed if c is not None)
    accepted = max(b.sent for b in big)
    p99 = prober.p99_ms()
    growth_mb = (max(prober.rss) - rss_before) / MB
    figures.record(
        name,
        health_probes=len(prober.latencies),
        health_p99_ms=round(p99, 2),
        health_p99_unattacked_ms=round(baseline, 2),
        health_p99_bound_ms=round(p99_bound, 2),
        health_max_ms=round(max(prober.latencies) * 1000, 2),
        big_header_max_bytes_sent=accepted,
        big_header_431=sum(b.answer.startswith(b"HTTP/1.1 431 ") for b in big),
        slowloris_closed_max_s=round(slowest_close, 2),
        rss_before_mb=round(rss_before / MB, 1),
        rss_peak_growth_mb=round(growth_mb, 1),
        attack_seconds=round(attack_seconds, 2),
    )
    print(
        f"{name}: {len(prober.latencies)} probes, p99 {p99:.1f} ms "
        f"(unattacked {baseline:.1f} ms, bound {p99_bound:.1f} ms), "
        f"max {max(prober.latencies) * 1000:.1f} ms; big headers sent at most {accepted} bytes "
        f"({[b.answer[:12] for b in big]}); slowloris closed after <= {slowest_close:.2f} s; "
        f"RSS {rss_before / MB:.1f} MB -> peak +{growth_mb:.1f} MB, after {rss_after / MB:.1f} MB"
    )
    assert prober.failures == calm.failures == 0
    assert accepted < 16 * MB, "the server kept reading an oversized header"
    assert slowest_close <= HEADER_TIMEOUT + 1.5
    assert growth_mb < 10, f"server RSS grew {growth_mb:.1f} MB"
    return p99, baseline, p99_bound
