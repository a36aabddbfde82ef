"""keysentry.vault: envelope encryption of every secret field (see docs/security.md).

Each secret field is encrypted with AES-256-GCM under a numbered data key; the associated
data binds it to (tenant, connection, field, key version), so a ciphertext copied into
another row does not decrypt. The data keys form a keyring sealed under a master key
(a key file, an environment variable, or a KMS / Vault key). Without a usable master key
the vault is sealed: every operation is refused with a sentence saying what to do.

This package imports only keysentry.domain; Tink's KMS clients are imported on demand.
"""

from keysentry.vault.commands import init_command, rewrap_command, rotate_command, status_command
from keysentry.vault.errors import (
    DecryptionFailed,
    KeyringConflict,
    KeyringCorrupt,
    KeyringMissing,
    KeyringUnavailable,
    MasterKeyInsecure,
    MasterKeyUnavailable,
    VaultError,
    VaultSealed,
    VaultUsageError,
    WrongMasterKey,
)
from keysentry.vault.keyring import FileKeyringStore, KeyringStore
from keysentry.vault.kms import RemoteAead
from keysentry.vault.master import generate_master_key
from keysentry.vault.rewrap import RewrapReport, RewrapTarget, RewrapTargets, RowId, StaleRow, retire, rewrap
from keysentry.vault.vault import Sealed, Vault

__all__ = [
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
