"""The KEK tier end to end through the CLI: the runbook's MEK rotation, layout moves, KEKs.

Every step runs the real ``field-encrypt`` commands (in process, or as a process that is
killed with SIGKILL) on the sample product with ``FIELD_ENCRYPT_KEY_LAYOUT`` set, and every
document is read back after each step.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from field_encrypt import audit
from field_encrypt.backends.base import KEK_PREFIX
from field_encrypt.config import load_settings
from field_encrypt.errors import DecryptionError
from field_encrypt.products import ProductRuntime
from field_encrypt.rotation import verify
from field_encrypt.testing import CountingProvider
from field_encrypt.usage import count_not_on, dek_counts
from tests.cli.helpers import PRODUCT, cli, cli_process
from tests.support import sample_product
from tests.support.fixtures import expire_leases, on_every_store
from tests.support.sample_product import product
from tests.support.seed import document, read_all, seed

pytestmark = on_every_store

KILLABLE = "tests.support.sample_product:killable_product"
COUNTING = "tests.support.sample_product:counting_product"


@pytest.fixture
def tier_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The sample product's environment with the KEK layout and no KEK deletion grace."""
    extra = {"FIELD_ENCRYPT_KEY_LAYOUT": "kek", "FIELD_ENCRYPT_KEK_RETIRE_GRACE_SECONDS": "0"}
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    return {**env, **extra}


