"""How many DEKs each MEK version wraps: the one count every check and report uses.

With the KEK tier a DEK row records ``mek_version = "kek:<kekId>"``; what protects it is
its KEK's MEK version, so that is the version it is counted under
(:func:`~field_encrypt.backends.base.effective_counts`). ``verify``, ``keys list``,
``keys disable``, ``keys retire`` (the retirement gate), ``keys compromised``, ``status``,
``preflight`` and the dry run all count through :func:`dek_counts` (also exported as
``field_encrypt.rotation.dek_counts``), so they can never disagree about whether a
version still wraps DEKs, and the runbook's checks keep their meaning in both layouts:
"0 DEKs off version 2" means no DEK can need version 1 to be read.
"""

from __future__ import annotations

from typing import Any

from field_encrypt.backends.base import effective_counts
from field_encrypt.products import ProductRuntime


def dek_counts(runtime: ProductRuntime, *, raw: dict[str, int] | None = None) -> dict[str, int]:
    """DEKs per effective MEK version (a DEK under a KEK counts under its KEK's version).

    A DEK naming a KEK that no longer exists stays under its ``kek:`` name: it is on no
    MEK version, so :func:`count_not_on` always counts it. ``raw``: the dek_store's
    ``count_by_version()`` when the caller has just read it (saves a second count).
    """
    raw = raw if raw is not None else runtime.dek_store.count_by_version()
    tier = runtime.kek_tier
    if tier is None:
        return raw
    return effective_counts(raw, tier.keks.all())


def count_not_on(runtime: ProductRuntime, version: str) -> int:
    """DEKs whose effective MEK version is not ``version`` (verify's finding, expected 0)."""
    return sum(n for v, n in dek_counts(runtime).items() if v != version)


def other_products_on(runtime: ProductRuntime, version: str) -> dict[str, int]:
    """DEKs of the database's *other* products under ``version`` of this product's MEK (same
    MEK name; directly or through a KEK): disabling the version would break them too, so
    ``keys disable`` and the retirement gate count them (``verify`` and ``status`` do not:
    they speak for this product)."""
    others = runtime.dek_store.count_under(runtime.provider.mek_name, version)
    others.pop(runtime.encryptor.product, None)
    return {product: n for product, n in sorted(others.items()) if n}


def keks_on(runtime: ProductRuntime, version: str) -> dict[str, int]:
    """Active KEKs of every product of the database (this one's too) wrapped under
    ``version`` of this product's MEK. An active KEK takes its product's next DEKs even
    while it wraps none, and opening it needs ``version``: disabling the version would
    break those writes, so ``keys disable`` and the retirement gate refuse while one is
    there (``migrate --mode rewrap-deks`` moves a product's KEKs, empty ones included)."""
    found = runtime.dek_store.active_keks_under(runtime.provider.mek_name, version)
    return {product: n for product, n in sorted(found.items()) if n}


def kek_detail(keks: dict[str, int]) -> str:
    """``the active KEK of product 'billing'`` (and so on), for refusals."""
    return ", ".join(
        f"{'the active KEK' if n == 1 else f'{n} active KEKs'} of product {p!r}"
        for p, n in keks.items()
    )


def shared_detail(others: dict[str, int]) -> str:
    """``10 DEKs of product 'billing'`` (and so on), for refusals."""
    return ", ".join(f"{n} DEKs of product {p!r}" for p, n in others.items())


def kek_usage(runtime: ProductRuntime) -> list[dict[str, Any]]:
    """Each KEK of the product's tier (none without one): id, partition, MEK version,
    whether it is active, and how many DEKs it wraps (``status`` and the console show it)."""
    tier = runtime.kek_tier
    if tier is None:
        return []
    raw = runtime.dek_store.count_by_version()
    return [
        {
            "kek_id": k.kek_id,
            "partition": k.partition,
            "mek_version": k.mek_version,
            "active": k.active,
            "deks": raw.get("kek:" + k.kek_id, 0),
        }
        for k in tier.keks.all()
    ]


__all__ = [
    "count_not_on",
    "dek_counts",
    "kek_detail",
    "kek_usage",
    "keks_on",
    "other_products_on",
    "shared_detail",
]
