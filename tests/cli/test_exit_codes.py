"""Each failure class has its own exit code and a one-line reason on stderr."""

from __future__ import annotations

from pathlib import Path

from field_encrypt.cli.exit_codes import ExitCode
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import refresh_provider
from tests.cli.helpers import PRODUCT, cli
from tests.support.seed import seed


def test_exit_codes_are_pinned() -> None:
    """The numbers operators script against never change silently."""
    assert {c.name: c.value for c in ExitCode} == {
        "OK": 0,
        "INTERNAL": 1,
        "USAGE": 2,
        "CONFIG": 3,
        "ITEMS_FAILED": 4,
        "NOT_VERIFIED": 5,
        "REFUSED": 6,
        "UNAVAILABLE": 7,
        "WAITING": 8,
        "HALTED": 9,
    }


def test_bad_usage_exits_2(env: dict[str, str]) -> None:
    """An unknown mode or a malformed --worker is a usage error."""
    assert cli("migrate", "--product", PRODUCT, "--mode", "shuffle").exit_code == 2
    result = cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks", "--worker", "5/4")
    assert result.exit_code == 2


def test_configuration_errors_exit_3(env: dict[str, str], runtime: ProductRuntime) -> None:
    """An unknown product, or an unknown target version, is a configuration error."""
    result = cli("status", "--product", "no_such_module:product")
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr.startswith("field-encrypt: cannot load product")
    seed(runtime, 2)
    result = cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks", "--new-mek-version", "9")
    assert result.exit_code == ExitCode.CONFIG
    assert "target MEK version '9' is unknown" in result.stderr


def test_failed_items_exit_4_naming_them(env: dict[str, str], runtime: ProductRuntime) -> None:
    """A DEK that cannot be unwrapped is named; the others are rewrapped."""
    seed(runtime, 5)
    runtime.provider.create_version()
    bad = runtime.dek_store.scan(limit=1).records[0]
    runtime.database.execute(
        "UPDATE dek_store SET wrapped = ? WHERE dek_id = ?", (b"\0" * 60, bad.dek_id)
    )
    result = cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks")
    assert result.exit_code == ExitCode.ITEMS_FAILED
    assert "1 item(s) failed" in result.stderr and bad.dek_id in result.stderr
    assert runtime.dek_store.count_by_version() == {"1": 1, "2": 4}


def test_verification_gap_exits_5(env: dict[str, str], runtime: ProductRuntime) -> None:
    """verify against a version some DEKs are not on fails with 5."""
    seed(runtime, 3)
    runtime.provider.create_version()
    result = cli("verify", "--product", PRODUCT, "--mek-version", "2")
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert "3 DEKs off version 2" in result.stderr


def test_refusals_exit_6(env: dict[str, str], runtime: ProductRuntime) -> None:
    """Disabling a version that still wraps DEKs is refused, naming the count."""
    seed(runtime, 4)
    runtime.provider.create_version()
    result = cli("keys", "disable", "1", "--product", PRODUCT)
    assert result.exit_code == ExitCode.REFUSED
    assert "4 DEKs are still wrapped under it" in result.stderr
    assert cli("keys", "disable", "2", "--product", PRODUCT).exit_code == ExitCode.REFUSED


def test_forced_disable_needs_a_reason_and_is_audited(
    env: dict[str, str], runtime: ProductRuntime
) -> None:
    """--force without --reason is a usage error (2) and changes nothing; with a reason the
    version is disabled though 4 DEKs use it, and the audit event says so and why."""
    seed(runtime, 4)
    runtime.provider.create_version()
    result = cli("keys", "disable", "1", "--product", PRODUCT, "--force")
    assert result.exit_code == ExitCode.USAGE
    assert "--reason" in result.stderr
    assert [v.enabled for v in runtime.provider.versions()] == [True, True]
    result = cli(
        "keys", "disable", "1", "--product", PRODUCT, "--force", "--reason", "INC-1", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert '"deks_unreadable": 4' in result.stdout and '"forced": true' in result.stdout
    refresh_provider(runtime.provider)  # the keyring changed under it a moment ago
    assert [v.enabled for v in runtime.provider.versions()] == [False, True]
    assert runtime.audit is not None
    (event,) = [e for e in runtime.audit.events() if e.type.endswith("mek.version.disabled")]
    assert (event.data["forced"], event.data["reason"], event.data["deksWrapped"]) == (
        True,
        "INC-1",
        4,
    )


def test_unavailable_provider_exits_7_with_cursor_saved(
    env: dict[str, str], runtime: ProductRuntime, tmp_path: Path
) -> None:
    """A provider that never answers ends the run after the retry budget, resumable."""
    seed(runtime, 3)
    runtime.provider.create_version()
    result = cli(
        "migrate",
        "--product",
        "tests.support.sample_product:unreachable_product",
        "--mode",
        "rewrap-deks",
        "--retry-budget",
        "0",
    )
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert "re-run the same command to continue" in result.stderr
    assert cli("migrate", "--product", PRODUCT, "--mode", "rewrap-deks").exit_code == 0
