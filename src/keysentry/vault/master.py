"""Master-key providers: where the key that seals the keyring comes from.

Exactly one source is used, in the operator's words:
- KEYSENTRY_MASTER_KEY: the base64 of 32 random bytes (`openssl rand -base64 32`);
- KEYSENTRY_MASTER_KEY_FILE: a file holding that same base64 line, mode 0600;
- KEYSENTRY_KMS_URI: a KMS / Vault transit key (the key never leaves the KMS);
- none of them: `master.key` in the data directory, created with mode 0600 the first
  time keysentry creates a keyring there (never later: a missing key file next to an
  existing keyring means the key was lost, and a fresh one would not open the keyring).

A master key's id (16 hex digits) is stored in the keyring header so a wrong key is
named as such instead of being reported as a damaged keyring. For a local key the id is
an HMAC of a constant under the key (reveals nothing of the key); for a KMS key it is a
hash of the URI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysentry.domain.secrets import Secret
from keysentry.vault import _files
from keysentry.vault.errors import MasterKeyInsecure, MasterKeyUnavailable
from keysentry.vault.kms import RemoteAeadFactory, check_uri, default_remote_aead

log = logging.getLogger("keysentry.vault")

MASTER_KEY_SIZE = 32
DEFAULT_KEY_FILE = "master.key"
_MAX_KEY_FILE_BYTES = 4096
_NONCE = 12
_ENVELOPE_V1 = 0x01
_U16 = struct.Struct(">H")
_MAKE_ONE = "make one with `openssl rand -base64 32`"


class UnsealFailed(Exception):
    """The sealed bytes did not open under this master key (the caller knows where they came from)."""


class MasterKey(Protocol):
    """Seals and opens the keyring. Implementations never expose the key itself."""

    @property
    def kind(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    @property
    def source(self) -> str:
        """Where the key came from, for messages: a variable name, a path or a URI; never the key."""
        ...

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def unseal(self, sealed: bytes, associated_data: bytes) -> bytes:
        """The plaintext; UnsealFailed when the bytes do not open (wrong key, altered data)."""
        ...


class LocalMasterKey:
    """A 32-byte key held in memory (from the environment or a key file); AES-256-GCM."""

    kind = "local"

    def __init__(self, key: bytes, source: str) -> None:
        if len(key) != MASTER_KEY_SIZE:
            raise MasterKeyUnavailable(f"{source} is not a master key: it must be {MASTER_KEY_SIZE} bytes")
        self._aead = AESGCM(key)
        self._id = hmac.new(key, b"keysentry master key id v1", hashlib.sha256).hexdigest()[:16]
        self._source = source

    @property
    def key_id(self) -> str:
        return self._id

    @property
    def source(self) -> str:
        return self._source

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def unseal(self, sealed: bytes, associated_data: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], associated_data)
        except (InvalidTag, ValueError):
            raise UnsealFailed from None

    def __repr__(self) -> str:
        return f"LocalMasterKey(source={self._source!r}, id={self._id!r})"


class KmsMasterKey:
    """A remote key: each seal asks the KMS to encrypt a fresh data key, which encrypts the keyring.

    Our own envelope rather than Tink's KmsEnvelopeAead so that "the KMS refused" (credentials,
    network, wrong key) and "the keyring is damaged" stay two different messages. The KMS part
    gets no associated data (Tink's Vault integration refuses any); the local part carries it.
    """

    kind = "kms"

    def __init__(self, uri: str, factory: RemoteAeadFactory | None = None) -> None:
        self._scheme = check_uri(uri)
        self._uri = uri
        self._remote = (factory or default_remote_aead)(uri)
        self._id = hashlib.sha256(uri.encode()).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._id

    @property
    def source(self) -> str:
        return f"KEYSENTRY_KMS_URI {self._uri}"

    def _refused(self, action: str, e: Exception) -> MasterKeyUnavailable:
        return MasterKeyUnavailable(
            f"the KMS key {self._uri} could not {action} the keyring's data key ({type(e).__name__}): "
            "check that the KMS is reachable, that the credentials may use this key, and that it is "
            "the key the keyring was sealed with"
        )

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        dek = os.urandom(MASTER_KEY_SIZE)
        try:
            wrapped = self._remote.encrypt(dek, b"")
        except Exception as e:  # every KMS client has its own error types
            raise self._refused("encrypt", e) from e
        nonce = os.urandom(_NONCE)
        body = AESGCM(dek).encrypt(nonce, plaintext, associated_data)
        return bytes([_ENVELOPE_V1]) + _U16.pack(len(wrapped)) + wrapped + nonce + body

    def unseal(self, sealed: bytes, associated_data: bytes) -> bytes:
        if len(sealed) < 3 or sealed[0] != _ENVELOPE_V1:
            raise UnsealFailed
        (n,) = _U16.unpack_from(sealed, 1)
        wrapped, rest = sealed[3 : 3 + n], sealed[3 + n :]
        if len(wrapped) != n or len(rest) < _NONCE + 16:
            raise UnsealFailed
        try:
            dek = self._remote.decrypt(wrapped, b"")
        except Exception as e:
            raise self._refused("decrypt", e) from e
        try:
            return AESGCM(dek).decrypt(rest[:_NONCE], rest[_NONCE:], associated_data)
        except (InvalidTag, ValueError):
            raise UnsealFailed from None

    def __repr__(self) -> str:
        return f"KmsMasterKey(uri={self._uri!r}, id={self._id!r})"


def generate_master_key() -> str:
    """A new master key in the form KEYSENTRY_MASTER_KEY and key files take."""
    return base64.b64encode(os.urandom(MASTER_KEY_SIZE)).decode("ascii")


def parse_master_key(text: str, source: str) -> bytes:
    """The 32 key bytes of a base64 value; the value itself never appears in the error."""
    compact = "".join(text.split())
    if compact:
        compact += "=" * (-len(compact) % 4)
    decoded: bytes | None = None
    for alphabet in (b"+/", b"-_"):
        try:
            decoded = base64.b64decode(compact, altchars=alphabet, validate=True)
            break
        except (binascii.Error, ValueError):
            continue
    if decoded is None or len(decoded) != MASTER_KEY_SIZE:
        got = "an empty value" if not compact else "something else (the value is not shown)"
        raise MasterKeyUnavailable(
            f"{source} must hold the base64 of {MASTER_KEY_SIZE} random bytes, but holds {got}; {_MAKE_ONE}"
        )
    return decoded


def _read_key_file(path: Path, source: str) -> LocalMasterKey:
    try:
        extra = _files.too_open_bits(path)
    except FileNotFoundError:
        raise MasterKeyUnavailable(f"{source}: {path} does not exist") from None
    except OSError as e:
        raise MasterKeyUnavailable(f"{source}: {path} cannot be read ({e.strerror})") from None
    if extra:
        raise MasterKeyInsecure(
            f"the master key file {path} has mode {_files.file_mode(path):04o}, so other users of this "
            f"machine may read it; keysentry refuses to use it. Run: chmod 600 {path}"
        )
    try:
        raw = _files.read_small(path, _MAX_KEY_FILE_BYTES)
    except OSError as e:
        raise MasterKeyUnavailable(f"{source}: {path} cannot be read ({e.strerror})") from None
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise MasterKeyUnavailable(f"{source}: {path} is too large to be a master key file")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MasterKeyUnavailable(
            f"{source}: {path} is not a master key file (it must hold one base64 line)"
        ) from None
    return LocalMasterKey(parse_master_key(text, f"the master key file {path}"), source)


def _create_default_key_file(path: Path) -> LocalMasterKey:
    try:
        created = _files.create_private_file(path, (generate_master_key() + "\n").encode("ascii"))
    except OSError as e:
        raise MasterKeyUnavailable(
            f"the master key file {path} cannot be created ({e.strerror or type(e).__name__}): make the data "
            "directory writable, or set KEYSENTRY_MASTER_KEY, KEYSENTRY_MASTER_KEY_FILE or KEYSENTRY_KMS_URI"
        ) from e
    if created:
        log.warning(
            "created a new master key file %s (mode 0600): back it up; without it the stored secrets are lost",
            path,
        )
    # whether we or a process starting at the same moment wrote it, everyone uses the file's key
    return _read_key_file(path, f"the master key file {path}")


@dataclass(frozen=True, slots=True)
class MasterKeyConfig:
    """The operator's master-key settings as plain values (the vault does not import settings)."""

    master_key: str | Secret | None = None
    master_key_file: Path | None = None
    kms_uri: str | None = None

    def __repr__(self) -> str:
        key = "<hidden>" if self.master_key else None
        return f"MasterKeyConfig(master_key={key}, master_key_file={self.master_key_file!r}, kms_uri={self.kms_uri!r})"


def resolve_master_key(
    config: MasterKeyConfig,
    data_dir: Path,
    *,
    may_create_default: bool,
    keyring_location: str,
    kms_factory: RemoteAeadFactory | None = None,
) -> MasterKey:
    """The master key the operator configured. Creates the default key file only when allowed."""
    env_value = config.master_key.reveal() if isinstance(config.master_key, Secret) else config.master_key
    given = [
        name
        for name, value in (
            ("KEYSENTRY_MASTER_KEY", env_value),
            ("KEYSENTRY_MASTER_KEY_FILE", config.master_key_file),
            ("KEYSENTRY_KMS_URI", config.kms_uri),
        )
        if value
    ]
    if len(given) > 1:
        raise MasterKeyUnavailable(
            f"{' and '.join(given)} are both set; set only one master key source so there is no doubt "
            "which key seals the keyring"
        )
    if env_value:
        return LocalMasterKey(parse_master_key(env_value, "KEYSENTRY_MASTER_KEY"), "KEYSENTRY_MASTER_KEY")
    if config.master_key_file:
        path = Path(config.master_key_file).expanduser()
        return _read_key_file(path, f"KEYSENTRY_MASTER_KEY_FILE {path}")
    if config.kms_uri:
        return KmsMasterKey(config.kms_uri.strip(), kms_factory)
    path = data_dir / DEFAULT_KEY_FILE
    if path.exists() or path.is_symlink():
        return _read_key_file(path, f"the master key file {path}")
    if may_create_default:
        return _create_default_key_file(path)
    raise MasterKeyUnavailable(
        f"no master key: {path} does not exist and none of KEYSENTRY_MASTER_KEY, "
        f"KEYSENTRY_MASTER_KEY_FILE, KEYSENTRY_KMS_URI is set. The keyring {keyring_location} needs the "
        "master key it was created with: restore the key file from your backup or set the variable "
        "you used; a new key would not open it"
    )
