"""Vault errors, grouped by what the caller must do.

    VaultError                     root: anything the vault refuses
    ├── VaultSealed                an operator must supply a usable master key; nothing was read or written
    │   ├── MasterKeyUnavailable   the configured source gives no key (missing file, bad value, KMS
    │   │                          unreachable or its client library not installed)
    │   ├── MasterKeyInsecure      the key file is readable by others: tighten it with the chmod shown
    │   ├── WrongMasterKey         a key was found, but the keyring was sealed under another one
    │   └── KeyringMissing         no keyring yet and creating one was not allowed
    ├── KeyringCorrupt             the keyring file is damaged: restore it from a backup
    ├── DecryptionFailed           one stored secret does not open for the row it was read from
    │                              (altered, moved from another row, or sealed with a dropped key
    │                              version): treat that secret as lost and ask the user for it again
    ├── KeyringConflict            someone else changed the keyring at the same time: retry
    ├── KeyringUnavailable         the keyring's storage cannot be read or written: fix its access
    └── VaultUsageError            a programming error in the caller (empty tenant id, ...); also a ValueError

Messages are written for the person who has to act. None of them ever contains a
plaintext, key material, or a master key: callers may show them, log them and put them
in API responses.
"""

from __future__ import annotations


class VaultError(Exception):
    """Root of every error the vault raises."""


class VaultSealed(VaultError):
    """No usable master key: secret operations are refused until an operator provides one."""


class MasterKeyUnavailable(VaultSealed):
    """The configured master-key source could not give a key."""


class MasterKeyInsecure(VaultSealed):
    """The master key file may be read by other users of this machine."""


class WrongMasterKey(VaultSealed):
    """A master key was found, but it is not the one the keyring was sealed with."""


class KeyringMissing(VaultSealed):
    """There is no keyring yet and the caller did not allow creating one."""


class KeyringCorrupt(VaultError):
    """The keyring exists and the master key matches, but its content is damaged or altered."""


class DecryptionFailed(VaultError):
    """A ciphertext does not open for the (tenant, connection, field, key version) it was read with."""


class KeyringConflict(VaultError):
    """The keyring changed under us (another process rotated it); the operation can be retried."""


class KeyringUnavailable(VaultError):
    """The keyring's storage (a file, later a table) cannot be read or written right now."""


class VaultUsageError(VaultError, ValueError):
    """The caller passed something the vault cannot work with; a bug to fix, not a state to handle."""
