"""Credential values whose repr, str and format never show the secret (redacted by construction)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

REDACTED = "<hidden>"


class Secret:
    """A string that only `reveal()` gives back; everything else prints <hidden>."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), other._value.encode("utf-8", "surrogatepass")
        )

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode("utf-8", "surrogatepass")).digest())

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled; pass it explicitly")


def mask_key(api_key: str) -> str:
    """Enough of an API key for a person to recognise it, not enough to use it."""
    if len(api_key) <= 8:
        return "*" * len(api_key)
    return f"{api_key[:4]}…{api_key[-4:]}"


@dataclass(frozen=True, slots=True, repr=False)
class ApiCredentials:
    api_key: str
    secret: Secret
    passphrase: Secret | None = None
    key_version: int = 2  # KuCoin: 1 sends the passphrase in clear, 2 and 3 send it HMAC'd

    @property
    def masked_key(self) -> str:
        return mask_key(self.api_key)

    def __repr__(self) -> str:
        pp = REDACTED if self.passphrase is not None else None
        return f"ApiCredentials(api_key={self.masked_key!r}, secret={REDACTED}, passphrase={pp})"

    __str__ = __repr__
