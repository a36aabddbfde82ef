"""Canary secrets: exchange-format-valid secrets and passphrases that tests register, so any leak shows.

A canary is a real-looking credential made for one test: it passes keysentry's format checks
and the simulators' (docs: shared key formats), and is unique and recognisable. Tests use
canaries wherever a secret or passphrase is needed; the autouse fixture in tests/conftest.py
scans every log record of every test for every registered canary, and tests that read a
process's output call `assert_no_leak` on it.

    secret = canary.binance_secret()          # 64 letters and digits, registered
    passphrase = canary.passphrase("okx")     # 8-32 printable ASCII, registered
    canary.scan(text)                         # labels of the canaries found in text
    canary.redact(text)                       # text with each canary replaced by its label

`scan` looks for the whole value, the forms it takes in JSON and URLs, and every run of 17
characters of its random part (a truncated or sliced secret is still a leak). It reports labels, never the
values, so a failure message cannot leak a canary in its turn.
"""

from __future__ import annotations

import itertools
import json
import secrets
import string
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

__all__ = [
    "Canary",
    "assert_no_leak",
    "binance_secret",
    "bybit_secret",
    "kucoin_secret",
    "okx_secret",
    "passphrase",
    "redact",
    "register",
    "registered",
    "scan",
    "secret",
]

_ALNUM = string.ascii_letters + string.digits
# Recognisable at a glance in a log line, within each format's alphabet.
ALNUM_MARK = "CANARY"
HEX_MARK = "CAFEBABE"
PASSPHRASE_MARK = "Canary!"
# Fragments looked for: 12 random characters are unique; any leaked run of 17 holds one.
_FRAGMENT = 12
_STEP = 6

_counter = itertools.count(1)
_lock = threading.Lock()
_registry: list[Canary] = []


@dataclass(frozen=True, slots=True)
class Canary:
    label: str
    value: str
    needles: tuple[str, ...]

    def __repr__(self) -> str:
        # A canary is a secret like any other: its repr names it and shows nothing of it.
        return f"Canary({self.label})"


def _needles(value: str, random_part: str) -> tuple[str, ...]:
    forms = {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value)}
    # Overlapping windows of the random part: any leaked run of FRAGMENT + STEP - 1 characters
    # holds one whole window, so a truncated or sliced secret is found too.
    last = len(random_part) - _FRAGMENT
    forms.update(random_part[i : i + _FRAGMENT] for i in [*range(0, last, _STEP), last] if i >= 0)
    return tuple(sorted(forms, key=len))


def register(value: str, label: str, random_part: str | None = None) -> Canary:
    """Register `value` as a canary; runs of `random_part` (a substring of it) count as leaks too."""
    if random_part is not None and random_part not in value:
        raise ValueError(f"{label}: random_part must be a substring of the value")
    found = Canary(label, value, _needles(value, random_part or value))
    with _lock:
        _registry.append(found)
    return found


def registered() -> tuple[Canary, ...]:
    with _lock:
        return tuple(_registry)


def scan(text: str) -> list[str]:
    """Labels of the registered canaries found in `text` (whole, in part, JSON- or URL-encoded)."""
    if not text:
        return []
    return [c.label for c in registered() if any(n in text for n in c.needles)]


def assert_no_leak(text: str, where: str) -> None:
    """Fail when `text` holds a canary; `where` names the text and must not hold one itself."""
    leaks = scan(text)
    assert not leaks, f"canary secret(s) {', '.join(leaks)} appear in {redact(where)}"


def redact(text: str) -> str:
    """`text` with every canary (and part of one) replaced by its label: safe in a failure message."""
    for c in registered():
        for needle in sorted(c.needles, key=len, reverse=True):
            text = text.replace(needle, f"<{c.label}>")
    return text


# -- generators ---------------------------------------------------------------------------------


def _label(kind: str) -> str:
    return f"{kind}#{next(_counter)}"


def _alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _alnum_secret(kind: str, length: int) -> str:
    tail = _alnum(length - len(ALNUM_MARK))
    value = ALNUM_MARK + tail
    register(value, _label(kind), tail)
    return value


def binance_secret() -> str:
    """64 letters and digits (Binance)."""
    return _alnum_secret("binance-secret", 64)


def bybit_secret() -> str:
    """36 letters and digits (Bybit)."""
    return _alnum_secret("bybit-secret", 36)


def okx_secret() -> str:
    """32 uppercase hex digits (OKX)."""
    tail = secrets.token_hex(12).upper()
    value = HEX_MARK + tail
    register(value, _label("okx-secret"), tail)
    return value


def kucoin_secret() -> str:
    """A lowercase UUID, 8-4-4-4-12 hex (KuCoin)."""
    value = f"{HEX_MARK.lower()}{str(uuid.uuid4())[8:]}"
    register(value, _label("kucoin-secret"), value[len(HEX_MARK) + 1 :])
    return value


_SECRETS = {"binance": binance_secret, "bybit": bybit_secret, "okx": okx_secret, "kucoin": kucoin_secret}


def secret(exchange: str) -> str:
    """A canary secret in `exchange`'s format."""
    try:
        return _SECRETS[exchange]()
    except KeyError:
        raise ValueError(f"no canary format for {exchange!r}; known: {', '.join(_SECRETS)}") from None


def passphrase(exchange: str = "okx", length: int = 24) -> str:
    """A passphrase a user could choose: printable ASCII with punctuation (OKX 8-32, KuCoin 7-32)."""
    if not len(PASSPHRASE_MARK) + 12 <= length <= 32:
        raise ValueError(
            f"a canary passphrase has {len(PASSPHRASE_MARK) + 12} to 32 characters, not {length}"
        )
    # Punctuation that needs escaping in JSON, URLs and shells, so encoded leaks are looked for too.
    tail = _alnum(length - len(PASSPHRASE_MARK) - 4) + "-&%/"
    value = PASSPHRASE_MARK + tail
    register(value, _label(f"{exchange}-passphrase"), tail)
    return value
