"""The functions behind `keysentry vault init|status|rotate|rewrap`, and the pinned public API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import keysentry.vault as vault_pkg
from keysentry.vault import (
    KeyringMissing,
    RowId,
    StaleRow,
    Vault,
    VaultSealed,
    init_command,
    rewrap_command,
    rotate_command,
    status_command,
)


class ListTarget:
    def __init__(self, rows: list[StaleRow]) -> None:
        self.rows = rows

    def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterator[StaleRow]:
        start = -1 if after is None else int(after)
        return iter([r for r in self.rows if int(r.row_id) > start and r.key_version < below_version][:batch])

    def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        i = self.rows.index(row)
        self.rows[i] = StaleRow(
            row.row_id, row.tenant, row.connection, row.field, new_ciphertext, new_version
        )
        return True


def test_commands_on_a_missing_keyring_say_so_and_create_nothing(tmp_path: Path) -> None:
    for command in (rotate_command, status_command):
        with pytest.raises(KeyringMissing, match="keysentry vault init"):
            command(tmp_path / "d")
    with pytest.raises(KeyringMissing):
        rewrap_command(tmp_path / "d", ListTarget([]))
    assert not (tmp_path / "d").exists()


def test_init_rotate_rewrap_retire(tmp_path: Path) -> None:
    message = init_command(tmp_path)
    assert str(tmp_path / "keyring.json") in message and "Back up the master key" in message
    vault = Vault.open(tmp_path, create=False)
    rows = []
    for i in range(5):
        sealed = vault.encrypt(f"s{i}", tenant="t", connection=str(i), field="api_secret")
        rows.append(StaleRow(i, "t", str(i), "api_secret", sealed.ciphertext, sealed.key_version))
    target = ListTarget(rows)

    assert rotate_command(tmp_path).startswith("key version 2 is now primary (versions 1, 2")
    assert "run `keysentry vault rewrap`" in status_command(tmp_path, target=target)

    seen: list[int] = []
    report = rewrap_command(
        tmp_path, target, batch=2, retire_old=True, on_batch=lambda r: seen.append(r.rewrapped)
    )
    assert report.ok and report.rewrapped == 5 and seen == [2, 4, 5]
    assert report.retired_versions == (1,)
    assert "retired key versions 1" in report.summary()
    assert "keysentry vault rewrap" not in status_command(tmp_path, target=target)
    vault = Vault.open(tmp_path, create=False)
    assert vault.versions == (2,)
    assert [
        vault.decrypt(
            r.ciphertext, tenant="t", connection=str(r.row_id), field="api_secret", key_version=2
        ).reveal()
        for r in target.rows
    ] == [f"s{i}" for i in range(5)]


def test_status_and_rewrap_over_named_targets_say_which_is_stale_and_retire_only_when_none_is(
    tmp_path: Path,
) -> None:
    init_command(tmp_path)
    vault = Vault.open(tmp_path, create=False)

    def rows(n: int, field: str) -> list[StaleRow]:
        out = []
        for i in range(n):
            sealed = vault.encrypt(f"{field}{i}", tenant="t", connection=str(i), field=field)
            out.append(StaleRow(i, "t", str(i), field, sealed.ciphertext, sealed.key_version))
        return out

    credentials, webhooks = ListTarget(rows(3, "api_secret")), ListTarget(rows(2, "webhook_url"))
    targets = {"credentials": credentials, "webhooks": webhooks}
    rotate_command(tmp_path)
    assert "some secrets (credentials, webhooks) still use older versions" in status_command(
        tmp_path, target=targets
    )
    rewrap_command(tmp_path, {"credentials": credentials})  # a partial run
    assert "some secrets (webhooks) still use older versions" in status_command(tmp_path, target=targets)

    report = rewrap_command(tmp_path, targets, retire_old=True)
    assert report.ok and report.retired_versions == (1,)
    assert {n: (p.scanned, p.rewrapped) for n, p in report.parts.items()} == {
        "credentials": (0, 0),
        "webhooks": (2, 2),
    }
    assert report.summary() == (
        "moved 2 of 2 older secrets to key version 2 (credentials: 0 of 0, webhooks: 2 of 2); "
        "retired key versions 1"
    )
    assert "still use older versions" not in status_command(tmp_path, target=targets)


def test_commands_refuse_without_the_master_key(tmp_path: Path) -> None:
    init_command(tmp_path)
    (tmp_path / "master.key").unlink()
    with pytest.raises(VaultSealed):
        rotate_command(tmp_path)


def test_public_api_is_pinned() -> None:
    assert sorted(vault_pkg.__all__) == [
        "DecryptionFailed",
        "FileKeyringStore",
        "KeyringConflict",
        "KeyringCorrupt",
        "KeyringMissing",
        "KeyringStore",
        "KeyringUnavailable",
        "MasterKeyInsecure",
        "MasterKeyUnavailable",
        "RemoteAead",
        "RewrapReport",
        "RewrapTarget",
        "RewrapTargets",
        "RowId",
        "Sealed",
        "StaleRow",
        "Vault",
        "VaultError",
        "VaultSealed",
        "VaultUsageError",
        "WrongMasterKey",
        "generate_master_key",
        "init_command",
        "retire",
        "rewrap",
        "rewrap_command",
        "rotate_command",
        "status_command",
    ]
    for name in vault_pkg.__all__:
        assert getattr(vault_pkg, name) is not None


def test_error_tree_groups_by_what_the_caller_must_do() -> None:
    v = vault_pkg
    for sealed in (v.MasterKeyUnavailable, v.MasterKeyInsecure, v.WrongMasterKey, v.KeyringMissing):
        assert issubclass(sealed, v.VaultSealed)
    for other in (v.KeyringCorrupt, v.DecryptionFailed, v.KeyringConflict, v.KeyringUnavailable):
        assert issubclass(other, v.VaultError) and not issubclass(other, v.VaultSealed)
    assert issubclass(v.VaultUsageError, ValueError)
    assert issubclass(v.VaultSealed, v.VaultError)


def test_vault_imports_only_the_domain_and_no_tink() -> None:
    code = (
        "import sys, keysentry.vault; "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('tink')} | "
        "{'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('keysentry.')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['keysentry.domain', 'keysentry.vault']"
