"""Layout migrations and KEK rotation: DEK rewraps with another target (see docs/key-tier.md).

Each mode is a :class:`~field_encrypt.rotation.rewrap.RewrapJob` that differs only in its
target and in which rows it moves, so it resumes from the same ledger, checks every new
wrap the same way, and survives a kill -9 the same way:

* ``to-kek``: DEKs wrapped directly under a MEK version move under the active KEK
  (``kek:<id>``). Needs ``FIELD_ENCRYPT_KEY_LAYOUT=kek``, so new DEKs go there too.
* ``to-direct``: DEKs under a KEK move back under the MEK version (current, or
  ``--new-mek-version``). Needs ``FIELD_ENCRYPT_KEY_LAYOUT=direct``; the KEKs are retired
  first and deleted at the end once no DEK refers to them.
* ``rotate-kek``: a new KEK for ``--partition``; the partition's DEKs under its older KEKs
  move under it, locally (no remote call per DEK). The old KEKs are deleted at the end,
  each only after a count of the DEKs that name it came back 0.

Both layouts read both kinds of DEK, so documents stay readable at every point, including
a kill mid-run: a row holds either its old wrap or its new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from field_encrypt.backends.base import KEK_PREFIX
from field_encrypt.errors import ConfigurationError
from field_encrypt.products import ProductRuntime
from field_encrypt.providers.base import KeyProvider
from field_encrypt.providers.kek_tier import KekTierProvider
from field_encrypt.rotation.ledger import Mode
from field_encrypt.rotation.rewrap import RewrapJob, is_kek_version
from field_encrypt.rotation.run import MigrationOptions, ShardWork

NEW_KEK = "kek:<new>"
"""The target a dry run of ``rotate-kek`` (or a first ``to-kek``) reports: nothing is created."""


def _tier(runtime: ProductRuntime, mode: str, layout: str) -> KekTierProvider:
    tier = runtime.kek_tier
    if runtime.settings.key_layout != layout or (tier is None and layout == "kek"):
        raise ConfigurationError(
            f"--mode {mode} needs FIELD_ENCRYPT_KEY_LAYOUT={layout} (the service rolled with it "
            f"too, so new DEKs go where this run moves the old ones)"
        )
    if tier is None:
        raise ConfigurationError(f"--mode {mode}: the product has no KEKs, nothing to move")
    return tier


class _TierJob(RewrapJob):
    """A rewrap between layouts or KEKs; deletes the KEKs no DEK needs any more at the end.

    A mode says which key layout it needs (:attr:`key_layout`) and :meth:`layout_plan`: its
    target and which rows move."""

    key_layout = "kek"
    """The ``FIELD_ENCRYPT_KEY_LAYOUT`` the mode needs."""
    layout_verify_sample: float | None = None
    """The share of new wraps checked (``None``: the options' ``verify_sample``)."""

    def __init__(
        self,
        runtime: ProductRuntime,
        options: MigrationOptions,
        *,
        provider: KeyProvider,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        tier = _tier(runtime, self.layout_mode, self.key_layout)
        target, sources = self.layout_plan(runtime, options, tier)
        self.layout_tier = tier
        self.grace = runtime.settings.kek_retire_grace_seconds
        self._sleep = sleep
        self._clock = clock
        self.deleted_keks: list[str] = []
        self.kept_keks: list[str] = []
        super().__init__(
            runtime,
            options,
            provider=provider,
            mode=self.layout_mode,
            target=target,
            tier=tier,
            sources=sources,
            verify_sample=self.layout_verify_sample,
        )

    def layout_plan(
        self, runtime: ProductRuntime, options: MigrationOptions, tier: KekTierProvider
    ) -> tuple[str, Callable[[str], bool]]:
        """The target version, and which rows move (by the version they are under)."""
        raise NotImplementedError

    layout_mode: Mode = "to-kek"

    def after_shard(self, work: ShardWork) -> None:
        if work.shard[1] > 1 and self.remaining():
            return  # other workers still move DEKs off the old KEKs
        self._wait_for_grace()
        deleted, kept = self.layout_tier.delete_unreferenced(
            self.store.count_by_version(), grace_seconds=self.grace, now=self._clock
        )
        self.deleted_keks += deleted
        self.kept_keks += kept
        for kek_id in deleted:
            work.note("kek_deleted", kek_id=kek_id, reason="no DEK refers to it")
        for reason in kept:
            work.note("kek_kept", reason=reason)

    def _wait_for_grace(self) -> None:
        """Sleep until every retired KEK has been retired for ``grace`` seconds (at most that)."""
        now = self._clock()
        retired = [k for k in self.layout_tier.keks.all() if not k.active]
        if not retired:
            return
        youngest = max(k.updated_at.timestamp() for k in retired)
        wait = min(self.grace, youngest + self.grace - now)
        if wait > 0:
            self._sleep(wait)


class ToKekJob(_TierJob):
    """``to-kek``: DEKs under MEK versions move under the active KEK of the default partition."""

    layout_mode: Mode = "to-kek"

    def layout_plan(
        self, runtime: ProductRuntime, options: MigrationOptions, tier: KekTierProvider
    ) -> tuple[str, Callable[[str], bool]]:
        active = tier.keks.active("")
        if active is None and not options.dry_run:
            active = tier.new_kek("")
        target = KEK_PREFIX + active.kek_id if active is not None else NEW_KEK
        only = options.old_version

        def sources(version: str) -> bool:
            if is_kek_version(version):
                return False
            return only is None or version == only

        return target, sources

    def after_shard(self, work: ShardWork) -> None:
        """Moving in deletes nothing."""


class ToDirectJob(_TierJob):
    """``to-direct``: DEKs under KEKs move back under the MEK; the KEKs are then deleted."""

    layout_mode: Mode = "to-direct"
    key_layout = "direct"

    def layout_plan(
        self, runtime: ProductRuntime, options: MigrationOptions, tier: KekTierProvider
    ) -> tuple[str, Callable[[str], bool]]:
        existing = {KEK_PREFIX + k.kek_id for k in tier.keks.all()}
        target = options.new_version or tier.mek.current_version()

        def sources(version: str) -> bool:
            return version in existing  # a DEK whose KEK was shredded cannot move

        return target, sources

    def before_shard(self, work: ShardWork) -> None:
        for record in self.layout_tier.keks.all():
            if record.active and self.layout_tier.keks.retire(record.kek_id):
                work.note("kek_retired", kek_id=record.kek_id)


class RotateKekJob(_TierJob):
    """``rotate-kek``: a new KEK for the partition; its DEKs move under it, locally.

    Stateless resume: if the partition has retired KEKs that DEKs still name, a rotation
    is under way and this run finishes it (same target, the active KEK); otherwise it
    starts one by creating a new KEK.
    """

    layout_mode: Mode = "rotate-kek"
    layout_verify_sample = 1.0
    """Local AES on both sides: checking every DEK costs no remote call."""

    def layout_plan(
        self, runtime: ProductRuntime, options: MigrationOptions, tier: KekTierProvider
    ) -> tuple[str, Callable[[str], bool]]:
        partition = options.partition
        counts = runtime.dek_store.count_by_version()
        mine = [k for k in tier.keks.all() if k.partition == partition]
        active = next((k for k in mine if k.active), None)
        unfinished = any(not k.active and counts.get(KEK_PREFIX + k.kek_id) for k in mine)
        if active is not None and unfinished:
            target = KEK_PREFIX + active.kek_id
        elif options.dry_run:
            target = NEW_KEK
        else:
            target = KEK_PREFIX + tier.new_kek(partition).kek_id
        old = {KEK_PREFIX + k.kek_id for k in mine} - {target}

        def sources(version: str) -> bool:
            return version in old

        return target, sources
