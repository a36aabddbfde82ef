"""Master key sources and the sealed state: refuse clearly, write nothing."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from keysentry.domain.secrets import Secret
from keysentry.vault import (
    FileKeyringStore,
    KeyringMissing,
    KeyringUnavailable,
    MasterKeyInsecure,
    MasterKeyUnavailable,
    Vault,
    VaultSealed,
    WrongMasterKey,
    generate_master_key,
)

ROW = {"tenant": "t", "connection": "c", "field": "api_secret"}


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory` with its content and mode: 'nothing written' is compared against it."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_first_run_creates_a_private_key_file_and_keyring(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    vault = Vault.open(data_dir)
    key_file = data_dir / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert len(base64.b64decode(key_file.read_text().strip())) == 32
    assert "master.key" in vault.master_source
    sealed = vault.encrypt("secret", **ROW)
    again = Vault.open(data_dir)
    assert again.master_key_id == vault.master_key_id
    assert again.decrypt(sealed.ciphertext, key_version=1, **ROW).reveal() == "secret"


def test_key_file_readable_by_others_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    Vault.open(tmp_path)
    key_file = tmp_path / "master.key"
    for mode in (0o644, 0o640, 0o604, 0o700):
        key_file.chmod(mode)
        before = snapshot(tmp_path)
        with pytest.raises(MasterKeyInsecure, match=re.escape(f"chmod 600 {key_file}")) as caught:
            Vault.open(tmp_path)
        assert f"{mode:04o}" in str(caught.value)
        assert snapshot(tmp_path) == before
    key_file.chmod(0o400)  # read-only for the owner is fine
    Vault.open(tmp_path)


def test_insecure_key_file_before_any_keyring_writes_nothing(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(generate_master_key())
    key_file.chmod(0o644)
    with pytest.raises(MasterKeyInsecure):
        Vault.open(tmp_path)
    assert not (tmp_path / "keyring.json").exists()


@pytest.mark.parametrize(
    "spell",
    [
        lambda raw: base64.b64encode(raw).decode(),
        lambda raw: base64.urlsafe_b64encode(raw).decode(),
        lambda raw: base64.b64encode(raw).decode().rstrip("="),
        lambda raw: "  " + base64.b64encode(raw).decode() + "\n",
    ],
    ids=["standard", "urlsafe", "unpadded", "whitespace"],
)
def test_environment_value_in_any_base64_spelling_opens_the_same_keyring(
    tmp_path: Path, spell: object
) -> None:
    raw = os.urandom(32)
    first = Vault.open(tmp_path, master_key=base64.b64encode(raw).decode())
    sealed = first.encrypt("secret", **ROW)
    value = spell(raw)  # type: ignore[operator]
    vault = Vault.open(tmp_path, master_key=value, create=False)
    assert vault.master_source == "KEYSENTRY_MASTER_KEY"
    assert vault.decrypt(sealed.ciphertext, key_version=1, **ROW).reveal() == "secret"
    assert Vault.open(tmp_path, master_key=Secret(value)).master_key_id == first.master_key_id


def test_the_key_file_content_works_as_the_environment_value(tmp_path: Path) -> None:
    by_file = Vault.open(tmp_path)
    value = (tmp_path / "master.key").read_text()
    (tmp_path / "master.key").unlink()
    by_env = Vault.open(tmp_path, master_key=value)
    assert by_env.master_key_id == by_file.master_key_id
    assert not (tmp_path / "master.key").exists()  # an explicit source never creates the default file


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        base64.b64encode(b"x" * 16).decode(),  # AES-128 sized
        base64.b64encode(b"x" * 33).decode(),
        "   ",
    ],
)
def test_unusable_environment_value_is_sealed_and_writes_nothing(tmp_path: Path, value: str) -> None:
    data_dir = tmp_path / "data"
    with pytest.raises(MasterKeyUnavailable, match="openssl rand -base64 32") as caught:
        Vault.open(data_dir, master_key=value)
    assert isinstance(caught.value, VaultSealed)
    assert not data_dir.exists()


def test_explicit_key_file_must_exist_and_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "keys" / "master.key"
    with pytest.raises(MasterKeyUnavailable, match="does not exist"):
        Vault.open(tmp_path / "data", master_key_file=missing)
    assert snapshot(tmp_path) == {}
    missing.parent.mkdir()
    missing.write_text(generate_master_key() + "\n")
    missing.chmod(0o600)
    vault = Vault.open(tmp_path / "data", master_key_file=missing)
    assert str(missing) in vault.master_source
    assert not (tmp_path / "data" / "master.key").exists()


def test_explicit_key_file_with_wrong_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"\xff\xfe binary")
    path.chmod(0o600)
    with pytest.raises(MasterKeyUnavailable, match="not a master key file"):
        Vault.open(tmp_path / "d", master_key_file=path)
    path.write_bytes(b"A" * 10_000)
    with pytest.raises(MasterKeyUnavailable, match="too large"):
        Vault.open(tmp_path / "d", master_key_file=path)
    assert not (tmp_path / "d").exists()


def test_two_sources_at_once_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyUnavailable, match="KEYSENTRY_MASTER_KEY and KEYSENTRY_KMS_URI"):
        Vault.open(tmp_path / "d", master_key=generate_master_key(), kms_uri="aws-kms://arn:aws:kms:x")
    assert not (tmp_path / "d").exists()


def test_wrong_master_key_is_named_as_such_and_changes_nothing(tmp_path: Path) -> None:
    right = generate_master_key()
    vault = Vault.open(tmp_path, master_key=right)
    vault.rotate()
    before = snapshot(tmp_path)
    wrong = generate_master_key()
    with pytest.raises(WrongMasterKey, match=vault.master_key_id) as caught:
        Vault.open(tmp_path, master_key=wrong)
    assert isinstance(caught.value, VaultSealed)
    with pytest.raises(MasterKeyUnavailable, match="a new key would not open it"):
        Vault.open(tmp_path)  # no default key file is created next to an existing keyring
    assert snapshot(tmp_path) == before


def test_lost_default_key_file_is_not_replaced_by_a_new_one(tmp_path: Path) -> None:
    Vault.open(tmp_path)
    (tmp_path / "master.key").unlink()
    before = snapshot(tmp_path)
    with pytest.raises(MasterKeyUnavailable, match="restore the key file from your backup"):
        Vault.open(tmp_path)
    assert snapshot(tmp_path) == before


def test_without_create_a_missing_keyring_is_reported_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(KeyringMissing, match="no keyring"):
        Vault.open(tmp_path / "d", create=False)
    assert not (tmp_path / "d").exists()


def test_unusable_data_directory_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(KeyringUnavailable, match="Not a directory"):
        Vault.open(not_a_dir)
    with pytest.raises(KeyringUnavailable, match="cannot be read"):
        Vault.open(tmp_path, keyring_store=FileKeyringStore(tmp_path), master_key=generate_master_key())
    elsewhere = FileKeyringStore(tmp_path / "keyring.json")
    with pytest.raises(MasterKeyUnavailable, match=r"master key file .* cannot be created"):
        Vault.open(not_a_dir, keyring_store=elsewhere)
