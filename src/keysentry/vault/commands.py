"""What `keysentry vault init|status|rotate|rewrap` do; the CLI only wires options and prints.

Each function takes the operator's settings as plain values and returns the sentence to
print. VaultError propagates: its message is written for the operator, so the CLI prints
`str(error)` and exits with 3 (unknown/usage) for VaultSealed, 2 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from keysentry.domain.secrets import Secret
from keysentry.vault.rewrap import DEFAULT_BATCH, RewrapReport, RewrapTargets, retire, rewrap, stale_targets
from keysentry.vault.vault import Vault


def _open(
    data_dir: Path,
    master_key: str | Secret | None,
    master_key_file: Path | None,
    kms_uri: str | None,
    *,
    create: bool,
) -> Vault:
    return Vault.open(
        data_dir, master_key=master_key, master_key_file=master_key_file, kms_uri=kms_uri, create=create
    )


def _versions(vault: Vault) -> str:
    return ", ".join(map(str, vault.versions))


def init_command(
    data_dir: Path,
    *,
    master_key: str | Secret | None = None,
    master_key_file: Path | None = None,
    kms_uri: str | None = None,
) -> str:
    """Create the keyring (and the default master key file) if missing; say where they are."""
    vault = _open(data_dir, master_key, master_key_file, kms_uri, create=True)
    return (
        f"keyring {vault.location} is ready, sealed by master key {vault.master_key_id} from "
        f"{vault.master_source}; key versions {_versions(vault)}, primary {vault.current_version}. "
        "Back up the master key separately from the database: without it no secret can be decrypted"
    )


def status_command(
    data_dir: Path,
    *,
    master_key: str | Secret | None = None,
    master_key_file: Path | None = None,
    kms_uri: str | None = None,
    target: RewrapTargets | None = None,
) -> str:
    """The keyring, its master key, and whether any target (with a mapping: which of them) still
    holds ciphertexts under an older key version."""
    vault = _open(data_dir, master_key, master_key_file, kms_uri, create=False)
    line = (
        f"keyring {vault.location}: unsealed by master key {vault.master_key_id} from {vault.master_source}; "
        f"key versions {_versions(vault)}, primary {vault.current_version}"
    )
    stale = stale_targets(target, vault.current_version) if target is not None else []
    if stale:
        named = ", ".join(name for name in stale if name)
        which = f" ({named})" if named else ""
        line += f"; some secrets{which} still use older versions: run `keysentry vault rewrap`"
    return line


def rotate_command(
    data_dir: Path,
    *,
    master_key: str | Secret | None = None,
    master_key_file: Path | None = None,
    kms_uri: str | None = None,
) -> str:
    """Add a key version and make it primary."""
    vault = _open(data_dir, master_key, master_key_file, kms_uri, create=False)
    version = vault.rotate()
    return (
        f"key version {version} is now primary (versions {_versions(vault)} are kept for decryption). "
        "New secrets use it at once in this process; restart or reload running services, then run "
        "`keysentry vault rewrap` to move stored secrets to it"
    )


def rewrap_command(
    data_dir: Path,
    target: RewrapTargets,
    *,
    master_key: str | Secret | None = None,
    master_key_file: Path | None = None,
    kms_uri: str | None = None,
    batch: int = DEFAULT_BATCH,
    retire_old: bool = False,
    on_batch: Callable[[RewrapReport], None] | None = None,
) -> RewrapReport:
    """Move every stored secret to the newest key version; with `retire_old`, then drop older versions
    if nothing uses them any more. `report.summary()` is the line to print, `report.ok` the outcome.

    `target` may be a mapping of named targets (the store's: credentials and webhooks): all are
    moved, `report.parts` has each one's counts, and retiring waits until none uses an old version."""
    vault = _open(data_dir, master_key, master_key_file, kms_uri, create=False)
    report = rewrap(vault, target, batch=batch, on_batch=on_batch)
    if retire_old and report.ok:
        report.retired_versions = retire(vault, target)
    return report
