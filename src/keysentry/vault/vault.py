"""The vault: encrypts each secret field for one row, opens it only for that row.

Usage (the store keeps `ciphertext` and `key_version` as two columns of the row):

    vault = Vault.open(data_dir, master_key=os.environ.get("KEYSENTRY_MASTER_KEY"))
    sealed = vault.encrypt(secret, tenant="t1", connection="c42", field="api_secret")
    secret = vault.decrypt(row.ciphertext, tenant="t1", connection="c42",
                           field="api_secret", key_version=row.key_version)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keysentry.domain.secrets import Secret
from keysentry.vault.encoding import (
    NONCE_SIZE,
    associated_data,
    check_key_version,
    pack_ciphertext,
    parse_ciphertext,
)
from keysentry.vault.errors import (
    DecryptionFailed,
    KeyringConflict,
    KeyringCorrupt,
    KeyringMissing,
    VaultUsageError,
    WrongMasterKey,
)
from keysentry.vault.keyring import FileKeyringStore, Keyring, KeyringHeader, KeyringStore, parse_document
from keysentry.vault.kms import RemoteAeadFactory
from keysentry.vault.master import MasterKey, MasterKeyConfig, UnsealFailed, resolve_master_key

log = logging.getLogger("keysentry.vault")

KEYRING_FILE = "keyring.json"
_CAS_ATTEMPTS = 5
_HASH_INFO = b"keysentry keyed hash v1\x00"


@dataclass(frozen=True, slots=True)
class Sealed:
    """What the store keeps for one secret field: the ciphertext and its key version (its own column)."""

    ciphertext: bytes
    key_version: int

    def __repr__(self) -> str:
        return f"Sealed(key_version={self.key_version}, ciphertext=<{len(self.ciphertext)} bytes>)"


@dataclass(frozen=True, slots=True)
class _State:
    blob: bytes
    keyring: Keyring


def _encode_text(value: str | Secret, what: str) -> bytes:
    text = value.reveal() if isinstance(value, Secret) else value
    if not isinstance(text, str):
        raise VaultUsageError(f"{what} must be a str or a Secret, got {type(text).__name__}")
    # surrogatepass: whatever str we are given comes back identical, lone surrogates included
    return text.encode("utf-8", "surrogatepass")


class Vault:
    """Envelope encryption of secret fields. Build it with `Vault.open`."""

    def __init__(self, master: MasterKey, store: KeyringStore, blob: bytes, keyring: Keyring) -> None:
        self._master = master
        self._store = store
        self._state = _State(blob, keyring)
        self._lock = threading.Lock()
        self._hash_keys: dict[tuple[bytes, str], bytes] = {}

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        *,
        master_key: str | Secret | None = None,
        master_key_file: Path | str | None = None,
        kms_uri: str | None = None,
        create: bool = True,
        keyring_store: KeyringStore | None = None,
        kms_factory: RemoteAeadFactory | None = None,
    ) -> Vault:
        """Open the keyring with the configured master key, creating both on first use if `create`.

        Raises VaultSealed (with a sentence saying what to do) when no usable master key is
        found; in that case nothing has been written. KeyringCorrupt when the keyring is damaged.
        """
        data_dir = Path(data_dir).expanduser()
        store = keyring_store or FileKeyringStore(data_dir / KEYRING_FILE)
        blob = store.load()
        if blob is None and not create:
            raise KeyringMissing(
                f"there is no keyring at {store.location} yet; it is created the first time keysentry "
                "stores a secret (or by `keysentry vault init`). If secrets were stored before, restore "
                "the keyring from your backup: without it they cannot be decrypted"
            )
        config = MasterKeyConfig(
            master_key=master_key,
            master_key_file=Path(master_key_file) if master_key_file else None,
            kms_uri=kms_uri,
        )
        master = resolve_master_key(
            config,
            data_dir,
            may_create_default=blob is None,
            keyring_location=store.location,
            kms_factory=kms_factory,
        )
        if blob is None:
            keyring = Keyring.new()
            fresh = _seal(master, keyring)
            if store.create(fresh):
                log.info(
                    "created keyring %s sealed by master key %s (%s)",
                    store.location,
                    master.key_id,
                    master.source,
                )
                return cls(master, store, fresh, keyring)
            # another process created it between our load and create: use theirs
            blob = store.load()
            if blob is None:
                raise KeyringCorrupt(f"the keyring at {store.location} vanished while it was being created")
        return cls(master, store, blob, _unseal(master, blob, store.location))

    # -- secrets -------------------------------------------------------------------------

    @property
    def current_version(self) -> int:
        """The key version new secrets are encrypted with."""
        return self._state.keyring.primary

    @property
    def versions(self) -> tuple[int, ...]:
        """Every key version this vault can still decrypt."""
        return self._state.keyring.versions

    @property
    def master_source(self) -> str:
        return self._master.source

    @property
    def master_key_id(self) -> str:
        return self._master.key_id

    @property
    def location(self) -> str:
        return self._store.location

    def encrypt(self, plaintext: str | Secret, *, tenant: str, connection: str, field: str) -> Sealed:
        """Encrypt one secret field under the primary key, bound to (tenant, connection, field, version)."""
        keyring = self._state.keyring
        version = keyring.primary
        ad = associated_data(tenant=tenant, connection=connection, field=field, key_version=version)
        data = _encode_text(plaintext, "plaintext")
        cipher = keyring.cipher(version)
        assert cipher is not None  # the keyring refuses to exist without its primary key
        # random 96-bit nonces stay safe up to about 2^32 encryptions per key version (NIST SP 800-38D);
        # a platform re-encrypts far fewer secrets than that between rotations (docs/security.md)
        nonce = os.urandom(NONCE_SIZE)
        return Sealed(pack_ciphertext(version, nonce, cipher.encrypt(nonce, data, ad)), version)

    def decrypt(
        self, ciphertext: bytes, *, tenant: str, connection: str, field: str, key_version: int
    ) -> Secret:
        """The secret stored for this row and field; DecryptionFailed if it is not exactly that."""
        ad = associated_data(tenant=tenant, connection=connection, field=field, key_version=key_version)
        parsed = parse_ciphertext(ciphertext)
        if parsed is None or parsed.key_version != key_version:
            raise _decryption_failed(tenant, connection, field)
        cipher = self._state.keyring.cipher(key_version)
        if cipher is None and self._refresh_quietly():
            # another process rotated since we loaded the keyring
            cipher = self._state.keyring.cipher(key_version)
        if cipher is None:
            raise _decryption_failed(tenant, connection, field)
        try:
            data = cipher.decrypt(parsed.nonce, parsed.body, ad)
        except InvalidTag:
            raise _decryption_failed(tenant, connection, field) from None
        return Secret(data.decode("utf-8", "surrogatepass"))

    def keyed_hash(self, value: str | Secret, purpose: str) -> str:
        """HMAC-SHA256 of `value` (hex) under a key only this keyring knows, separate per `purpose`.

        For audit logs ("secret values only as keyed hashes") and duplicate detection ("this API
        key is already connected"). Stable across rotations and master-key changes; different
        purposes never give comparable hashes of the same value.
        """
        if not isinstance(purpose, str) or not purpose:
            raise VaultUsageError("purpose must be a non-empty str, such as 'api_key' or 'audit'")
        key = self._hash_key(purpose)
        return hmac.new(key, _encode_text(value, "value"), hashlib.sha256).hexdigest()

    def _hash_key(self, purpose: str) -> bytes:
        root = self._state.keyring.hash_key
        cached = self._hash_keys.get((root, purpose))
        if cached is None:
            info = _HASH_INFO + purpose.encode("utf-8", "surrogatepass")
            cached = HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(root)
            self._hash_keys[(root, purpose)] = cached
        return cached

    # -- key versions --------------------------------------------------------------------

    def rotate(self) -> int:
        """Add a new key version and make it primary; older versions stay for decryption. Returns it."""
        keyring = self._update(lambda ring: ring.rotated())
        log.info("rotated keyring %s: key version %d is now primary", self._store.location, keyring.primary)
        return keyring.primary

    def retire_versions_below(self, version: int) -> tuple[int, ...]:
        """Drop data keys older than `version` (never the primary): ciphertexts under them become unreadable.

        Only call this once nothing is stored under those versions any more (see `rewrap.retire`).
        """
        check_key_version(version)
        before = set(self.versions)
        keyring = self._update(lambda ring: ring.without_versions_below(version))
        dropped = tuple(sorted(before - set(keyring.versions)))
        if dropped:
            log.info("retired key versions %s from keyring %s", list(dropped), self._store.location)
        return dropped

    def refresh(self) -> bool:
        """Reload the keyring if another process changed it; True when it did."""
        blob = self._store.load()
        if blob is None:
            raise KeyringMissing(
                f"the keyring at {self._store.location} was removed while keysentry was running; "
                "restore it from your backup"
            )
        with self._lock:
            if blob == self._state.blob:
                return False
            self._state = _State(blob, _unseal(self._master, blob, self._store.location))
            return True

    def _refresh_quietly(self) -> bool:
        try:
            return self.refresh()
        except (KeyringMissing, KeyringCorrupt, WrongMasterKey):
            # a decrypt reports DecryptionFailed for its row; the keyring problem surfaces on open
            return False

    def _update(self, change: Callable[[Keyring], Keyring]) -> Keyring:
        with self._lock:
            for _ in range(_CAS_ATTEMPTS):
                current = self._state
                keyring = change(current.keyring)
                blob = _seal(self._master, keyring)
                if self._store.replace(current.blob, blob):
                    self._state = _State(blob, keyring)
                    return keyring
                latest = self._store.load()
                if latest is None:
                    raise KeyringMissing(f"the keyring at {self._store.location} was removed")
                self._state = _State(latest, _unseal(self._master, latest, self._store.location))
        raise KeyringConflict(
            f"the keyring at {self._store.location} kept changing while this change was being saved; retry"
        )

    def __repr__(self) -> str:
        return (
            f"Vault(keyring={self._store.location!r}, master={self._master.source!r}, "
            f"versions={list(self.versions)}, primary={self.current_version})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Vault is not pickled; open it where it is used")


def _decryption_failed(tenant: str, connection: str, field: str) -> DecryptionFailed:
    # one message for every cause: which check failed would only help someone probing the store
    return DecryptionFailed(
        f"the stored {field!r} of connection {connection!r} (tenant {tenant!r}) cannot be decrypted: "
        "it was altered, copied from another row, or sealed with a key version this keyring no longer "
        "holds. Ask the user to enter this credential again"
    )


def _seal(master: MasterKey, keyring: Keyring) -> bytes:
    header = KeyringHeader(
        master_kind=master.kind, master_id=master.key_id, primary=keyring.primary, versions=keyring.versions
    )
    return header.document(master.seal(keyring.payload(), header.associated_data()))


def _unseal(master: MasterKey, blob: bytes, location: str) -> Keyring:
    header, sealed = parse_document(blob, location)
    if header.master_id != master.key_id:
        raise WrongMasterKey(
            f"the keyring at {location} was sealed by {header.master_kind} master key {header.master_id}, "
            f"but the master key from {master.source} is {master.kind} key {master.key_id}. Provide the "
            "master key the keyring was created with (restore the key file or set the variable you used)"
        )
    try:
        payload = master.unseal(sealed, header.associated_data())
    except UnsealFailed:
        raise KeyringCorrupt(
            f"the keyring at {location} does not open although its master key matches: it was damaged "
            "or edited. Restore it from your backup"
        ) from None
    keyring = Keyring.from_payload(payload)
    if keyring.primary != header.primary or keyring.versions != header.versions:
        raise KeyringCorrupt(
            f"the keyring at {location} contradicts its own header: restore it from your backup"
        )
    return keyring
