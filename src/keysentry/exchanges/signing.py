"""Each exchange's request-signing recipe, as a small pure function.

Written from the exchanges' documented algorithms (shared/reference/exchange-api.md), never
by calling a client library at run time. The simulators verify signatures with their own,
separate code on purpose: a misreading shared by both sides would pass every test.

The rule that keeps signatures valid: the bytes signed are the bytes sent. Build the query
once with `canonical_query` and the JSON body once with `canonical_json`, sign those exact
strings, and hand the same strings to the transport (which sends the query unchanged).

    exchange  string signed                                         output
    Binance   totalParams = query + body (no separator)             lowercase hex HMAC-SHA256
    OKX       timestamp + METHOD + path?query + body                base64 HMAC-SHA256
    Bybit     timestamp + api_key + recv_window + (query | body)    lowercase hex HMAC-SHA256
    KuCoin    timestamp + METHOD + endpoint?query + body            base64 HMAC-SHA256
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TypeAlias
from urllib.parse import quote, urlencode

__all__ = [
    "QueryValue",
    "binance_signature",
    "bybit_signature",
    "canonical_json",
    "canonical_query",
    "kucoin_passphrase",
    "kucoin_signature",
    "okx_signature",
    "okx_timestamp",
]

QueryValue: TypeAlias = str | int | bool

_KUCOIN_KEY_VERSIONS = (1, 2, 3)


def _hmac_sha256(secret: str, message: str) -> bytes:
    # hmac.new with the hashlib constructor: with OpenSSL 3, hmac.digest(..., "sha256") looks the
    # digest up by name on every call and costs 1.5x as much.
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def canonical_query(params: Mapping[str, QueryValue] | Iterable[tuple[str, QueryValue]]) -> str:
    """The query string exactly as it will be sent: pairs in the given order, percent-encoded.

    Spaces become %20 rather than "+", because servers disagree on whether "+" in a query means a
    space; booleans become "true"/"false", the exchanges' spelling. Floats are refused by the
    type: their text form is ambiguous (1e-05 vs 0.00001), so callers format numbers themselves.
    """
    pairs = params.items() if isinstance(params, Mapping) else params
    # bool before int: bool is an int subclass and str(True) is "True".
    encoded = [(k, ("true" if v else "false") if isinstance(v, bool) else str(v)) for k, v in pairs]
    # Every name and value unreserved exactly when all of them together are: one match, not two a pair.
    if _UNRESERVED.fullmatch("".join(itertools.chain.from_iterable(encoded))):
        # Nothing to escape (the usual case: symbols, numbers, timestamps): 10x cheaper, same bytes.
        return "&".join(f"{k}={v}" for k, v in encoded)
    return urlencode(encoded, quote_via=quote, safe="")


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def canonical_json(payload: object) -> str:
    """A compact JSON body (no spaces): the string to sign and, encoded, the bytes to send."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def binance_signature(secret: str, total_params: str) -> str:
    """Binance HMAC: lowercase hex HMAC-SHA256 of totalParams (query string + form body, no separator)."""
    return _hmac_sha256(secret, total_params).hex()


def okx_timestamp(epoch_ms: int) -> str:
    """OKX's OK-ACCESS-TIMESTAMP: ISO 8601 UTC with milliseconds, e.g. 2020-12-08T09:08:57.715Z."""
    if epoch_ms < 0:
        raise ValueError(f"a timestamp before 1970 cannot be signed (got {epoch_ms} ms)")
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8)
def _utc_second(seconds: int) -> str:
    # Every request signed within the same second shares this text: formatted once, not per request.
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}"


def okx_signature(secret: str, timestamp: str, method: str, request_path: str, body: str) -> str:
    """OKX: base64 HMAC-SHA256 of timestamp + METHOD + request_path (with ?query) + body ("" for GET)."""
    return _b64(_hmac_sha256(secret, f"{timestamp}{method.upper()}{request_path}{body}"))


def bybit_signature(secret: str, timestamp_ms: int, api_key: str, recv_window: int, payload: str) -> str:
    """Bybit v5 HMAC: lowercase hex of timestamp + api_key + recv_window + payload.

    payload is the query string for GET and the JSON body for POST, exactly as sent.
    """
    return _hmac_sha256(secret, f"{timestamp_ms}{api_key}{recv_window}{payload}").hex()


def kucoin_signature(secret: str, timestamp_ms: int, method: str, endpoint: str, body: str) -> str:
    """KuCoin: base64 HMAC-SHA256 of timestamp + METHOD + endpoint (with ?query) + body ("" if none)."""
    return _b64(_hmac_sha256(secret, f"{timestamp_ms}{method.upper()}{endpoint}{body}"))


def kucoin_passphrase(secret: str, passphrase: str, key_version: int) -> str:
    """The KC-API-PASSPHRASE header: the passphrase itself for v1 keys, HMAC'd with the secret for v2/v3."""
    if key_version not in _KUCOIN_KEY_VERSIONS:
        raise ValueError(f"KuCoin key version must be 1, 2 or 3, not {key_version!r}")
    if key_version == 1:
        return passphrase
    return _b64(_hmac_sha256(secret, passphrase))
