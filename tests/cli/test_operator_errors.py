"""Every command of the three CLIs, run as a real process through an operator's mistakes.

Each mistake (a bad setting, a missing, dangling or wrong-kind path, a bad flag or value, a
database or key service that does not answer) must end with the exit code docs/cli.md
documents, exactly one line on stderr (``PROG: ...``) naming what is wrong, and no
traceback anywhere. The commands of one case run a few at a time, as separate processes of
the installed console scripts (the real entry points).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer

from field_encrypt.cli.exit_codes import ExitCode
from notelett.cli import app as notelett_app
from tests.cli.test_docs import commands

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["--product", "notelett"]

# Every command of `field-encrypt` (and `encrypt-migrate`), with the arguments it needs to
# get as far as opening the product. `tests/cli/test_docs.py` pins the list of commands;
# test_the_table_covers_every_command below pins this table to it.
FIELD_ENCRYPT = [
    ["init"],
    ["status"],
    ["keys", "list"],
    ["keys", "create"],
    ["keys", "disable", "1"],
    ["keys", "enable", "1"],
    ["keys", "retire", "1"],
    ["keys", "compromised", "1"],
    ["keys", "shred-partition", "ws-1"],
    ["preflight"],
    ["verify", "--mek-version", "1"],
    ["migrate", "--mode", "rewrap-deks"],
    ["migrate", "--mode", "re-encrypt", "--dry-run"],
    ["backup", "--out", "{tmp}/backup-new.jsonl"],
    ["restore", "--in", "{tmp}/backup.jsonl"],
    ["collect-orphans"],
    ["rotate"],
    ["rotate", "--status"],
    ["rotate", "--stop"],
    ["audit", "verify"],
    ["audit", "list"],
    ["audit", "deliver", "--to", "http://127.0.0.1:{port}/events"],
    ["audit", "anchor", "--out", "{tmp}/anchor.json"],
    ["oncall", "check"],
    ["oncall", "test"],
    ["index-keys", "list"],
    ["index-keys", "create"],
    ["index-keys", "retire", "1"],
]


@dataclass(frozen=True)
class Invocation:
    """One command line: the program and its arguments (``{tmp}`` and ``{port}`` filled in)."""

    program: str
    args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)

    def label(self) -> str:
        return " ".join([self.program, *self.args])


def field_encrypt_commands(*, init: bool = True) -> list[Invocation]:
    """Every field-encrypt command on the product, and encrypt-migrate."""
    found = [
        Invocation("field-encrypt", [*args, *PRODUCT])
        for args in FIELD_ENCRYPT
        if init or args != ["init"]
    ]
    return [*found, Invocation("encrypt-migrate", ["--mode", "rewrap-deks", *PRODUCT])]


def notelett_commands(*, token: bool = False) -> list[Invocation]:
    """The notelett commands that open the database (``token`` reads NOTELETT_* only)."""
    found = [
        Invocation("notelett", ["seed", "--notes", "1"]),
        Invocation("notelett", ["purge"]),
        Invocation("notelett", ["rebind"]),
        Invocation("notelett", ["serve", "--port", "{port}"]),
    ]
    return [*found, Invocation("notelett", ["token", "--user", "u1"])] if token else found


def every_command() -> list[Invocation]:
    return [*field_encrypt_commands(), *notelett_commands()]


def _uses_the_key_service(c: Invocation) -> bool:
    """Whether the command calls the key provider on a product with no notes yet."""
    if c.args[:2] in (["keys", "shred-partition"], ["rotate", "--stop"]):
        return False
    return (
        c.args[0] in ("init", "status", "keys", "rotate", "seed")
        or c.program == "encrypt-migrate"
        or c.args[:3] == ["migrate", "--mode", "rewrap-deks"]
    )


@dataclass(frozen=True)
class Case:
    """A mistake: the environment it sets, the commands it reaches, and what they must say."""

    name: str
    env: Mapping[str, str]
    commands: Sequence[Invocation]
    code: int
    names: Sequence[str]
    creates_nothing: bool = False


SHORT_KEY = base64.b64encode(os.urandom(16)).decode()

CASES = [
    Case(
        "unknown key provider",
        {"FIELD_ENCRYPT_KEY_PROVIDER": "nope"},
        every_command(),
        ExitCode.CONFIG,
        ["FIELD_ENCRYPT_KEY_PROVIDER", "'local'"],
    ),
    Case(
        "malformed FIELD_ENCRYPT_KEY",
        {"FIELD_ENCRYPT_KEY_PROVIDER": "env", "FIELD_ENCRYPT_KEY": "not base64!"},
        every_command(),
        ExitCode.CONFIG,
        ["FIELD_ENCRYPT_KEY", "base64 of 32 random bytes"],
    ),
    Case(
        "FIELD_ENCRYPT_KEY of 16 bytes",
        {"FIELD_ENCRYPT_KEY_PROVIDER": "env", "FIELD_ENCRYPT_KEY": SHORT_KEY},
        every_command(),
        ExitCode.CONFIG,
        ["FIELD_ENCRYPT_KEY", "32 bytes"],
    ),
    Case(
        "a number that is not one",
        {"FIELD_ENCRYPT_CACHE_TTL_SECONDS": "soon"},
        every_command(),
        ExitCode.CONFIG,
        ["FIELD_ENCRYPT_CACHE_TTL_SECONDS", "number"],
    ),
    Case(
        "a negative number",
        {"FIELD_ENCRYPT_PROVIDER_READ_TIMEOUT_SECONDS": "-1"},
        every_command(),
        ExitCode.CONFIG,
        ["FIELD_ENCRYPT_PROVIDER_READ_TIMEOUT_SECONDS"],
    ),
    Case(
        "a database URL of an unknown kind",
        {"FIELD_ENCRYPT_DATABASE": "mysql://db.example/notes"},
        every_command(),
        ExitCode.CONFIG,
        ["FIELD_ENCRYPT_DATABASE", "'mysql'"],
    ),
    Case(
        "a missing database (a typo)",
        {"FIELD_ENCRYPT_DATABASE": "{tmp}/typo/field-encrypt.db"},
        field_encrypt_commands(init=False),
        ExitCode.CONFIG,
        ["{tmp}/typo/field-encrypt.db", "field-encrypt init --product notelett"],
        creates_nothing=True,
    ),
    Case(
        "a missing keyring (a typo)",
        {"FIELD_ENCRYPT_KEYRING": "{tmp}/keyrnig.json"},
        field_encrypt_commands(init=False),
        ExitCode.CONFIG,
        ["{tmp}/keyrnig.json", "field-encrypt init --product notelett"],
        creates_nothing=True,
    ),
    Case(
        "a directory where the database file should be",
        {"FIELD_ENCRYPT_DATABASE": "{tmp}/a-directory"},
        every_command(),
        ExitCode.CONFIG,
        ["{tmp}/a-directory", "is a directory"],
        creates_nothing=True,
    ),
    Case(
        "a directory where the keyring should be",
        {"FIELD_ENCRYPT_KEYRING": "{tmp}/a-directory"},
        every_command(),
        ExitCode.CONFIG,
        ["{tmp}/a-directory", "is a directory"],
        creates_nothing=True,
    ),
    Case(
        "a dangling symlink as the database",
        {"FIELD_ENCRYPT_DATABASE": "{tmp}/dangling"},
        every_command(),
        ExitCode.CONFIG,
        ["{tmp}/dangling", "symlink to nothing"],
        creates_nothing=True,
    ),
    Case(
        "a dangling symlink as the keyring",
        {"FIELD_ENCRYPT_KEYRING": "{tmp}/dangling"},
        every_command(),
        ExitCode.CONFIG,
        ["{tmp}/dangling", "symlink to nothing"],
        creates_nothing=True,
    ),
    Case(
        "PostgreSQL on a closed port",
        {"FIELD_ENCRYPT_DATABASE": "postgresql://fe@127.0.0.1:{port}/fe"},
        every_command(),
        ExitCode.UNAVAILABLE,
        ["PostgreSQL", "run the same command again"],
    ),
    Case(
        "Key Vault on a closed port",
        {
            "FIELD_ENCRYPT_KEY_PROVIDER": "akv",
            "AZURE_KEYVAULT_URL": "https://127.0.0.1:{port}",
            "AZURE_CLIENT_ID": "x",
            "AZURE_TENANT_ID": "x",
            "AZURE_CLIENT_SECRET": "x",
        },
        # The commands that need the key service on a product with no notes yet (the others
        # rightly succeed, and the service starts: its readiness check reports the vault).
        [c for c in every_command() if _uses_the_key_service(c)],
        ExitCode.UNAVAILABLE,
        ["Key Vault", "run the same command again"],
    ),
    Case(
        "an unknown flag",
        {},
        [
            Invocation(c.program, [*c.args, "--bogus"])
            for c in [*every_command(), *notelett_commands(token=True)[-1:]]
        ],
        ExitCode.USAGE,
        ["No such option: --bogus", "--help"],
    ),
]

NOTELETT_CASES = [
    Case(
        "an HS256 secret that is too short",
        {"NOTELETT_JWT_SECRET": "short"},
        [Invocation("notelett", ["token", "--user", "u1"])],
        ExitCode.CONFIG,
        ["NOTELETT_JWT_SECRET", "at least 32 bytes"],
    ),
    Case(
        "a development token while the service is on RS256",
        {"NOTELETT_JWT_ALGORITHM": "RS256"},
        [Invocation("notelett", ["token", "--user", "u1"])],
        ExitCode.CONFIG,
        ["RS256", "identity provider"],
    ),
    Case(
        "RS256 without a JWKS",
        {"NOTELETT_JWT_ALGORITHM": "RS256"},
        [Invocation("notelett", ["serve", "--port", "{port}"])],
        ExitCode.CONFIG,
        ["NOTELETT_JWT_JWKS"],
    ),
    Case(
        "a port that is not a number",
        {"NOTELETT_PORT": "http"},
        [Invocation("notelett", ["serve"]), Invocation("notelett", ["token", "--user", "u"])],
        ExitCode.CONFIG,
        ["NOTELETT_PORT"],
    ),
    Case(
        "a directory as the secret file",
        {"NOTELETT_JWT_SECRET_FILE": "{tmp}/a-directory"},
        [Invocation("notelett", ["token", "--user", "u1"])],
        ExitCode.CONFIG,
        ["{tmp}/a-directory", "NOTELETT_JWT_SECRET_FILE"],
    ),
    Case(
        "NOTELETT_DATABASE of an unknown kind",
        {"NOTELETT_DATABASE": "mysql://db.example/notes"},
        notelett_commands(),
        ExitCode.CONFIG,
        ["'mysql'"],
    ),
]


def _flag(program: str, args: list[str], names: list[str]) -> Case:
    return Case(" ".join(args), {}, [Invocation(program, args)], ExitCode.USAGE, [*names, "--help"])


FE = "field-encrypt"
FLAG_CASES = [
    _flag(FE, ["backup", *PRODUCT, "--out", "{tmp}/no-such-dir/b.jsonl"], ["'--out'", "exist"]),
    _flag(FE, ["backup", *PRODUCT, "--out", "{tmp}/a-directory"], ["'--out'", "directory"]),
    _flag(FE, ["backup", *PRODUCT, "--out", "{tmp}/dangling"], ["'--out'", "symlink"]),
    _flag(FE, ["backup", *PRODUCT, "--out", "{tmp}/a-file/b.jsonl"], ["'--out'", "a-file"]),
    _flag(FE, ["restore", *PRODUCT, "--in", "{tmp}/missing.jsonl"], ["'--in'", "exist"]),
    _flag(FE, ["restore", *PRODUCT, "--in", "{tmp}/a-directory"], ["'--in'", "directory"]),
    _flag(FE, ["restore", *PRODUCT, "--in", "{tmp}/dangling"], ["'--in'", "exist"]),
    _flag(FE, ["rotate", *PRODUCT, "--policy", "{tmp}/policy.toml"], ["'--policy'", "exist"]),
    _flag(FE, ["rotate", *PRODUCT, "--now", "teatime"], ["--now", "ISO 8601"]),
    _flag(FE, ["migrate", *PRODUCT, "--mode", "shuffle"], ["'--mode'", "shuffle"]),
    _flag(
        FE, ["migrate", *PRODUCT, "--mode", "rewrap-deks", "--batch-size", "x"], ["'--batch-size'"]
    ),
    _flag(FE, ["migrate", *PRODUCT, "--mode", "rewrap-deks", "--worker", "5/4"], ["'--worker'"]),
    _flag(FE, ["verify", *PRODUCT, "--mek-version", "1", "--sample", "-1"], ["'--sample'"]),
    _flag(FE, ["collect-orphans", *PRODUCT, "--older-than", "soon"], ["'--older-than'"]),
    _flag(FE, ["audit", "list", *PRODUCT, "--since", "yesterday"], ["--since", "ISO 8601"]),
    _flag(FE, ["keys", "disable", *PRODUCT], ["VERSION"]),
    _flag(FE, ["keys", "lisst", *PRODUCT], ["lisst"]),
    _flag("notelett", ["serve", "--port", "70000"], ["'--port'"]),
    _flag("notelett", ["token", "--user", "u1", "--ttl", "0"], ["'--ttl'"]),
    *(
        _flag(program, [*args, "--report", "{tmp}/no-such-dir/r.json"], ["'--report'", "exist"])
        for program, args in (
            (FE, ["migrate", *PRODUCT, "--mode", "rewrap-deks"]),
            ("encrypt-migrate", ["--mode", "rewrap-deks", *PRODUCT]),
        )
    ),
]


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, closed_port: int) -> Iterator[dict[str, str]]:
    """A product set up with ``init`` and a backup, plus the wrong kinds of paths beside it.

    Shared by the module's tests: none of them may change it (several check that).
    """
    tmp_path = tmp_path_factory.mktemp("operator-errors")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FIELD_ENCRYPT_", "NOTELETT_", "AZURE_", "AWS_"))
    }
    env.update(
        {
            "FIELD_ENCRYPT_DATABASE": str(tmp_path / "field-encrypt.db"),
            "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
            "NOTELETT_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
            "COLUMNS": "200",
        }
    )
    for args in (["init", *PRODUCT], ["backup", *PRODUCT, "--out", str(tmp_path / "backup.jsonl")]):
        done = subprocess.run(
            [BIN / "field-encrypt", *args], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    yield {**env, "TMP": str(tmp_path), "PORT": str(closed_port)}


def _fill(text: str, workdir: Mapping[str, str]) -> str:
    return text.replace("{tmp}", workdir["TMP"]).replace("{port}", workdir["PORT"])


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run(case: Case, workdir: dict[str, str], *, forked: bool = False) -> list[str]:
    """Run every command of ``case``; a description of each way one misbehaved.

    ``forked``: through ``tests.cli.forked`` (one process per command line, the imports
    paid once); otherwise each is a process of its installed console script.
    """
    root = Path(workdir["TMP"])
    env = {k: v for k, v in workdir.items() if k not in ("TMP", "PORT")}
    env.update({k: _fill(v, workdir) for k, v in case.env.items()})
    before = _listing(root)
    lines = [[_fill(a, workdir) for a in c.args] for c in case.commands]
    if forked:
        results = _forked(case, env, lines, root)
    else:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(
                pool.map(lambda c, args: _script(c.program, args, env, root), case.commands, lines)
            )
    problems = [
        p
        for c, done in zip(case.commands, results, strict=True)
        for p in _problems(case, c, done, workdir)
    ]
    if case.creates_nothing:
        created = _listing(root) - before
        if created:
            problems.append(f"{case.name}: created {sorted(created)}")
    return problems


def _script(
    program: str, args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / program, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _forked(
    case: Case, env: dict[str, str], lines: list[list[str]], cwd: Path
) -> list[subprocess.CompletedProcess[str]]:
    jobs = [
        {"program": c.program, "args": args, "env": env, "cwd": str(cwd)}
        for c, args in zip(case.commands, lines, strict=True)
    ]
    with tempfile.TemporaryDirectory(dir=cwd.parent) as out:
        done = subprocess.run(
            [sys.executable, "-m", "tests.cli.forked", out],
            input=json.dumps(jobs),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=1200,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return [
        subprocess.CompletedProcess(job["args"], r["code"], r["stdout"], r["stderr"])
        for job, r in zip(jobs, json.loads(done.stdout), strict=True)
    ]


def _problems(
    case: Case,
    invocation: Invocation,
    done: subprocess.CompletedProcess[str],
    workdir: Mapping[str, str],
) -> list[str]:
    label = f"{case.name}: {invocation.label()}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    found = []
    if "Traceback" in done.stdout + done.stderr:
        found.append(f"{label}: printed a traceback")
    if done.returncode != case.code:
        found.append(f"{label}: exit {done.returncode}, not {case.code}: {done.stderr[-300:]!r}")
    prefix = "notelett" if invocation.program == "notelett" else "field-encrypt"
    if len(lines) != 1 or not lines[0].startswith(f"{prefix}: "):
        found.append(f"{label}: stderr is not one line: {done.stderr[-400:]!r}")
    else:
        missing = [n for n in (_fill(n, workdir) for n in case.names) if n not in lines[0]]
        if missing:
            found.append(f"{label}: the line does not name {missing}: {lines[0]!r}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES + NOTELETT_CASES, ids=lambda c: c.name)
def test_every_command_fails_with_one_line(case: Case, workdir: dict[str, str]) -> None:
    """Each command ends the mistake with its documented code, one named line, no traceback."""
    problems = run(case, workdir, forked=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", FLAG_CASES, ids=lambda c: c.name)
def test_bad_flags_and_paths_are_usage_errors(case: Case, workdir: dict[str, str]) -> None:
    """A bad flag value or path is exit 2 with one line naming the flag, before any work."""
    problems = run(case, workdir)
    assert not problems, "\n".join(problems)


def test_a_bad_report_path_is_refused_before_the_run(workdir: dict[str, str]) -> None:
    """migrate --report into a missing directory records no run (it used to fail at the end)."""
    env = {k: v for k, v in workdir.items() if k not in ("TMP", "PORT")}
    report = f"{workdir['TMP']}/no-such-dir/r.json"
    args = ["migrate", *PRODUCT, "--mode", "rewrap-deks", "--report", report]
    done = subprocess.run([BIN / "field-encrypt", *args], env=env, capture_output=True, text=True)
    assert done.returncode == ExitCode.USAGE
    status = subprocess.run(
        [BIN / "field-encrypt", "status", *PRODUCT, "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert '"runs": []' in status.stdout


def test_the_table_covers_every_command() -> None:
    """The table lists every field-encrypt command (those docs/cli.md must document) and notelett's."""
    groups = ("keys", "audit", "oncall", "index-keys")
    heads = {" ".join(a[:2]) if a[0] in groups else a[0] for a in FIELD_ENCRYPT}
    # console serves until stopped, so a case it survives would hang the table: its
    # operator errors are in tests/console/test_console_security.py.
    assert heads == set(dict(commands())) - {"console"}
    notelett = typer.main.get_command(notelett_app)
    # workspaces/members administration: tests/service/test_directory_admin.py
    admin = {"workspaces", "members"}
    assert set(notelett.commands) - admin == {c.args[0] for c in notelett_commands(token=True)}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("entry", "blocked", "extra"),
    [
        ("field_encrypt.cli.entry:field_encrypt", "typer", "cli"),
        ("field_encrypt.cli.entry:encrypt_migrate", "typer", "cli"),
        ("field_encrypt.cli.entry:field_encrypt", "rich", "cli"),
        ("notelett.script:main", "fastapi", "notelett"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_pip_install(
    entry: str, blocked: str, extra: str, tmp_path: Path
) -> None:
    """With an extra's module missing (blocked in sys.modules), the script says what to
    install, whether the module is needed to start or only by the command that runs (the
    CLIs import rich and FastAPI lazily)."""
    module, _, function = entry.partition(":")
    args = {"rich": ["init", "--product", "notelett"], "fastapi": ["serve"]}
    argv = ["x", *args.get(blocked, ["--help"])]
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; sys.argv = {argv!r}\n"
        f"from {module} import {function}; {function}()"
    )
    env = {
        **os.environ,
        "FIELD_ENCRYPT_KEY_PROVIDER": "local",
        "FIELD_ENCRYPT_DATABASE": str(tmp_path / "x.db"),
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "keyring.json"),
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == ExitCode.CONFIG
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert f"pip install 'field-encrypt[{extra}]'" in done.stderr and blocked in done.stderr


def test_version_and_plain_help() -> None:
    """--version prints the installed version; help shows flags without <bool>, VERSION plain."""
    from field_encrypt import __version__

    for program in ("field-encrypt", "encrypt-migrate", "notelett"):
        done = subprocess.run([BIN / program, "--version"], capture_output=True, text=True)
        assert (done.returncode, done.stdout.strip()) == (0, f"field-encrypt {__version__}")
    env = {**os.environ, "COLUMNS": "200"}
    usage = subprocess.run(
        [BIN / "field-encrypt", "keys", "disable", "--help"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "keys disable [OPTIONS] VERSION" in usage and "{version}" not in usage
    migrate = subprocess.run(
        [BIN / "field-encrypt", "migrate", "--help"], capture_output=True, text=True, env=env
    ).stdout
    assert "--dry-run" in migrate and "<bool>" not in migrate
    root = subprocess.run([BIN / "field-encrypt", "--help"], capture_output=True, text=True).stdout
    assert "--install-completion" in root and "--show-completion" in root


def test_init_creates_once_and_says_so(tmp_path: Path) -> None:
    """init creates the database and keyring, naming them; a second run says they existed."""
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("FIELD_ENCRYPT_", "NOTELETT_"))
        },
        "FIELD_ENCRYPT_DATABASE": str(tmp_path / "new" / "fe.db"),
        "FIELD_ENCRYPT_KEYRING": str(tmp_path / "new" / "keyring.json"),
    }
    first = subprocess.run(
        [BIN / "field-encrypt", "init", *PRODUCT], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert f"created database {tmp_path}/new/fe.db" in first.stdout
    assert f"created keyring {tmp_path}/new/keyring.json with MEK version 1" in first.stdout
    keyring = (tmp_path / "new" / "keyring.json").read_bytes()
    again = subprocess.run(
        [BIN / "field-encrypt", "init", *PRODUCT], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "already existed" in again.stdout
    assert (tmp_path / "new" / "keyring.json").read_bytes() == keyring
    typo = {**env, "FIELD_ENCRYPT_KEYRING": str(tmp_path / "new" / "keyrign.json")}
    listed = subprocess.run(
        [BIN / "field-encrypt", "keys", "list", *PRODUCT], env=typo, capture_output=True, text=True
    )
    assert listed.returncode == ExitCode.CONFIG and "keyrign.json does not exist" in listed.stderr
    assert not (tmp_path / "new" / "keyrign.json").exists()  # no new MEK minted
