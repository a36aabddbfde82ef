"""Signing recipes: the reference's vectors, golden checks against ccxt's signer, and properties.

The golden tests take the exact strings ccxt put on the wire (URL query, body, timestamp
header) and recompute the signature with our functions: an independent implementation nobody
here wrote must agree byte for byte.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysentry.exchanges import signing
from keysentry.exchanges.signing import (
    binance_signature,
    bybit_signature,
    canonical_json,
    canonical_query,
    kucoin_passphrase,
    kucoin_signature,
    okx_signature,
    okx_timestamp,
)

FIXED_MS = 1_700_000_000_123
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ALNUM = string.ascii_letters + string.digits

# Keys in the shared formats (see the simulators' scenarios), random-looking but fixed.
BINANCE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BINANCE_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
OKX_KEY = "6f3b1c2a-9d4e-4f5a-8b7c-0d1e2f3a4b5c"
OKX_SECRET = "22582BD0CFF14C41EDBF1AB98506286D"
OKX_PASSPHRASE = "Pass phrase#1"
BYBIT_KEY = "Xk3Pq9Lm2Nv8Rt5Wz1"
BYBIT_SECRET = "Hj7Kl2Mn4Pq6Rs8Tu0Vw1Xy3Za5Bc7De9Fg1"
KUCOIN_KEY = "6705f5c311545b000157d3eb"
KUCOIN_SECRET = "3c8a1f4e-2b7d-4e9a-8c1f-5d6e7f8a9b0c"
KUCOIN_PASSPHRASE = "kc-pass 99"


def test_public_api_is_pinned() -> None:
    assert set(signing.__all__) == {
        "QueryValue",
        "binance_signature",
        "bybit_signature",
        "canonical_json",
        "canonical_query",
        "kucoin_passphrase",
        "kucoin_signature",
        "okx_signature",
        "okx_timestamp",
    }


# -- the reference's vectors (shared/reference/exchange-api.md) -------------------------------------


def test_binance_documentation_vector() -> None:
    payload = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
        "&recvWindow=5000&timestamp=1499827319559"
    )
    assert (
        binance_signature(BINANCE_SECRET, payload)
        == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )


def test_okx_computed_vector() -> None:
    signature = okx_signature(OKX_SECRET, "2020-12-08T09:08:57.715Z", "GET", "/api/v5/account/config", "")
    assert signature == "Kr/8IrbDYujS4cg2KkmB+tO2HMUXxyayG6ZwNb4H/yA="


def test_bybit_computed_vector() -> None:
    signature = bybit_signature("test-secret", 1658384314791, "XXXXXXXXXX", 5000, "")
    assert signature == "8d74628db9cf79f1d486af80722d4b2bd78f7d7a5d18bc968f7b28c5df75b7d1"


def test_kucoin_computed_vectors() -> None:
    signature = kucoin_signature("test-secret", 1700000000000, "GET", "/api/v1/user/api-key", "")
    assert signature == "iQCy1mrZdsqYmA9XSS+V8GQ5k15PevBR/GrxGWyRZuo="
    assert kucoin_passphrase("test-secret", "test-pass", 2) == "+KGfNXdTCAFagUD1lg/kgwlqIgMFeba97YWwVk6avzw="


def test_okx_timestamp_matches_the_documented_shape() -> None:
    assert okx_timestamp(1607418537715) == "2020-12-08T09:08:57.715Z"
    assert okx_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert okx_timestamp(1607418537005) == "2020-12-08T09:08:57.005Z"


def test_okx_timestamp_refuses_negative_time() -> None:
    with pytest.raises(ValueError, match="before 1970"):
        okx_timestamp(-1)


@given(st.integers(min_value=0, max_value=253402300799999))  # up to 9999-12-31T23:59:59.999Z
def test_okx_timestamp_round_trips(epoch_ms: int) -> None:
    text = okx_timestamp(epoch_ms)
    assert len(text) == 24 and text.endswith("Z")
    parsed = datetime.fromisoformat(text)
    assert (parsed - EPOCH) // timedelta(milliseconds=1) == epoch_ms


# -- KuCoin passphrase -----------------------------------------------------------------------------


def test_kucoin_passphrase_v1_is_sent_in_clear() -> None:
    assert kucoin_passphrase(KUCOIN_SECRET, KUCOIN_PASSPHRASE, 1) == KUCOIN_PASSPHRASE


def test_kucoin_passphrase_v2_and_v3_are_hmaced_alike() -> None:
    v2 = kucoin_passphrase(KUCOIN_SECRET, KUCOIN_PASSPHRASE, 2)
    assert v2 == kucoin_passphrase(KUCOIN_SECRET, KUCOIN_PASSPHRASE, 3)
    assert v2 != KUCOIN_PASSPHRASE
    assert v2 != kucoin_passphrase(KUCOIN_SECRET, KUCOIN_PASSPHRASE + "x", 2)


@pytest.mark.parametrize("version", [0, 4, -2])
def test_kucoin_passphrase_refuses_unknown_versions_without_echoing_secrets(version: int) -> None:
    with pytest.raises(ValueError, match="1, 2 or 3") as caught:
        kucoin_passphrase(KUCOIN_SECRET, KUCOIN_PASSPHRASE, version)
    assert KUCOIN_PASSPHRASE not in str(caught.value)
    assert KUCOIN_SECRET not in str(caught.value)


# -- canonical query and body ---------------------------------------------------------------------


def test_canonical_query_keeps_order_and_encodes_unambiguously() -> None:
    query = canonical_query([("b", "x y"), ("a", "1+1=2&c"), ("flag", True), ("off", False), ("n", 5)])
    assert query == "b=x%20y&a=1%2B1%3D2%26c&flag=true&off=false&n=5"


def test_canonical_query_accepts_a_mapping_in_insertion_order() -> None:
    assert canonical_query({"timestamp": 1, "recvWindow": 5000}) == "timestamp=1&recvWindow=5000"
    assert canonical_query({}) == ""


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s),
            st.text(max_size=20).filter(lambda s: "\x00" not in s),
        ),
        max_size=6,
    )
)
def test_canonical_query_decodes_back_to_the_same_pairs(pairs: list[tuple[str, str]]) -> None:
    query = canonical_query(pairs)
    assert " " not in query and "+" not in query
    assert parse_qsl(query, keep_blank_values=True) == pairs


def test_canonical_json_is_compact_and_keeps_key_order() -> None:
    assert canonical_json({"symbol": "BTC-USDT", "size": "1", "x": [1, True]}) == (
        '{"symbol":"BTC-USDT","size":"1","x":[1,true]}'
    )


# -- golden tests against ccxt's signer -----------------------------------------------------------


def _ccxt(cls: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> Any:
    exchange = cls(config)
    exchange.milliseconds = lambda: FIXED_MS  # the nonce/timestamp source of all four signers
    return exchange


def _path_and_query(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.path, parts.query


def _split_binance_signature(total: str) -> tuple[str, str]:
    signed, sep, signature = total.rpartition("&signature=")
    assert sep, f"no signature in {total!r}"
    return signed, signature


@pytest.fixture(scope="module")
def binance() -> Any:
    return _ccxt(ccxt.binance, {"apiKey": BINANCE_KEY, "secret": BINANCE_SECRET})


@pytest.fixture(scope="module")
def okx() -> Any:
    return _ccxt(ccxt.okx, {"apiKey": OKX_KEY, "secret": OKX_SECRET, "password": OKX_PASSPHRASE})


@pytest.fixture(scope="module")
def bybit() -> Any:
    return _ccxt(ccxt.bybit, {"apiKey": BYBIT_KEY, "secret": BYBIT_SECRET})


@pytest.fixture(scope="module")
def kucoin() -> Any:
    return _ccxt(ccxt.kucoin, {"apiKey": KUCOIN_KEY, "secret": KUCOIN_SECRET, "password": KUCOIN_PASSPHRASE})


def test_golden_binance_get_in_query(binance: Any) -> None:
    sent = binance.sign("account/apiRestrictions", ["sapi"], "GET", {})
    path, query = _path_and_query(sent["url"])
    assert path == "/sapi/v1/account/apiRestrictions"
    assert sent["headers"]["X-MBX-APIKEY"] == BINANCE_KEY
    signed, signature = _split_binance_signature(query)
    assert f"timestamp={FIXED_MS}" in signed
    assert binance_signature(BINANCE_SECRET, signed) == signature


def test_golden_binance_post_in_body_with_encoded_values(binance: Any) -> None:
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "1",
        "newClientOrderId": "a b+c/d",
    }
    sent = binance.sign("order/test", ["private"], "POST", dict(params))
    assert _path_and_query(sent["url"]) == ("/api/v3/order/test", "")
    signed, signature = _split_binance_signature(sent["body"])
    assert binance_signature(BINANCE_SECRET, signed) == signature
    # Our query builder produces the very bytes ccxt signed (same order, same percent-encoding).
    recv_window = binance.options["recvWindow"]
    assert canonical_query([("timestamp", FIXED_MS), *params.items(), ("recvWindow", recv_window)]) == signed


def test_golden_okx_get_without_and_with_query(okx: Any) -> None:
    for path, params in (("account/config", {}), ("account/balance", {"ccy": "BTC,USDT"})):
        sent = okx.sign(path, ["private"], "GET", dict(params))
        headers = sent["headers"]
        assert headers["OK-ACCESS-TIMESTAMP"] == okx_timestamp(FIXED_MS)
        assert headers["OK-ACCESS-PASSPHRASE"] == OKX_PASSPHRASE
        url_path, query = _path_and_query(sent["url"])
        request_path = f"{url_path}?{query}" if query else url_path
        if params:
            assert query == canonical_query(params)
        expected = okx_signature(OKX_SECRET, headers["OK-ACCESS-TIMESTAMP"], "GET", request_path, "")
        assert expected == headers["OK-ACCESS-SIGN"]


def test_golden_okx_post_with_json_body(okx: Any) -> None:
    params = {"instId": "BTC-USDT", "lever": "5", "mgnMode": "cross"}
    sent = okx.sign("account/set-leverage", ["private"], "POST", dict(params))
    headers = sent["headers"]
    assert sent["body"] == canonical_json(params)
    url_path, _ = _path_and_query(sent["url"])
    expected = okx_signature(OKX_SECRET, headers["OK-ACCESS-TIMESTAMP"], "POST", url_path, sent["body"])
    assert expected == headers["OK-ACCESS-SIGN"]


@pytest.mark.parametrize(
    ("path", "method", "params"),
    [
        ("v5/user/query-api", "GET", {}),
        ("v5/account/wallet-balance", "GET", {"accountType": "UNIFIED", "coin": "BTC"}),
        ("v5/order/create", "POST", {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "qty": "1"}),
    ],
)
def test_golden_bybit(bybit: Any, path: str, method: str, params: dict[str, str]) -> None:
    sent = bybit.sign(path, ["private"], method, dict(params))
    headers = sent["headers"]
    assert headers["X-BAPI-API-KEY"] == BYBIT_KEY
    timestamp = int(headers["X-BAPI-TIMESTAMP"])
    recv_window = int(headers["X-BAPI-RECV-WINDOW"])
    assert timestamp == FIXED_MS
    payload = sent["body"] if method == "POST" else _path_and_query(sent["url"])[1]
    if method == "POST":
        assert payload == canonical_json(params)
    expected = bybit_signature(BYBIT_SECRET, timestamp, BYBIT_KEY, recv_window, payload)
    assert expected == headers["X-BAPI-SIGN"]


@pytest.mark.parametrize(
    ("path", "method", "params"),
    [
        ("user/api-key", "GET", {}),
        ("accounts", "GET", {"currency": "BTC", "type": "trade"}),
        ("hf/orders/test", "POST", {"symbol": "BTC-USDT", "side": "buy", "clientOid": "c1", "size": "1"}),
    ],
)
def test_golden_kucoin(kucoin: Any, path: str, method: str, params: dict[str, str]) -> None:
    sent = kucoin.sign(path, ["private"], method, dict(params))
    headers = sent["headers"]
    timestamp = int(headers["KC-API-TIMESTAMP"])
    assert timestamp == FIXED_MS
    url_path, query = _path_and_query(sent["url"])
    endpoint = f"{url_path}?{query}" if query else url_path
    body = sent["body"] or ""
    expected = kucoin_signature(KUCOIN_SECRET, timestamp, method, endpoint, body)
    assert expected == headers["KC-API-SIGN"]
    version = int(headers["KC-API-KEY-VERSION"])
    assert kucoin_passphrase(KUCOIN_SECRET, KUCOIN_PASSPHRASE, version) == headers["KC-API-PASSPHRASE"]


# -- properties: deterministic, and sensitive to every input --------------------------------------

# Secrets in the exchanges' own alphabets. (Arbitrary text would include trailing NUL bytes,
# which HMAC's zero-padding of short keys makes indistinguishable; no exchange issues those.)
secrets = st.text(alphabet=ALNUM + "-", min_size=1, max_size=64)
texts = st.text(max_size=40)
timestamps = st.integers(min_value=0, max_value=2**42)
windows = st.integers(min_value=1, max_value=60_000)
methods = st.sampled_from(["GET", "POST", "DELETE", "PUT"])

SIGNERS: dict[str, tuple[Callable[..., str], tuple[st.SearchStrategy[Any], ...]]] = {
    "binance": (binance_signature, (secrets, texts)),
    "okx": (okx_signature, (secrets, texts, methods, texts, texts)),
    "bybit": (bybit_signature, (secrets, timestamps, texts, windows, texts)),
    "kucoin": (kucoin_signature, (secrets, timestamps, methods, texts, texts)),
    "kucoin_passphrase": (
        lambda secret, passphrase: kucoin_passphrase(secret, passphrase, 2),
        (secrets, texts),
    ),
}


@pytest.mark.parametrize("name", sorted(SIGNERS))
@given(data=st.data())
def test_signatures_are_deterministic_and_change_with_any_input(name: str, data: st.DataObject) -> None:
    signer, strategies = SIGNERS[name]
    args = [data.draw(strategy) for strategy in strategies]
    signature = signer(*args)
    assert signer(*args) == signature
    position = data.draw(st.integers(min_value=0, max_value=len(args) - 1), label="changed input")
    changed = list(args)
    changed[position] = data.draw(strategies[position].filter(lambda v: v != args[position]))
    assert signer(*changed) != signature
