"""The data-key ring: numbered AES-256-GCM keys, one of them primary, plus the keyed-hash key.

The ring lives sealed under the master key in a `KeyringStore` (a file under the data
directory by default; the database can implement the same three methods later). The
stored form is a small JSON document whose readable header says which master key sealed
it and which versions it holds; the header is the associated data of the sealed part, so
editing it makes the ring fail to open instead of lying.

    {"format": "keysentry-keyring/1",
     "master": {"kind": "local", "id": "9f2c..."},
     "primary": 3, "versions": [1, 2, 3],
     "sealed": "<base64 of the master key's seal of the payload>"}

Payload (plaintext only in memory): {"primary": 3, "keys": {"1": b64, ...},
"created": {"1": iso-time, ...}, "hash_key": b64}.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysentry.vault import _files
from keysentry.vault.encoding import MAX_KEY_VERSION
from keysentry.vault.errors import KeyringCorrupt, KeyringUnavailable

FORMAT = "keysentry-keyring/1"
KEY_SIZE = 32
MAX_KEYRING_BYTES = 1 << 20  # a ring of thousands of versions is still far below this


class KeyringStore(Protocol):
    """Where the sealed keyring is kept. Writes must be atomic: a reader sees the old or the new blob."""

    @property
    def location(self) -> str:
        """Where it is, for messages (a path, a table name); never a secret."""
        ...

    def load(self) -> bytes | None:
        """The sealed keyring, or None when none was created yet."""
        ...

    def create(self, blob: bytes) -> bool:
        """Store the first keyring; False, changing nothing, when one exists already."""
        ...

    def replace(self, expected: bytes, blob: bytes) -> bool:
        """Compare-and-swap: store `blob` only if the current keyring is still `expected`."""
        ...


class FileKeyringStore:
    """The embedded default: `keyring.json` under the data directory, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def location(self) -> str:
        return str(self.path)

    def load(self) -> bytes | None:
        try:
            data = _files.read_small(self.path, MAX_KEYRING_BYTES)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._unavailable("read", e) from e
        if len(data) > MAX_KEYRING_BYTES:
            raise KeyringCorrupt(f"the keyring file {self.path} is far larger than a keyring can be")
        return data

    def create(self, blob: bytes) -> bool:
        try:
            return _files.create_private_file(self.path, blob)
        except OSError as e:
            raise self._unavailable("created", e) from e

    def replace(self, expected: bytes, blob: bytes) -> bool:
        try:
            # the lock serialises read-compare-write between processes (two operators rotating at once)
            with _files.exclusive_lock(self.path.with_name(self.path.name + ".lock")):
                if self.load() != expected:
                    return False
                _files.replace_private_file(self.path, blob)
                return True
        except OSError as e:
            raise self._unavailable("written", e) from e

    def _unavailable(self, action: str, e: OSError) -> KeyringUnavailable:
        reason = e.strerror or type(e).__name__
        return KeyringUnavailable(
            f"the keyring file {self.path} cannot be {action} ({reason}): check that the data directory "
            "exists, is a directory, and is writable by the user keysentry runs as"
        )

    def __repr__(self) -> str:
        return f"FileKeyringStore({self.location!r})"


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True, repr=False)
class Keyring:
    """Immutable: rotation builds a new ring, so a reader never sees a half-updated one."""

    primary: int
    keys: Mapping[int, bytes]
    created: Mapping[int, str]
    hash_key: bytes
    _ciphers: dict[int, AESGCM] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.primary not in self.keys:
            raise KeyringCorrupt("the keyring names a primary key version it does not hold")
        for version, key in self.keys.items():
            if not 1 <= version <= MAX_KEY_VERSION or len(key) != KEY_SIZE:
                raise KeyringCorrupt("the keyring holds a data key of the wrong size or number")
        if len(self.hash_key) != KEY_SIZE:
            raise KeyringCorrupt("the keyring's keyed-hash key has the wrong size")
        # building AESGCM costs about as much as one encryption; do it once per version
        for version, key in self.keys.items():
            self._ciphers[version] = AESGCM(key)

    @classmethod
    def new(cls) -> Keyring:
        return cls(
            primary=1, keys={1: os.urandom(KEY_SIZE)}, created={1: _now()}, hash_key=os.urandom(KEY_SIZE)
        )

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self.keys))

    def cipher(self, version: int) -> AESGCM | None:
        return self._ciphers.get(version)

    def rotated(self) -> Keyring:
        # numbers are never reused, even after old versions were retired, so a version names one key forever
        version = max(self.keys) + 1
        if version > MAX_KEY_VERSION:
            raise KeyringCorrupt("the keyring has run out of key version numbers")
        return Keyring(
            primary=version,
            keys={**self.keys, version: os.urandom(KEY_SIZE)},
            created={**self.created, version: _now()},
            hash_key=self.hash_key,
        )

    def without_versions_below(self, version: int) -> Keyring:
        keep = {v: k for v, k in self.keys.items() if v >= version or v == self.primary}
        return Keyring(
            primary=self.primary,
            keys=keep,
            created={v: t for v, t in self.created.items() if v in keep},
            hash_key=self.hash_key,
        )

    def payload(self) -> bytes:
        doc = {
            "primary": self.primary,
            "keys": {str(v): _b64(k) for v, k in sorted(self.keys.items())},
            "created": {str(v): self.created.get(v, "") for v in sorted(self.keys)},
            "hash_key": _b64(self.hash_key),
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_payload(cls, data: bytes) -> Keyring:
        try:
            doc = json.loads(data)
            keys = {int(v): _unb64(k) for v, k in doc["keys"].items()}
            created = {int(v): str(t) for v, t in doc.get("created", {}).items()}
            return cls(
                primary=int(doc["primary"]), keys=keys, created=created, hash_key=_unb64(doc["hash_key"])
            )
        except KeyringCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyringCorrupt("the keyring opened but its content is not a keyring") from None

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary}, versions={list(self.versions)})"


@dataclass(frozen=True, slots=True)
class KeyringHeader:
    """The readable part of a stored keyring; bound to the sealed part as its associated data."""

    master_kind: str
    master_id: str
    primary: int
    versions: tuple[int, ...]

    def associated_data(self) -> bytes:
        return json.dumps(self._doc(), sort_keys=True, separators=(",", ":")).encode()

    def _doc(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "master": {"kind": self.master_kind, "id": self.master_id},
            "primary": self.primary,
            "versions": list(self.versions),
        }

    def document(self, sealed: bytes) -> bytes:
        return (json.dumps({**self._doc(), "sealed": _b64(sealed)}, indent=1) + "\n").encode()


def parse_document(blob: bytes, location: str) -> tuple[KeyringHeader, bytes]:
    """Header and sealed bytes of a stored keyring; KeyringCorrupt when it is not one."""
    bad = KeyringCorrupt(
        f"the keyring at {location} is damaged (not a keysentry keyring document): restore it from your backup"
    )
    try:
        doc = json.loads(blob)
        if doc["format"] != FORMAT:
            raise KeyringCorrupt(
                f"the keyring at {location} has format {str(doc['format'])[:40]!r}, which this keysentry "
                f"does not read (it reads {FORMAT!r}); upgrade keysentry or restore the keyring"
            )
        header = KeyringHeader(
            master_kind=str(doc["master"]["kind"]),
            master_id=str(doc["master"]["id"]),
            primary=int(doc["primary"]),
            versions=tuple(int(v) for v in doc["versions"]),
        )
        return header, _unb64(doc["sealed"])
    except KeyringCorrupt:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise bad from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError):
        raise ValueError("not base64") from None
