"""``field-encrypt`` start-up time next to ``python -c pass``, measured in the same run.

    .venv/bin/python bench/cli_startup.py [--rounds 10]

Each round runs every command once, interleaved (so drift on a shared machine hits all
alike): ``python -c pass`` (the floor: the interpreter alone), ``field-encrypt --help``,
``field-encrypt status`` and ``status --json`` on the embedded default (a local keyring
and a SQLite file in a temporary directory, the notelett product, a few DEKs written
first). Figures are the best of the rounds: wall clock, and the CPU time (user + system)
the child used, which a loaded machine inflates much less than the wall clock. The load
average is printed before and after: compare runs only at similar load.

The commands run with their bytecode cached, as in an installed package: the children
may write ``__pycache__`` (``PYTHONDONTWRITEBYTECODE`` is dropped from their environment)
and one untimed round runs first. Without it, every run compiles each module of the
project from source again (~0.1 s of CPU for ``status``). To time other code (an older
commit's ``src``), put it first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of ``argv``, which must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def commands(program: str) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "field-encrypt --help": [program, "--help"],
        "field-encrypt status": [program, "status", "--product", "notelett"],
        "field-encrypt status --json": [program, "status", "--product", "notelett", "--json"],
    }


def measure(rounds: int, directory: Path) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds per command over ``rounds`` interleaved rounds."""
    env = {
        **os.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_KEYRING": str(directory / "keyring.json"),
        "FIELD_ENCRYPT_DATABASE": str(directory / "notelett.db"),
        "FIELD_ENCRYPT_ENABLED": "true",
    }
    env.pop("NOTELETT_DATABASE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    seed = (
        "from field_encrypt.config import load_settings\n"
        "from notelett.product import product\n"
        "rt = product.open(load_settings())\n"
        "for i in range(20):\n"
        "    rt.encryptor.encrypt_document('notes', f'n{i}', {'title': 't', 'body': 'b'})\n"
        "rt.close()\n"
    )
    subprocess.run([sys.executable, "-c", seed], env=env, check=True)
    program = str(VENV_BIN / "field-encrypt")
    argvs = commands(program)
    for argv in argvs.values():  # untimed: writes the bytecode an installed package has
        run_once(argv, env)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, argv in argvs.items():
            wall, cpu = run_once(argv, env)
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], wall), min(old[1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        best = measure(args.rounds, Path(tmp))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    floor_wall, floor_cpu = best["python -c pass"]
    print(f"best of {args.rounds} rounds, interleaved")
    print(f"{'command':30} {'wall s':>8} {'cpu s':>8} {'wall - pass':>12}")
    for name, (wall, cpu) in best.items():
        print(f"{name:30} {wall:8.3f} {cpu:8.3f} {wall - floor_wall:12.3f}")
    print(f"(python -c pass: {floor_wall * 1000:.1f} ms wall, {floor_cpu * 1000:.1f} ms CPU)")


if __name__ == "__main__":
    main()
