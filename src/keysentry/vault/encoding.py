"""Byte layouts of a stored secret: the ciphertext envelope and the associated data it is bound to.

Ciphertext (what the store keeps next to its own `key_version` column):

    offset  size  content
    0       1     format, 0x01
    1       4     key version, unsigned big-endian (names the data key; must equal the column)
    5       12    random AES-GCM nonce
    17      n+16  AES-256-GCM ciphertext of the UTF-8 plaintext, then the 16-byte tag

Associated data (never stored; rebuilt from the row on every decrypt):

    u32 len | b"keysentry/vault/secret/v1"
    u32 len | tenant     (UTF-8)
    u32 len | connection (UTF-8)
    u32 len | field      (UTF-8)
    u32       key version

Every variable part is length-prefixed, so ("ab", "c") and ("a", "bc") give different bytes:
a ciphertext cannot be made to open for another row by shifting characters between ids.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from keysentry.vault.errors import VaultUsageError

FORMAT_V1 = 0x01
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_KEY_VERSION = 2**32 - 1

_HEADER = struct.Struct(">BI")
_U32 = struct.Struct(">I")
_AD_DOMAIN = b"keysentry/vault/secret/v1"

HEADER_SIZE = _HEADER.size
MIN_CIPHERTEXT_SIZE = HEADER_SIZE + NONCE_SIZE + TAG_SIZE


@dataclass(frozen=True, slots=True)
class ParsedCiphertext:
    key_version: int
    nonce: bytes
    body: bytes  # AES-GCM output: encrypted bytes followed by the tag


def check_key_version(key_version: int) -> int:
    # bool is an int; a True key version is always a caller bug
    if isinstance(key_version, bool) or not isinstance(key_version, int):
        raise VaultUsageError(f"key_version must be an int, got {type(key_version).__name__}")
    if not 1 <= key_version <= MAX_KEY_VERSION:
        raise VaultUsageError(f"key_version must be between 1 and {MAX_KEY_VERSION}, got {key_version}")
    return key_version


def _id_bytes(name: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise VaultUsageError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise VaultUsageError(f"{name} must not be empty: it is what ties a ciphertext to its row")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise VaultUsageError(f"{name} is not valid Unicode text (it holds a lone surrogate)") from None


_AD_PREFIX = _U32.pack(len(_AD_DOMAIN)) + _AD_DOMAIN
_pack_u32 = _U32.pack


def associated_data(*, tenant: str, connection: str, field: str, key_version: int) -> bytes:
    """The canonical bytes one row's secret is bound to."""
    # every decrypt builds this: the common case is checked inline, the slow path explains errors
    try:
        if not (type(tenant) is str and type(connection) is str and type(field) is str):
            raise TypeError
        t, c, f = tenant.encode(), connection.encode(), field.encode()
        if not (t and c and f):
            raise ValueError
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        t, c, f = _id_bytes("tenant", tenant), _id_bytes("connection", connection), _id_bytes("field", field)
    if type(key_version) is not int or not 1 <= key_version <= MAX_KEY_VERSION:
        check_key_version(key_version)
    return b"".join(
        (_AD_PREFIX, _pack_u32(len(t)), t, _pack_u32(len(c)), c, _pack_u32(len(f)), f, _pack_u32(key_version))
    )


def pack_ciphertext(key_version: int, nonce: bytes, body: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise VaultUsageError(f"nonce must be {NONCE_SIZE} bytes")
    return _HEADER.pack(FORMAT_V1, check_key_version(key_version)) + nonce + body


def parse_ciphertext(data: bytes) -> ParsedCiphertext | None:
    """The parts of a stored ciphertext, or None when it is not one of ours (wrong format or too short)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return None
    raw = bytes(data)
    if len(raw) < MIN_CIPHERTEXT_SIZE:
        return None
    fmt, version = _HEADER.unpack_from(raw)
    if fmt != FORMAT_V1 or version == 0:
        return None
    return ParsedCiphertext(
        key_version=version,
        nonce=raw[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE],
        body=raw[HEADER_SIZE + NONCE_SIZE :],
    )
