"""The local keyring file: atomic, private, shared safely between processes."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from field_encrypt import ConfigurationError
from field_encrypt.providers.local import LocalKeyProvider


def _create(path: str) -> None:
    LocalKeyProvider(path, mek_name="m").create_version()


def test_file_is_private_and_complete(tmp_path: Path) -> None:
    """The keyring is written with mode 0600 and leaves no temporary file behind."""
    provider = LocalKeyProvider(tmp_path / "ring.json", mek_name="m")
    provider.create_version()
    assert stat.S_IMODE((tmp_path / "ring.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring.json", "ring.json.lock"]
    data = json.loads((tmp_path / "ring.json").read_text())
    assert [v["version"] for v in data["versions"]] == ["1", "2"]


def test_concurrent_processes_lose_no_version(tmp_path: Path) -> None:
    """Eight processes creating versions at once yield eight new versions, none lost."""
    path = tmp_path / "ring.json"
    LocalKeyProvider(path, mek_name="m")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_create, args=(str(path),)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    versions = [v.version for v in LocalKeyProvider(path, mek_name="m").versions()]
    assert versions == [str(i) for i in range(1, 10)]


def test_other_process_changes_are_seen(tmp_path: Path) -> None:
    """A version created or disabled by another process is seen after the refresh interval."""
    now = [0.0]
    reader = LocalKeyProvider(tmp_path / "r.json", mek_name="m", clock=lambda: now[0])
    writer = LocalKeyProvider(tmp_path / "r.json", mek_name="m")
    writer.create_version()
    assert reader.current_version() == "1", "within the refresh interval"
    now[0] += 2
    assert reader.current_version() == "2"


def test_missing_keyring_can_be_required(tmp_path: Path) -> None:
    """With create=False a missing keyring is a configuration error, not a new key."""
    with pytest.raises(ConfigurationError):
        LocalKeyProvider(tmp_path / "absent.json", mek_name="m", create=False)


@pytest.mark.parametrize(
    "content", ["{", '{"format": 9, "versions": []}', '{"format": 1, "versions": []}']
)
def test_corrupt_keyring_is_refused(tmp_path: Path, content: str) -> None:
    """A damaged keyring file is refused with a configuration error that shows no content."""
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ConfigurationError) as info:
        LocalKeyProvider(tmp_path / "bad.json", mek_name="m")
    assert content not in str(info.value) or content == "{"
