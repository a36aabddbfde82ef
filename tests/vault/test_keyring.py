"""Key versions over time: rotation, other processes, retiring, the keyed hash, a damaged keyring."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

import pytest

from keysentry.vault import (
    DecryptionFailed,
    FileKeyringStore,
    KeyringCorrupt,
    Vault,
    VaultUsageError,
    generate_master_key,
)

ROW = {"tenant": "t", "connection": "c", "field": "api_secret"}


@pytest.fixture
def key() -> str:
    return generate_master_key()


def test_rotation_keeps_old_ciphertexts_readable_and_new_ones_use_the_new_version(
    tmp_path: Path, key: str
) -> None:
    vault = Vault.open(tmp_path, master_key=key)
    old = vault.encrypt("old secret", **ROW)
    new_version = vault.rotate()
    assert new_version == old.key_version + 1 == vault.current_version
    new = vault.encrypt("new secret", **ROW)
    assert new.key_version == new_version
    assert vault.decrypt(old.ciphertext, key_version=old.key_version, **ROW).reveal() == "old secret"
    assert vault.decrypt(new.ciphertext, key_version=new.key_version, **ROW).reveal() == "new secret"
    reopened = Vault.open(tmp_path, master_key=key)
    assert reopened.versions == (1, 2)
    assert reopened.current_version == 2
    assert reopened.decrypt(old.ciphertext, key_version=1, **ROW).reveal() == "old secret"


def test_a_process_that_loaded_the_keyring_earlier_picks_up_a_rotation(tmp_path: Path, key: str) -> None:
    service = Vault.open(tmp_path, master_key=key)
    operator = Vault.open(tmp_path, master_key=key)
    operator.rotate()
    fresh = operator.encrypt("written after rotation", **ROW)
    assert service.current_version == 1
    # decrypting a version it has not seen makes it reload instead of failing
    assert service.decrypt(fresh.ciphertext, key_version=fresh.key_version, **ROW).reveal() == (
        "written after rotation"
    )
    assert service.current_version == 2
    assert service.refresh() is False


def test_concurrent_rotations_from_two_processes_both_land(tmp_path: Path, key: str) -> None:
    a = Vault.open(tmp_path, master_key=key)
    b = Vault.open(tmp_path, master_key=key)
    assert a.rotate() == 2
    assert b.rotate() == 3  # b's compare-and-swap fails once, it reloads and rotates on top
    assert Vault.open(tmp_path, master_key=key).versions == (1, 2, 3)


def test_first_start_of_many_processes_at_once_ends_with_one_master_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    barrier = threading.Barrier(8)
    vaults: list[Vault] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            vaults.append(Vault.open(data_dir))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({v.master_key_id for v in vaults}) == 1
    sealed = vaults[0].encrypt("secret", **ROW)
    for v in vaults:
        assert v.decrypt(sealed.ciphertext, key_version=sealed.key_version, **ROW).reveal() == "secret"
    assert sorted(p.name for p in data_dir.iterdir() if not p.name.startswith(".")) == [
        "keyring.json",
        "master.key",
    ]
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".tmp-")]


def test_retiring_old_versions_shreds_what_they_sealed_and_numbers_are_never_reused(
    tmp_path: Path, key: str
) -> None:
    vault = Vault.open(tmp_path, master_key=key)
    old = vault.encrypt("old", **ROW)
    vault.rotate()
    vault.rotate()
    assert vault.retire_versions_below(3) == (1, 2)
    assert vault.versions == (3,)
    with pytest.raises(DecryptionFailed):
        vault.decrypt(old.ciphertext, key_version=old.key_version, **ROW)
    assert vault.retire_versions_below(99) == ()  # the primary always stays
    assert vault.rotate() == 4
    assert Vault.open(tmp_path, master_key=key).versions == (3, 4)


def test_keyed_hash_is_stable_secret_and_purpose_separated(tmp_path: Path, key: str) -> None:
    vault = Vault.open(tmp_path / "a", master_key=key)
    h = vault.keyed_hash("API-KEY-VALUE", "api_key")
    assert len(h) == 64 and int(h, 16) >= 0
    assert vault.keyed_hash("API-KEY-VALUE", "api_key") == h
    assert vault.keyed_hash("API-KEY-VALUE2", "api_key") != h
    assert vault.keyed_hash("API-KEY-VALUE", "audit") != h
    vault.rotate()
    assert Vault.open(tmp_path / "a", master_key=key).keyed_hash("API-KEY-VALUE", "api_key") == h
    # another installation (same master key, other keyring) gives unrelated hashes
    assert Vault.open(tmp_path / "b", master_key=key).keyed_hash("API-KEY-VALUE", "api_key") != h
    with pytest.raises(VaultUsageError):
        vault.keyed_hash("x", "")


def _edit(path: Path, change: dict[str, object]) -> None:
    doc = json.loads(path.read_text())
    doc.update(change)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "change",
    [
        {"primary": 1},
        {"versions": [1, 2, 3]},
        {"versions": [2]},
        {"master": {"kind": "kms", "id": None}},
        {"format": "keysentry-keyring/9"},
        {"sealed": "!!not base64!!"},
    ],
)
def test_edited_keyring_header_is_refused(tmp_path: Path, key: str, change: dict[str, object]) -> None:
    vault = Vault.open(tmp_path, master_key=key)
    vault.rotate()
    path = tmp_path / "keyring.json"
    if "master" in change:
        change = {"master": {"kind": "kms", "id": vault.master_key_id}}
    _edit(path, change)
    with pytest.raises(KeyringCorrupt, match="keyring"):
        Vault.open(tmp_path, master_key=key)


def test_damaged_sealed_part_or_file_is_refused(tmp_path: Path, key: str) -> None:
    Vault.open(tmp_path, master_key=key)
    path = tmp_path / "keyring.json"
    doc = json.loads(path.read_text())
    original = path.read_bytes()
    sealed = bytearray(base64.b64decode(doc["sealed"]))
    sealed[len(sealed) // 2] ^= 1
    _edit(path, {"sealed": base64.b64encode(bytes(sealed)).decode()})
    with pytest.raises(KeyringCorrupt, match="damaged or edited"):
        Vault.open(tmp_path, master_key=key)
    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(KeyringCorrupt, match="damaged"):
        Vault.open(tmp_path, master_key=key)


def test_file_store_create_and_compare_and_swap(tmp_path: Path) -> None:
    store = FileKeyringStore(tmp_path / "sub" / "keyring.json")
    assert store.load() is None
    assert store.create(b"one") is True
    assert store.create(b"two") is False
    assert store.load() == b"one"
    assert store.replace(b"stale", b"three") is False
    assert store.load() == b"one"
    assert store.replace(b"one", b"three") is True
    assert store.load() == b"three"
    assert os.stat(store.path).st_mode & 0o777 == 0o600