def _layout(env: dict[str, str], layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env["FIELD_ENCRYPT_KEY_LAYOUT"] = layout
    monkeypatch.setenv("FIELD_ENCRYPT_KEY_LAYOUT", layout)


def _opened(env: dict[str, str]) -> Iterator[ProductRuntime]:
    runtime = product.open(load_settings(env))
    try:
        yield runtime
    finally:
        runtime.close()


def _all_read(env: dict[str, str], count: int) -> bool:
    for runtime in _opened(env):
        return read_all(runtime) == {f"doc-{i}": document(i) for i in range(count)}
    return False


def _kek_events(env: dict[str, str]) -> list[tuple[str, str, object]]:
    """The trail's KEK events as ``(type suffix, kekId, reason or version)``; chain intact."""
    for runtime in _opened(env):
        assert runtime.audit is not None and runtime.audit.verify().intact
        return [
            (
                e.type.removeprefix(audit.TYPE_PREFIX),
                e.data["kekId"],
                e.data.get("reason", e.data.get("toVersion", e.data.get("mekVersion"))),
            )
            for e in runtime.audit.events(types=audit.KEK_EVENT_TYPES)
        ]
    return []


def _json(*args: str) -> dict[str, object]:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_mek_rotation_with_the_tier_follows_the_runbook(tier_env: dict[str, str]) -> None:
    """keys create, migrate rewrap-deks (a handful of MEK calls for 150 DEKs), verify = 0,
    keys disable old: every document reads throughout, and the checks keep their meaning."""
    for runtime in _opened(tier_env):
        seed(runtime, 150)
        assert runtime.kek_tier is not None and len(runtime.kek_tier.keks.all()) == 1
        assert set(runtime.dek_store.count_by_version()) == {
            KEK_PREFIX + runtime.kek_tier.keks.all()[0].kek_id
        }
        assert dek_counts(runtime) == {"1": 150}
    listed = _json("keys", "list", "--product", PRODUCT)["versions"]
    assert [(v["version"], v["deks"]) for v in listed] == [("1", 150)]  # type: ignore[index]
    assert cli("keys", "create", "--product", PRODUCT).exit_code == 0
    refused = cli("keys", "disable", "1", "--product", PRODUCT)
    assert refused.exit_code == 6 and "150 DEKs" in refused.output
    dry = _json("migrate", "--product", PRODUCT, "--mode", "rewrap-deks", "--dry-run")
    assert dry["dry_run"]["matched"] == 150  # type: ignore[index]
    assert dry["dry_run"]["provider_calls"] == 3  # type: ignore[index]

    sample_product.LAST_COUNTER.clear()
    report = _json(
        "migrate", "--product", COUNTING, "--mode", "rewrap-deks",
        "--old-mek-version", "1", "--new-mek-version", "2",
    )  # fmt: skip
    assert report["status"] == "completed" and report["remaining"] == 0
    assert (report["matched"], report["rewrapped"]) == (150, 150)
    (counter,) = sample_product.LAST_COUNTER
    mek_calls = counter.calls["wrap"] + counter.calls["unwrap"] + counter.calls["rewrap"]
    assert mek_calls <= 5, counter.calls  # the KEK: unwrap, wrap, checked unwrap; no DEK
    assert _json("verify", "--product", PRODUCT, "--mek-version", "2", "--sample", "150")["clean"]
    status = _json("status", "--product", PRODUCT)
    assert status["deks_by_version"] == {"2": 150}
    assert [(k["mek_version"], k["deks"], k["active"]) for k in status["keks"]] == [  # type: ignore[attr-defined]
        ("2", 150, True)
    ]
    assert status["runs"][0]["mode"] == "rewrap-deks"  # type: ignore[index]
    assert cli("keys", "disable", "1", "--product", PRODUCT).exit_code == 0
    assert _all_read(tier_env, 150)
    again = _json("migrate", "--product", PRODUCT, "--mode", "rewrap-deks")
    assert (again["matched"], again["rewrapped"]) == (0, 0)
    kek_id = status["keks"][0]["kek_id"]  # type: ignore[index]
    assert _kek_events(tier_env) == [("kek.created", kek_id, "1"), ("kek.rewrapped", kek_id, "2")]


def test_rewrap_deks_on_the_tier_also_moves_direct_deks(tier_env: dict[str, str]) -> None:
    """DEKs still wrapped directly under the old version are rewrapped one by one, KEK DEKs not."""
    direct = {**tier_env, "FIELD_ENCRYPT_KEY_LAYOUT": "direct"}
    for runtime in _opened(direct):
        seed(runtime, 20)
    for runtime in _opened(tier_env):
        seed(runtime, 30, start=20)
        runtime.provider.create_version()
        assert dek_counts(runtime) == {"1": 50}
    report = _json("migrate", "--product", PRODUCT, "--mode", "rewrap-deks")
    assert (report["matched"], report["rewrapped"], report["remaining"]) == (50, 50, 0)
    for runtime in _opened(tier_env):
        raw = runtime.dek_store.count_by_version()
        assert raw.pop("2") == 20 and list(raw.values()) == [30]
        assert count_not_on(runtime, "2") == 0
    assert _all_read(tier_env, 50)


def _killed_then_finished(env: dict[str, str], mode: str, points: list[str], count: int) -> None:
    args = ["migrate", "--product", KILLABLE, "--mode", mode, "--batch-size", "10"]
    kills = 0
    for point in points:
        result = cli_process(*args, env={**env, "SAMPLE_KILL_AT": point})
        if result.returncode == -signal.SIGKILL:
            kills += 1
            expire_leases(env)
        else:
            assert result.returncode == 0, result.stderr
        assert _all_read(env, count), f"a document did not read after the kill at {point}"
    assert kills >= len(points) - 1
    final = cli_process(*args, "--json", env=env)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["remaining"] == 0


def test_direct_to_tier_and_back_survives_kill_9(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct product moves under a KEK and back out, killed mid-way each time; every
    document reads after every kill, the KEK is deleted at the end, verify is clean."""
    env = {**env, "FIELD_ENCRYPT_KEK_RETIRE_GRACE_SECONDS": "0"}
    monkeypatch.setenv("FIELD_ENCRYPT_KEK_RETIRE_GRACE_SECONDS", "0")
    for runtime in _opened(env):
        seed(runtime, 60)
    _layout(env, "kek", monkeypatch)
    _killed_then_finished(env, "to-kek", ["store:2", "provider:25", "store:1"], 60)
    for runtime in _opened(env):
        assert runtime.kek_tier is not None
        (kek,) = runtime.kek_tier.keks.all()
        assert runtime.dek_store.count_by_version() == {KEK_PREFIX + kek.kek_id: 60}
        assert verify(runtime, mek_version="1", sample=60).clean

    _layout(env, "direct", monkeypatch)
    _killed_then_finished(env, "to-direct", ["provider:30", "store:3"], 60)
    for runtime in _opened(env):
        assert runtime.dek_store.count_by_version() == {"1": 60}
        assert runtime.kek_tier is None, "no KEK left: the product is plain direct again"
        assert verify(runtime, mek_version="1", sample=60).clean


def test_layout_moves_refuse_the_wrong_layout(tier_env: dict[str, str]) -> None:
    """to-direct while new DEKs still go under KEKs would leave them behind: refused (exit 3)."""
    for runtime in _opened(tier_env):
        seed(runtime, 3)
    result = cli("migrate", "--product", PRODUCT, "--mode", "to-direct")
    assert result.exit_code == 3 and "FIELD_ENCRYPT_KEY_LAYOUT=direct" in result.output


def test_kek_rotation_is_local_and_deletes_the_old_kek(tier_env: dict[str, str]) -> None:
    """rotate-kek moves every DEK under a new KEK with no MEK call per DEK, then deletes the
    old KEK only once no DEK names it, and says so."""
    for runtime in _opened(tier_env):
        seed(runtime, 40)
        assert runtime.kek_tier is not None
        (old,) = runtime.kek_tier.keks.all()
    sample_product.LAST_COUNTER.clear()
    report = _json("migrate", "--product", COUNTING, "--mode", "rotate-kek")
    assert (report["rewrapped"], report["remaining"]) == (40, 0)
    (counter,) = sample_product.LAST_COUNTER
    assert counter.calls["rewrap"] + counter.calls["unwrap"] >= 40  # the tier's, local AES
    for runtime in _opened(tier_env):
        assert runtime.kek_tier is not None
        (new,) = runtime.kek_tier.keks.all()
        assert new.kek_id != old.kek_id and new.active
        assert runtime.dek_store.count_by_version() == {KEK_PREFIX + new.kek_id: 40}
        mek = CountingProvider(runtime.kek_tier.mek)
        runtime.kek_tier.mek = mek
        runtime.kek_tier.cache.clear()
        runtime.encryptor.cache.clear()
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(40)}
        assert mek.calls["unwrap"] == 1, "40 documents, one KEK unwrap"
    assert _kek_events(tier_env) == [
        ("kek.created", old.kek_id, "1"),
        ("kek.created", new.kek_id, "1"),
        ("kek.deleted", old.kek_id, "unreferenced"),
    ]


def test_kek_kept_while_a_dek_names_it(tier_env: dict[str, str]) -> None:
    """A retired KEK that a DEK still names is never deleted, whatever the grace."""
    for runtime in _opened(tier_env):
        seed(runtime, 5)
        tier = runtime.kek_tier
        assert tier is not None
        (old,) = tier.keks.all()
        tier.new_kek("")
        deleted, kept = tier.delete_unreferenced(
            runtime.dek_store.count_by_version(), grace_seconds=0
        )
        assert deleted == [] and "5 DEKs still refer to it" in kept[0]
        assert tier.keks.get(old.kek_id)
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(5)}


def test_shred_partition_needs_confirmation(tier_env: dict[str, str]) -> None:
    """keys shred-partition refuses without --yes-destroy-data, then shreds that tenant only."""
    for runtime in _opened(tier_env):
        tier = runtime.kek_tier
        assert tier is not None
        fe = runtime.encryptor
        docs = runtime.documents["records"]
        for tenant in ("a", "b"):
            dek = fe.create_dek(version=tier.dek_version(tenant))
            docs.insert(
                tenant, fe.encrypt_document("records", tenant, document(0), dek_id=dek), dek
            )  # type: ignore[attr-defined]
    refused = cli("keys", "shred-partition", "a", "--product", PRODUCT)
    assert refused.exit_code == 6 and "1 DEKs" in refused.output
    done = _json("keys", "shred-partition", "a", "--product", PRODUCT, "--yes-destroy-data")
    assert (done["keks_deleted"], done["deks_shredded"]) == (1, 1)
    assert [(t, r) for t, _, r in _kek_events(tier_env)][-1] == (
        "kek.deleted",
        "partition-shredded",
    )
    for runtime in _opened(tier_env):
        records = {
            d.id: d for d in runtime.documents["records"].scan(cursor=None, limit=10).documents
        }
        assert runtime.encryptor.decrypt_document("records", "b", records["b"].fields) == document(
            0
        )
        with pytest.raises(DecryptionError):  # the KEK is gone
            runtime.encryptor.decrypt_document("records", "a", records["a"].fields)


def test_dek_exposed_compromise_covers_every_dek_under_an_exposed_kek(
    tier_env: dict[str, str],
) -> None:
    """A KEK keeps its key when rewrapped: DEKs created after the compromise was declared,
    under a KEK that existed before it, are re-encrypted too; the partition gets a new KEK;
    the exposed KEK is deleted once no DEK names it."""
    from field_encrypt.backends.registry import open_lifecycle_store, open_run_ledger
    from field_encrypt.rotation import respond_to_compromise

    for runtime in _opened(tier_env):
        seed(runtime, 10)
        assert runtime.kek_tier is not None
        (exposed,) = runtime.kek_tier.keks.all()
        ledger, lifecycle = (
            open_run_ledger(runtime.database),
            open_lifecycle_store(runtime.database),
        )
        first = respond_to_compromise(runtime, ledger, lifecycle, "1")  # not (yet) DEK-exposed
        assert first.stopped_at is None and dek_counts(runtime) == {"2": 10}
        seed(runtime, 5, start=10)  # later writes, still under the same KEK (now on version 2)
        assert runtime.dek_store.count_by_version() == {KEK_PREFIX + exposed.kek_id: 15}
        report = respond_to_compromise(runtime, ledger, lifecycle, "1", dek_exposed=True)
        assert report.stopped_at is None
        assert report.reencrypt is not None and report.reencrypt.counters.changed == 15
        assert [k.kek_id for k in runtime.kek_tier.keks.all()] != [exposed.kek_id]
        assert exposed.kek_id not in {k.kek_id for k in runtime.kek_tier.keks.all()}
        assert KEK_PREFIX + exposed.kek_id not in runtime.dek_store.count_by_version()
        (fresh,) = runtime.kek_tier.keks.all()
        assert runtime.dek_store.count_by_version() == {KEK_PREFIX + fresh.kek_id: 15}
        runtime.encryptor.cache.clear()
        assert read_all(runtime) == {f"doc-{i}": document(i) for i in range(15)}


def test_reencrypt_on_the_tier_puts_fresh_deks_under_the_kek(tier_env: dict[str, str]) -> None:
    """re-encrypt after a MEK rotation selects by effective version: DEKs under a KEK on the
    old version get fresh DEKs under the active KEK; a re-run finds nothing to do."""
    for runtime in _opened(tier_env):
        seed(runtime, 12)
        runtime.provider.create_version()
        assert runtime.kek_tier is not None
        runtime.kek_tier.new_kek("")  # a KEK on version 2 for the fresh DEKs
    report = _json("migrate", "--product", PRODUCT, "--mode", "re-encrypt")
    assert (report["changed"], report["remaining"]) == (12, 0)
    for runtime in _opened(tier_env):
        assert runtime.kek_tier is not None
        active = runtime.kek_tier.keks.active("")
        assert active is not None and active.mek_version == "2"
        assert runtime.dek_store.count_by_version() == {KEK_PREFIX + active.kek_id: 12}
        assert dek_counts(runtime) == {"2": 12}
    assert _all_read(tier_env, 12)
    again = _json("migrate", "--product", PRODUCT, "--mode", "re-encrypt")
    assert (again["matched"], again["changed"]) == (0, 0)


def test_rotate_kek_resumes_after_kill_9_without_a_second_kek(tier_env: dict[str, str]) -> None:
    """Killed mid-rotation twice, the same command finishes the rotation under way (the
    partition's retired KEK still named by DEKs) instead of starting another: one new KEK,
    the old one deleted, every document readable after every kill."""
    for runtime in _opened(tier_env):
        seed(runtime, 60)
        assert runtime.kek_tier is not None
        (old,) = runtime.kek_tier.keks.all()
    _killed_then_finished(tier_env, "rotate-kek", ["store:2", "store:2"], 60)
    for runtime in _opened(tier_env):
        assert runtime.kek_tier is not None
        (new,) = runtime.kek_tier.keks.all()
        assert new.kek_id != old.kek_id and new.active
        assert runtime.dek_store.count_by_version() == {KEK_PREFIX + new.kek_id: 60}
    created = [k for t, k, _ in _kek_events(tier_env) if t == "kek.created"]
    assert created == [old.kek_id, new.kek_id]
