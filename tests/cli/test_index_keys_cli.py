"""``index-keys list|create|retire`` and ``migrate --mode reindex`` through the CLI."""

from __future__ import annotations

import json

from field_encrypt.products import ProductRuntime
from field_encrypt.rotation.reindex import keyring_of
from tests.cli.helpers import PRODUCT, cli
from tests.support.sample_product import product
from tests.support.seed import seed


def test_rotate_the_index_key_from_the_cli(runtime: ProductRuntime) -> None:
    """create 1, documents indexed, create 2; retire 1 is refused (exit 6) until a reindex
    has moved every value, the dry run writes nothing, then retire 1 passes; list and verify
    show the counts."""
    assert json.loads(cli("index-keys", "create", "--product", PRODUCT, "--json").stdout) == {
        "product": PRODUCT,
        "version": 1,
        "current": True,
    }
    seed(runtime, 9, index=keyring_of(runtime).open(product.indexed))
    assert cli("index-keys", "create", "--product", PRODUCT).exit_code == 0
    listed = json.loads(cli("index-keys", "list", "--product", PRODUCT, "--json").stdout)
    assert listed["versions"] == [1, 2] and listed["current"] == 2
    assert listed["index_values"] == {"records.ssn": {"1": 9}, "records.profile.note": {"1": 9}}

    refused = cli("index-keys", "retire", "1", "--product", PRODUCT)
    assert refused.exit_code == 6
    assert "18 index values are still on it" in refused.stderr
    assert "migrate --mode reindex" in refused.stderr
    assert cli("index-keys", "retire", "2", "--product", PRODUCT).exit_code == 6  # current
    assert cli("index-keys", "retire", "5", "--product", PRODUCT).exit_code == 3  # no such

    checked = json.loads(cli("verify", "--product", PRODUCT, "--mek-version", "1", "--json").stdout)
    assert checked["old_index_values"] == {"records.ssn": 9, "records.profile.note": 9}
    assert checked["clean"]  # reported; the MEK check is independent

    dry = cli("migrate", "--product", PRODUCT, "--mode", "reindex", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"]["by_version"] == {"index:1": 18}
    assert cli("index-keys", "retire", "1", "--product", PRODUCT).exit_code == 6

    ran = cli("migrate", "--product", PRODUCT, "--mode", "reindex", "--json")
    assert ran.exit_code == 0, ran.stderr
    data = json.loads(ran.stdout)
    assert (data["status"], data["changed"], data["remaining"]) == ("completed", 9, 0)
    assert data["to_version"] == "index:2" and "rewrapped" not in data

    retired = cli("index-keys", "retire", "1", "--product", PRODUCT, "--json")
    assert retired.exit_code == 0, retired.stderr
    assert json.loads(retired.stdout)["retired"] == 1
    assert keyring_of(runtime).versions() == [2]


def test_reindex_refuses_what_it_cannot_do(runtime: ProductRuntime) -> None:
    """No index key yet, or MEK versions given: exit 3 with what to do, before any write."""
    seed(runtime, 2)
    none = cli("migrate", "--product", PRODUCT, "--mode", "reindex")
    assert none.exit_code == 3
    assert "index-keys create --product" in none.stderr
    keyring_of(runtime).create(1)
    versions = cli("migrate", "--product", PRODUCT, "--mode", "reindex", "--new-mek-version", "1")
    assert versions.exit_code == 3 and "takes no MEK versions" in versions.stderr
