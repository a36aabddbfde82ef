"""Binance simulator over real HTTP: wire answers per cause, signing vectors, limits, and ccxt fidelity.

The test client signs with its own few lines of HMAC (a third implementation, next to the
simulator's verifier and the adapter's signer); the documented vectors pin all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from keysentry.sim.base import ExchangeSim
from keysentry.sim.binance import BinanceSim, split_signature, verify_hmac_signature
from keysentry.sim.scenario import ScenarioError, load_scenario, parse_scenario
from keysentry.sim.server import SimCluster

# Binance's documentation example (rest-api.md, "SIGNED endpoint examples").
DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_TIMESTAMP = 1499827319559
DOC_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
DOC_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
# Example 1 (everything in one string), from the reference.
DOC_SIG_ALL = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
# Example 3 (query and body mixed: totalParams joins them without '&').
DOC_SIG_MIXED = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"

INVALID = "Invalid API-key, IP, or permissions for action."
REGION_MSG = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)
ALL_PERMISSIONS = [
    "reading",
    "spot_and_margin_trading",
    "margin",
    "futures",
    "withdrawals",
    "internal_transfer",
    "universal_transfer",
    "vanilla_options",
    "portfolio_margin",
    "fix_api_trade",
    "fix_read_only",
]
LOOPBACK = ["127.0.0.0/8"]


def creds(name: str) -> tuple[str, str]:
    """A key pair in Binance's format (64 alphanumerics each), stable per name."""
    return hashlib.sha256(name.encode()).hexdigest(), hashlib.sha256(f"{name}/secret".encode()).hexdigest()


def key(name: str, **fields: Any) -> dict[str, Any]:
    api_key, secret = creds(name)
    return {"label": name, "api_key": api_key, "secret": secret, **fields}


def account(uid: str, *keys: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": uid, "keys": list(keys), **fields}


TRADE = ["reading", "spot_and_margin_trading"]


def base_spec(**overrides: Any) -> dict[str, Any]:
    accounts = [
        account(
            "354937868",
            key("ok", permissions=[*TRADE, "futures"], ip_whitelist=LOOPBACK, created_at="-10d"),
            balances={"BTC": "0.5", "USDT": "1250.5", "ETH": "0"},
            deposit_addresses={"BTC": "bc1qexampledepositaddress0000000000000000", "usdt": "0xabc"},
        ),
        account("1002", key("read", permissions=["reading"], ip_whitelist=LOOPBACK)),
        account("1003", key("wl", permissions=TRADE, ip_whitelist=["10.11.12.13"])),
        account("1004", key("lapsed", permissions=TRADE, expires_at="-1d")),
        account("1005", key("gone", permissions=TRADE, ip_whitelist=LOOPBACK, expires_at="-1d")),
        account("1006", key("frozen", permissions=TRADE, ip_whitelist=LOOPBACK), frozen=True),
        account("1007", key("banned", permissions=TRADE, ip_whitelist=LOOPBACK), banned=True),
        account("1008", key("apioff", permissions=TRADE, ip_whitelist=LOOPBACK), api_disabled=True),
        account("1009", key("kyc", permissions=TRADE, ip_whitelist=LOOPBACK), kyc_required=True),
        account(
            "1010", key("region", permissions=["reading"], ip_whitelist=LOOPBACK), region_restricted=True
        ),
        account(
            "1011", key("nofut", permissions=[*TRADE, "futures"], ip_whitelist=LOOPBACK), futures_opened=False
        ),
        account("1012", key("testnet", permissions=TRADE, environment="testnet")),
        account("1013", key("skew", permissions=TRADE, ip_whitelist=LOOPBACK, clock_offset_ms=120000)),
        account("1014", key("inactive", permissions=TRADE, ip_whitelist=LOOPBACK, enabled=False)),
        account("1015", key("deleted", permissions=TRADE, ip_whitelist=LOOPBACK, deleted=True)),
    ]
    return {"environments": ["mainnet", "testnet", "us"], "accounts": accounts, **overrides}


def scenario(**overrides: Any) -> Any:
    return parse_scenario({"seed": 1, "exchanges": {"binance": base_spec(**overrides)}})


@pytest.fixture
async def cluster() -> AsyncIterator[SimCluster]:
    async with SimCluster(scenario()) as c:
        yield c


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def sim_of(c: SimCluster, environment: str = "mainnet") -> ExchangeSim:
    return c.endpoint("binance", environment).sim


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class Answer:
    def __init__(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body!r})"


async def call(
    s: aiohttp.ClientSession,
    c: SimCluster,
    path: str,
    name: str | None = None,
    *,
    method: str = "GET",
    params: Mapping[str, str] | None = None,
    body: Mapping[str, str] | None = None,
    secret: str | None = None,
    api_key: str | None = None,
    timestamp: int | None = None,
    environment: str = "mainnet",
    sign: bool = True,
) -> Answer:
    """A request as a Binance client sends it; signed with `name`'s key unless sign=False."""
    url = c.url("binance", environment) + path
    headers: dict[str, str] = {}
    query, form = urlencode(params or {}), urlencode(body or {})
    if name is not None:
        real_key, real_secret = creds(name)
        headers["X-MBX-APIKEY"] = api_key if api_key is not None else real_key
        ts = timestamp if timestamp is not None else sim_of(c, environment).now_ms()
        stamped = f"timestamp={ts}"
        if body is not None:
            form = f"{form}&{stamped}" if form else stamped
        else:
            query = f"{query}&{stamped}" if query else stamped
        if sign:
            signature = hmac_hex(secret or real_secret, query + form)
            if body is not None:
                form += f"&signature={signature}"
            else:
                query += f"&signature={signature}"
    elif api_key is not None:
        headers["X-MBX-APIKEY"] = api_key
    if form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with s.request(
        method, url + (f"?{query}" if query else ""), data=form or None, headers=headers
    ) as r:
        payload = await r.json(content_type=None) if r.status != 404 else await r.text()
        return Answer(r.status, payload, r.headers)


def err(code: int, msg: str) -> dict[str, Any]:
    return {"code": code, "msg": msg}


def invalid_with_ip(ip: str = "127.0.0.1") -> dict[str, Any]:
    return err(-2015, f"Invalid API-key, IP, or permissions for action, request ip: {ip}")


ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}


# -- signing ---------------------------------------------------------------------------------------


def test_doc_vectors_verify() -> None:
    assert verify_hmac_signature(DOC_SECRET, f"{DOC_QUERY}&{DOC_BODY}", DOC_SIG_ALL)
    assert verify_hmac_signature(DOC_SECRET, DOC_QUERY + DOC_BODY, DOC_SIG_MIXED)
    # HMAC hex is compared case-insensitively (doc).
    assert verify_hmac_signature(DOC_SECRET, DOC_QUERY + DOC_BODY, DOC_SIG_MIXED.upper())
    assert not verify_hmac_signature(DOC_SECRET, DOC_QUERY + DOC_BODY, DOC_SIG_ALL)
    assert not verify_hmac_signature(DOC_SECRET[:-1] + "k", f"{DOC_QUERY}&{DOC_BODY}", DOC_SIG_ALL)
    assert not verify_hmac_signature(DOC_SECRET, f"{DOC_QUERY}&{DOC_BODY}", "é" + DOC_SIG_ALL[1:])


def test_split_signature_joins_query_and_body_without_separator() -> None:
    total, sig = split_signature(DOC_QUERY, f"{DOC_BODY}&signature={DOC_SIG_MIXED}")
    assert (total, sig) == (DOC_QUERY + DOC_BODY, DOC_SIG_MIXED)
    total, sig = split_signature(f"{DOC_QUERY}&signature=abc", "")
    assert (total, sig) == (DOC_QUERY, "abc")
    assert split_signature("a=1", "b=2") == ("a=1b=2", None)


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (DOC_QUERY, f"{DOC_BODY}&signature={DOC_SIG_MIXED}"),  # example 3: mixed
        ("", f"{DOC_QUERY}&{DOC_BODY}&signature={DOC_SIG_ALL}"),  # example 2: body only
        (f"{DOC_QUERY}&{DOC_BODY}&signature={DOC_SIG_ALL}", ""),  # example 1: query only
    ],
)
async def test_doc_vectors_over_http(session: aiohttp.ClientSession, query: str, body: str) -> None:
    spec = {"accounts": [account("1", {"api_key": DOC_KEY, "secret": DOC_SECRET, "permissions": TRADE})]}
    async with SimCluster(parse_scenario({"exchanges": {"binance": spec}})) as c:
        sim = sim_of(c)
        # Put the exchange's clock 0.5 s after the documented timestamp.
        sim.spec.clock_offset_ms = DOC_TIMESTAMP + 500 - int(time.time() * 1000)
        url = c.url("binance") + "/api/v3/order/test" + (f"?{query}" if query else "")
        headers = {"X-MBX-APIKEY": DOC_KEY, "Content-Type": "application/x-www-form-urlencoded"}
        async with session.post(url, data=body, headers=headers) as r:
            assert (r.status, await r.json()) == (200, {})
        # One changed byte and the same signature no longer holds.
        tampered_url, tampered_body = (x.replace("price=0.1", "price=0.2") for x in (url, body))
        async with session.post(tampered_url, data=tampered_body, headers=headers) as r:
            assert (r.status, await r.json()) == (400, err(-1022, "Signature for this request is not valid."))


# -- public endpoints -------------------------------------------------------------------------------


async def test_public_endpoints_need_no_key(cluster: SimCluster, session: aiohttp.ClientSession) -> None:
    sim_of(cluster).spec.clock_offset_ms = 3_600_000
    before = int(time.time() * 1000) + 3_600_000
    ping = await call(session, cluster, "/api/v3/ping")
    t = await call(session, cluster, "/api/v3/time")
    status = await call(session, cluster, "/sapi/v1/system/status")
    fping = await call(session, cluster, "/fapi/v1/ping")
    ftime = await call(session, cluster, "/fapi/v1/time")
    assert (ping.status, ping.body, fping.body) == (200, {}, {})
    # The server time includes the scenario's clock offset.
    assert before <= t.body["serverTime"] <= int(time.time() * 1000) + 3_600_000
    assert before <= ftime.body["serverTime"] <= int(time.time() * 1000) + 3_600_000
    assert status.body == {"status": 0, "msg": "normal"}
    assert [ping.headers["X-MBX-USED-WEIGHT-1M"], t.headers["X-MBX-USED-WEIGHT-1M"]] == ["1", "2"]
    assert status.headers["X-SAPI-USED-IP-WEIGHT-1M"] == "1"
    assert ftime.headers["X-MBX-USED-WEIGHT-1M"] == "2"  # futures weight is counted apart from spot


# -- every error cause -----------------------------------------------------------------------------

M_FORMAT = "API-key format invalid."
M_SIGNATURE = "Signature for this request is not valid."
M_AHEAD = "Timestamp for this request was 1000ms ahead of the server's time."
M_OUTSIDE = "Timestamp for this request is outside of the recvWindow."
M_KYC = "Your identity verification has been rejected. Please complete identity verification again."
M_FROZEN = "This account may not place or cancel orders."
RESTRICTIONS = "/sapi/v1/account/apiRestrictions"
TEST_ORDER = {"path": "/api/v3/order/test", "method": "POST"}


def mandatory(name: str) -> dict[str, Any]:
    return err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def case(case_id: str, status: int, answer: Any, path: str, name: str | None = "ok", **kw: Any) -> Any:
    """One cause: request `path` with `name`'s key (kw: call arguments), expect `status` and `answer`."""
    return pytest.param({"path": path, "name": name, **kw}, status, answer, id=case_id)


SPOT = "/api/v3/account"
CASES = [
    case("unknown key", 401, err(-2015, INVALID), SPOT, api_key="A" * 64),
    case("unknown key sapi", 401, invalid_with_ip(), RESTRICTIONS, api_key="A" * 64),
    case("deleted key", 401, err(-2015, INVALID), SPOT, "deleted"),
    case("not activated key", 401, err(-2015, INVALID), SPOT, "inactive"),
    case("key too short", 401, err(-2014, M_FORMAT), SPOT, api_key="A" * 63),
    case("key bad chars", 401, err(-2014, M_FORMAT), SPOT, api_key="A" * 63 + "-"),
    case("no key header", 401, err(-2014, M_FORMAT), SPOT, None),
    case("bad signature", 400, err(-1022, M_SIGNATURE), SPOT, secret=creds("read")[1]),
    case("no signature", 400, mandatory("signature"), SPOT, sign=False),
    case("no timestamp", 400, mandatory("timestamp"), SPOT, timestamp="none"),
    case("ip not allowed", 401, err(-2015, INVALID), SPOT, "wl"),
    case("ip not allowed sapi", 401, invalid_with_ip(), RESTRICTIONS, "wl"),
    case("no trade permission", 401, err(-2015, INVALID), name="read", body=ORDER, **TEST_ORDER),
    case("no futures permission", 401, invalid_with_ip(), "/fapi/v2/account", "read"),
    case("futures not opened", 401, invalid_with_ip(), "/fapi/v3/account", "nofut"),
    case("trading authority lapsed", 401, err(-2015, INVALID), name="lapsed", body=ORDER, **TEST_ORDER),
    case("whitelisted key expired", 401, invalid_with_ip(), RESTRICTIONS, "gone"),
    case("frozen order", 400, err(-2010, M_FROZEN), name="frozen", body=ORDER, **TEST_ORDER),
    case("frozen status", 200, {"data": "Frozen"}, "/sapi/v1/account/status", "frozen"),
    case("banned", 401, err(-2015, INVALID), SPOT, "banned"),
    case("api disabled", 401, err(-2017, "API Keys are locked on this account."), SPOT, "apioff"),
    case("kyc required sapi", 400, err(200003903, M_KYC), RESTRICTIONS, "kyc"),
    case("region restricted", 451, err(0, REGION_MSG), SPOT, "region"),
    # Region is answered before the permission check: the whole account is blocked.
    case("region before permission", 451, err(0, REGION_MSG), name="region", body=ORDER, **TEST_ORDER),
    case("testnet key on mainnet", 401, err(-2015, INVALID), SPOT, "testnet"),
    case("testnet key on mainnet sapi", 401, invalid_with_ip(), RESTRICTIONS, "testnet"),
    case("timestamp ahead", 400, err(-1021, M_AHEAD), SPOT, timestamp="+1500"),
    case("timestamp too old", 400, err(-1021, M_OUTSIDE), SPOT, timestamp="-5001"),
    case("key clock offset", 400, err(-1021, M_OUTSIDE), SPOT, "skew"),
    case(
        "recvWindow too large",
        400,
        err(-1131, "recvWindow must be less than 60000."),
        SPOT,
        params={"recvWindow": "60001"},
    ),
    case("no symbol", 400, mandatory("symbol"), "/api/v3/myTrades"),
    case("no coin", 400, mandatory("coin"), "/sapi/v1/capital/deposit/address"),
    case(
        "no deposit address",
        400,
        err(-4018, "We don't have this asset."),
        "/sapi/v1/capital/deposit/address",
        params={"coin": "ETH"},
    ),
    case("bad side", 400, err(-1117, "Invalid side."), body={**ORDER, "side": "HOLD"}, **TEST_ORDER),
    case("bad type", 400, err(-1116, "Invalid orderType."), body={**ORDER, "type": "ICEBERG"}, **TEST_ORDER),
    case(
        "limit without price",
        400,
        mandatory("price"),
        body={**ORDER, "type": "LIMIT", "timeInForce": "GTC"},
        **TEST_ORDER,
    ),
    # Check order: IP before signature, timestamp before signature, signature before account flags.
    case("ip before signature", 401, err(-2015, INVALID), SPOT, "wl", secret=creds("ok")[1]),
    case(
        "timestamp before signature",
        400,
        err(-1021, M_OUTSIDE),
        SPOT,
        timestamp="-6000",
        secret=creds("read")[1],
    ),
    case("signature before flags", 400, err(-1022, M_SIGNATURE), SPOT, "banned", secret=creds("ok")[1]),
]


@pytest.mark.parametrize(("args", "status", "body"), CASES)
async def test_error_causes(
    cluster: SimCluster, session: aiohttp.ClientSession, args: dict[str, Any], status: int, body: Any
) -> None:
    args = dict(args)
    ts = args.pop("timestamp", None)
    if ts == "none":
        answer = await _call_without_timestamp(session, cluster, args["name"], args["path"])
    else:
        if ts is not None:
            args["timestamp"] = sim_of(cluster).now_ms() + int(ts)
        answer = await call(session, cluster, **args)
    assert (answer.status, answer.body) == (status, body)


async def _call_without_timestamp(s: aiohttp.ClientSession, c: SimCluster, name: str, path: str) -> Answer:
    api_key, secret = creds(name)
    query = "recvWindow=5000"
    url = f"{c.url('binance')}{path}?{query}&signature={hmac_hex(secret, query)}"
    async with s.get(url, headers={"X-MBX-APIKEY": api_key}) as r:
        return Answer(r.status, await r.json(), r.headers)


async def test_healthy_key_reads(cluster: SimCluster, session: aiohttp.ClientSession) -> None:
    acct = await call(session, cluster, "/api/v3/account", "ok")
    assert acct.status == 200
    assert acct.body["uid"] == 354937868
    assert acct.body["canTrade"] is True
    assert acct.body["balances"] == [
        {"asset": "BTC", "free": "0.50000000", "locked": "0.00000000"},
        {"asset": "USDT", "free": "1250.50000000", "locked": "0.00000000"},
        {"asset": "ETH", "free": "0.00000000", "locked": "0.00000000"},
    ]
    omitted = await call(session, cluster, "/api/v3/account", "ok", params={"omitZeroBalances": "true"})
    assert [b["asset"] for b in omitted.body["balances"]] == ["BTC", "USDT"]
    assert acct.headers["X-MBX-USED-WEIGHT-1M"] == "20"
    trades = await call(session, cluster, "/api/v3/myTrades", "ok", params={"symbol": "BTCUSDT"})
    assert (trades.status, trades.body, trades.headers["X-MBX-USED-WEIGHT-1M"]) == (200, [], "60")
    address = await call(session, cluster, "/sapi/v1/capital/deposit/address", "ok", params={"coin": "usdt"})
    assert address.body == {"address": "0xabc", "coin": "USDT", "tag": "", "url": ""}
    assert address.headers["X-SAPI-USED-IP-WEIGHT-1M"] == "10"
    order = await call(session, cluster, "/api/v3/order/test", "ok", method="POST", body=ORDER)
    assert (order.status, order.body) == (200, {})
    # The parameters of a test order may also travel in the query string.
    order_q = await call(session, cluster, "/api/v3/order/test", "ok", method="POST", params=ORDER)
    assert (order_q.status, order_q.body) == (200, {})
    commission = await call(
        session,
        cluster,
        "/api/v3/order/test",
        "ok",
        method="POST",
        body={**ORDER, "computeCommissionRates": "true"},
    )
    assert commission.body["standardCommissionForOrder"]["taker"] == "0.00100000"
    assert commission.headers["X-MBX-USED-WEIGHT-1M"] == str(20 + 20 + 20 + 1 + 1 + 20)
    info = await call(session, cluster, "/sapi/v1/account/info", "ok")
    assert info.body["isFutureEnabled"] is True
    status = await call(session, cluster, "/sapi/v1/account/status", "ok")
    assert status.body == {"data": "Normal"}
    trading = await call(session, cluster, "/sapi/v1/account/apiTradingStatus", "ok")
    assert trading.body["data"]["isLocked"] is False
    for path in ("/fapi/v2/account", "/fapi/v3/account"):
        fut = await call(session, cluster, path, "ok")
        assert fut.status == 200 and fut.body["assets"][0]["asset"] == "USDT"
    kyc_reads = await call(session, cluster, "/api/v3/account", "kyc")
    assert kyc_reads.status == 200  # KYC blocks the wallet (sapi) endpoints only
    frozen = await call(session, cluster, "/api/v3/account", "frozen")
    assert (frozen.status, frozen.body["canTrade"], frozen.body["canWithdraw"]) == (200, False, False)
    nofut = await call(session, cluster, "/sapi/v1/account/info", "nofut")
    assert nofut.body["isFutureEnabled"] is False


@pytest.mark.parametrize(
    ("settings", "name", "path", "status", "body"),
    [
        (
            {"banned_answer": "not_authorized"},
            "banned",
            "/api/v3/account",
            401,
            err(-1002, "You are not authorized to execute this request."),
        ),
        ({"api_disabled_answer": "invalid_key"}, "apioff", "/api/v3/account", 401, err(-2015, INVALID)),
        (
            {"http_status_kyc_required": 403},
            "kyc",
            "/sapi/v1/account/status",
            403,
            err(
                200003903,
                "Your identity verification has been rejected. Please complete identity verification again.",
            ),
        ),
        ({"invalid_key_ip_suffix_families": []}, "wl", "/sapi/v1/account/status", 401, err(-2015, INVALID)),
        ({"ip_restricted_key_expiry": "trading_authority"}, "gone", "/api/v3/account", 200, None),
        (
            {"frozen_account_status": "Account is frozen"},
            "frozen",
            "/sapi/v1/account/status",
            200,
            {"data": "Account is frozen"},
        ),
        (
            {
                "deposit_address_missing_code": -5003,
                "deposit_address_missing_msg": "You don't have this asset.",
            },
            "ok",
            "/sapi/v1/capital/deposit/address?coin=XRP",
            400,
            err(-5003, "You don't have this asset."),
        ),
    ],
)
async def test_settings_switch_unverified_answers(
    session: aiohttp.ClientSession, settings: dict[str, Any], name: str, path: str, status: int, body: Any
) -> None:
    async with SimCluster(scenario(settings=settings)) as c:
        path, _, query = path.partition("?")
        answer = await call(session, c, path, name, params=dict([query.split("=")]) if query else None)
        assert answer.status == status
        if body is not None:
            assert answer.body == body


async def test_recv_window_over_max_and_check_order_settings(session: aiohttp.ClientSession) -> None:
    settings = {"recv_window_over_max_code": -1130, "timestamp_before_signature": False}
    async with SimCluster(scenario(settings=settings)) as c:
        big = await call(session, c, "/api/v3/account", "ok", params={"recvWindow": "70000"})
        assert (big.status, big.body) == (
            400,
            err(-1130, "Data sent for parameter 'recvWindow' is not valid."),
        )
        stale = sim_of(c).now_ms() - 6000
        both = await call(session, c, "/api/v3/account", "ok", timestamp=stale, secret=creds("read")[1])
        assert both.body == err(-1022, "Signature for this request is not valid.")
        # A wider recvWindow (with decimals, as the doc allows) accepts the same stale timestamp.
        wide = await call(
            session, c, "/api/v3/account", "ok", timestamp=stale, params={"recvWindow": "7000.5"}
        )
        assert wide.status == 200


def test_bad_setting_values_are_refused_at_start() -> None:
    with pytest.raises(ScenarioError, match="banned_answer"):
        BinanceSim(scenario(settings={"banned_answer": "teapot"}).exchanges["binance"], "mainnet")
    with pytest.raises(ScenarioError, match="unknown name"):
        BinanceSim(scenario(settings={"no_such_setting": 1}).exchanges["binance"], "mainnet")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"api_key": "k" * 63}, "api_key must be 64"),
        ({"secret": "s" * 63 + "!"}, "secret must be 64"),
        ({"client_secret": "c" * 65}, "client_secret must be 64"),
        ({"passphrase": "hunter22"}, "no passphrase"),
    ],
)
def test_scenario_keys_must_follow_binance_format(fields: dict[str, Any], problem: str) -> None:
    spec = {"accounts": [account("1", {**key("x"), **fields})]}
    with pytest.raises(ScenarioError, match=problem) as raised:
        BinanceSim(parse_scenario({"exchanges": {"binance": spec}}).exchanges["binance"], "mainnet")
    assert "s" * 63 not in str(raised.value)  # a secret is never echoed


# -- maintenance and injected faults ---------------------------------------------------------------


async def test_maintenance(session: aiohttp.ClientSession) -> None:
    async with SimCluster(scenario(maintenance=[{"start": "-1h", "end": "+1h"}])) as c:
        status = await call(session, c, "/sapi/v1/system/status")
        assert (status.status, status.body) == (200, {"status": 1, "msg": "system_maintenance"})
        assert (await call(session, c, "/api/v3/time")).status == 200
        sapi = await call(session, c, "/sapi/v1/account/apiRestrictions", "ok")
        assert (sapi.status, sapi.body) == (503, err(1, "System is under maintenance."))
        spot = await call(session, c, "/api/v3/account", "ok")
        assert (spot.status, spot.body) == (
            503,
            err(
                -1008,
                "Server is currently overloaded with other requests. Please try again in a few minutes.",
            ),
        )
        # The window ends (as the admin endpoint would end it): the next request is served.
        sim_of(c).spec.maintenance = []
        assert (await call(session, c, "/api/v3/account", "ok")).status == 200


async def test_injected_server_errors(session: aiohttp.ClientSession) -> None:
    async with SimCluster(scenario(faults={"error_rate": 1.0})) as c:
        answer = await call(session, c, "/api/v3/account", "ok")
        assert (answer.status, answer.body) == (
            500,
            err(-1001, "Internal error; unable to process your request. Please try again."),
        )


# -- permissions -----------------------------------------------------------------------------------

FLAG_ORDER = [
    "ipRestrict",
    "createTime",
    "enableReading",
    "enableWithdrawals",
    "enableInternalTransfer",
    "enableMargin",
    "enableFutures",
    "permitsUniversalTransfer",
    "enableVanillaOptions",
    "enableFixApiTrade",
    "enableFixReadOnly",
    "enableSpotAndMarginTrading",
    "enablePortfolioMarginTrading",
]


async def test_permission_rendering(session: aiohttp.ClientSession) -> None:
    created = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    expires = datetime.now(UTC) + timedelta(days=12)
    spec = base_spec()
    spec["accounts"] = [
        account(
            "1",
            key("all", permissions=ALL_PERMISSIONS, ip_whitelist=LOOPBACK, created_at=created.isoformat()),
        ),
        account("2", key("some", permissions=["reading", "margin", "fix_read_only"], ip_whitelist=LOOPBACK)),
        # Without a whitelist Binance never grants withdrawals, and spot trading carries an expiry.
        account("3", key("open", permissions=[*TRADE, "withdrawals"], expires_at=expires.isoformat())),
        account("4", key("open-read", permissions=["reading"], expires_at=expires.isoformat())),
    ]
    async with SimCluster(parse_scenario({"exchanges": {"binance": spec}})) as c:
        full = (await call(session, c, "/sapi/v1/account/apiRestrictions", "all")).body
        assert list(full) == FLAG_ORDER
        assert full["createTime"] == int(created.timestamp() * 1000)
        assert all(full[f] is True for f in FLAG_ORDER if f != "createTime")
        some = (await call(session, c, "/sapi/v1/account/apiRestrictions", "some")).body
        assert {f for f in FLAG_ORDER if some[f] is True} == {
            "ipRestrict",
            "enableReading",
            "enableMargin",
            "enableFixReadOnly",
        }
        opened = (await call(session, c, "/sapi/v1/account/apiRestrictions", "open")).body
        assert opened["ipRestrict"] is False and opened["enableWithdrawals"] is False
        assert opened["enableSpotAndMarginTrading"] is True
        assert opened["tradingAuthorityExpirationTime"] == int(expires.timestamp() * 1000)
        # No trading permission: no trading authority to expire.
        read = (await call(session, c, "/sapi/v1/account/apiRestrictions", "open-read")).body
        assert "tradingAuthorityExpirationTime" not in read
        sim_of(c).spec.settings["trading_authority_expiration_field"] = False
        hidden = (await call(session, c, "/sapi/v1/account/apiRestrictions", "open")).body
        assert "tradingAuthorityExpirationTime" not in hidden


async def test_lapsed_trading_authority_reads_false(
    cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    body = (await call(session, cluster, "/sapi/v1/account/apiRestrictions", "lapsed")).body
    assert body["enableSpotAndMarginTrading"] is False
    assert body["tradingAuthorityExpirationTime"] < sim_of(cluster).now_ms()
    assert (await call(session, cluster, "/api/v3/account", "lapsed")).status == 200  # reads keep working
    nofut = (await call(session, cluster, "/sapi/v1/account/apiRestrictions", "nofut")).body
    assert nofut["enableFutures"] is False


# -- IP whitelist and environments -------------------------------------------------------------------


@asynccontextmanager
async def session_from(ip: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0))) as s:
        yield s


async def test_ip_whitelist_uses_the_peer_address() -> None:
    spec = base_spec()
    spec["accounts"] = [account("1", key("two", permissions=TRADE, ip_whitelist=["127.0.0.2"]))]
    async with (
        SimCluster(parse_scenario({"exchanges": {"binance": spec}})) as c,
        session_from("127.0.0.3") as outside,
        session_from("127.0.0.2") as inside,
    ):
        refused = await call(outside, c, "/sapi/v1/account/apiRestrictions", "two")
        assert (refused.status, refused.body) == (401, invalid_with_ip("127.0.0.3"))
        spot = await call(outside, c, "/api/v3/account", "two")
        assert (spot.status, spot.body) == (401, err(-2015, INVALID))
        allowed = await call(inside, c, "/sapi/v1/account/apiRestrictions", "two")
        assert allowed.status == 200 and allowed.body["ipRestrict"] is True


async def test_environments(cluster: SimCluster, session: aiohttp.ClientSession) -> None:
    assert {ep.environment for ep in cluster.endpoints} == {"mainnet", "testnet", "us"}
    assert len({ep.url for ep in cluster.endpoints}) == 3
    # The testnet key works on the testnet, and a mainnet key there is unknown.
    on_testnet = await call(session, cluster, "/api/v3/account", "testnet", environment="testnet")
    assert (on_testnet.status, on_testnet.body["uid"]) == (200, 1012)
    mainnet_key = await call(session, cluster, "/api/v3/account", "ok", environment="testnet")
    assert (mainnet_key.status, mainnet_key.body) == (401, err(-2015, INVALID))
    # A key of another environment answers exactly like a key nobody created.
    unknown = await call(session, cluster, "/api/v3/account", "ok", api_key="Z" * 64)
    wrong_env = await call(session, cluster, "/api/v3/account", "testnet")
    assert (wrong_env.status, wrong_env.body) == (unknown.status, unknown.body)
    # The spot testnet serves /api only; Binance.US has no futures.
    assert (await call(session, cluster, "/sapi/v1/system/status", environment="testnet")).status == 404
    assert (await call(session, cluster, "/fapi/v1/ping", environment="us")).status == 404
    assert (await call(session, cluster, "/sapi/v1/system/status", environment="us")).status == 200


# -- admin-style mutation is seen on the next request -----------------------------------------------


async def test_state_changes_show_on_next_request(
    cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    spec = sim_of(cluster).spec
    acct = next(a for a in spec.accounts if a.id == "354937868")
    k = acct.keys[0]

    async def order() -> Answer:
        return await call(session, cluster, "/api/v3/order/test", "ok", method="POST", body=ORDER)

    assert (await order()).status == 200
    k.permissions = ["reading"]
    assert (await order()).body == err(-2015, INVALID)
    k.permissions = [*TRADE, "withdrawals"]
    restrictions = (await call(session, cluster, "/sapi/v1/account/apiRestrictions", "ok")).body
    assert restrictions["enableWithdrawals"] is True
    acct.frozen = True
    assert (await order()).body == err(-2010, "This account may not place or cancel orders.")
    acct.frozen = False
    k.ip_whitelist = ["10.0.0.1"]
    assert (await order()).status == 401
    k.ip_whitelist = []
    k.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert (await order()).status == 401  # trading authority lapsed
    assert (await call(session, cluster, "/api/v3/account", "ok")).status == 200
    k.ip_whitelist = LOOPBACK
    assert (await call(session, cluster, "/api/v3/account", "ok")).status == 401  # whitelisted: key gone
    k.expires_at = None
    acct.futures_opened = False
    assert (await call(session, cluster, "/fapi/v2/account", "ok")).status == 401
    acct.futures_opened = True
    k.deleted = True
    assert (await call(session, cluster, "/api/v3/account", "ok")).body == err(-2015, INVALID)


# -- request weight and bans -----------------------------------------------------------------------


def start_of_next_window(sim: ExchangeSim, after_s: float = 0) -> None:
    """Set the exchange clock 1 s into a fresh minute window, at least `after_s` ahead."""
    now = sim.now_ms() + after_s * 1000
    target = (math.floor(now / 60000) + 1) * 60000 + 1000
    sim.spec.clock_offset_ms += int(target - sim.now_ms())


async def test_ip_weight_limit_then_ban(session: aiohttp.ClientSession) -> None:
    settings = {"ban_after_rejected_requests": 2, "ban_initial_s": 120}
    async with SimCluster(scenario(limits={"api_ip_weight_per_minute": 3}, settings=settings)) as c:
        sim = sim_of(c)
        start_of_next_window(sim)
        used = [(await call(session, c, "/api/v3/ping")).headers["X-MBX-USED-WEIGHT-1M"] for _ in range(3)]
        assert used == ["1", "2", "3"]
        limited = [await call(session, c, "/api/v3/ping") for _ in range(3)]
        too_much = err(
            -1003,
            "Too much request weight used; current limit is 3 request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
        )
        assert [(a.status, a.body) for a in limited] == [(429, too_much)] * 3
        assert 57 <= int(limited[0].headers["Retry-After"]) <= 60
        banned = await call(session, c, "/api/v3/ping")
        until = sim.now_ms() + 120_000
        assert banned.status == 418
        assert banned.body["code"] == -1003
        banned_until = int(banned.body["msg"].split("banned until ")[1].split(".")[0])
        assert until - 2000 <= banned_until <= until
        assert banned.body["msg"] == (
            f"Way too much request weight used; IP banned until {banned_until}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        assert banned.headers["Retry-After"] == "120"
        # The ban covers every API family of that IP, and no other IP.
        assert (await call(session, c, "/sapi/v1/system/status")).status == 418
        async with session_from("127.0.0.4") as other:
            assert (await call(other, c, "/api/v3/ping")).status == 200
        # After the ban: served again; a second offence is banned twice as long.
        start_of_next_window(sim, after_s=121)
        assert (await call(session, c, "/api/v3/ping")).status == 200
        statuses = [(await call(session, c, "/api/v3/ping")).status for _ in range(5)]
        assert statuses == [200, 200, 429, 429, 429]
        again = await call(session, c, "/api/v3/ping")
        assert (again.status, again.headers["Retry-After"]) == (418, "240")
        # The admin endpoint's reset-limits lifts the ban and forgets the used weight.
        sim.reset_limits()
        fresh = await call(session, c, "/api/v3/ping")
        assert (fresh.status, fresh.headers["X-MBX-USED-WEIGHT-1M"]) == (200, "1")


async def test_sapi_uid_weight_is_per_account_across_ips() -> None:
    limits = {"sapi_uid_weight_per_minute": 2}
    async with SimCluster(scenario(limits=limits)) as c:
        start_of_next_window(sim_of(c))
        async with session_from("127.0.0.1") as one, session_from("127.0.0.4") as two:
            first = await call(one, c, "/sapi/v1/account/status", "ok")
            second = await call(two, c, "/sapi/v1/account/status", "ok")
            third = await call(one, c, "/sapi/v1/account/status", "ok")
            other_account = await call(one, c, "/sapi/v1/account/status", "read")
    assert [first.status, second.status, third.status, other_account.status] == [200, 200, 429, 200]
    assert [a.headers["X-SAPI-USED-UID-WEIGHT-1M"] for a in (first, second, third)] == ["1", "2", "3"]
    assert [a.headers["X-SAPI-USED-IP-WEIGHT-1M"] for a in (first, second, third)] == ["1", "1", "2"]
    assert third.body["code"] == -1003 and "current limit is 2 request weight" in third.body["msg"]
    assert 1 <= int(third.headers["Retry-After"]) <= 60


# -- the shipped demo scenario ---------------------------------------------------------------------


async def test_demo_scenario_keys_show_their_intent(session: aiohttp.ClientSession) -> None:
    from pathlib import Path

    import keysentry.sim

    path = Path(keysentry.sim.__file__).parent / "scenarios" / "demo-binance.yaml"
    demo = load_scenario(path)
    keys = [(k, a) for a in demo.exchanges["binance"].accounts for k in a.keys]
    intents = {k.intent for k, _ in keys}
    assert intents >= {
        "connected",
        "expires_soon",
        "expired",
        "invalid_key",
        "secret_mismatch",
        "clock_skew",
        "ip_not_allowed",
        "account_restricted",
        "withdrawal_enabled",
        "incorrect_permissions",
        "inactive_futures",
    }
    assert "temporary_issue" not in intents
    async with SimCluster(demo) as c:
        sim = sim_of(c)
        for k, _ in keys:
            query = f"timestamp={sim.now_ms()}"
            sig = hmac_hex(k.client_secret or k.secret, query)
            url = f"{c.url('binance')}/sapi/v1/account/apiRestrictions?{query}&signature={sig}"
            async with session.get(url, headers={"X-MBX-APIKEY": k.api_key}) as r:
                body = await r.json()
            expected_ok = k.intent in {
                "connected",
                "expires_soon",
                "expired",
                "withdrawal_enabled",
                "incorrect_permissions",
                "inactive_futures",
            } or (k.intent == "account_restricted" and k.label.startswith("account frozen"))
            assert (r.status == 200) == expected_ok, (k.label, r.status, body)
            if k.intent == "expired":
                assert body["enableSpotAndMarginTrading"] is False
            if k.intent == "withdrawal_enabled":
                assert body["enableWithdrawals"] is True


# -- ccxt, a client nobody here wrote -------------------------------------------------------------------


@asynccontextmanager
async def ccxt_binance(
    c: SimCluster, name: str, *, secret: str | None = None, local_ip: str = "127.0.0.1"
) -> AsyncIterator[tuple[Any, list[int]]]:
    import ccxt.async_support as ccxt

    statuses: list[int] = []

    async def on_end(_s: aiohttp.ClientSession, _ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        statuses.append(params.response.status)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    api_key, real_secret = creds(name)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(local_ip, 0)), trace_configs=[trace]
    ) as http:
        exchange = ccxt.binance(
            {
                "apiKey": api_key,
                "secret": secret or real_secret,
                "session": http,
                "options": {"adjustForTimeDifference": False, "fetchCurrencies": False},
            }
        )
        base = urlsplit(c.url("binance"))
        for family, url in exchange.urls["api"].items():
            if isinstance(url, str):
                parts = urlsplit(url)._replace(scheme=base.scheme, netloc=base.netloc)
                exchange.urls["api"][family] = urlunsplit(parts)
        try:
            yield exchange, statuses
        finally:
            await exchange.close()


async def test_ccxt_valid_key(cluster: SimCluster) -> None:
    async with ccxt_binance(cluster, "ok") as (ex, statuses):
        restrictions = await ex.sapi_get_account_apirestrictions()
        assert restrictions["enableReading"] is True and restrictions["ipRestrict"] is True
        acct = await ex.private_get_account()
        assert acct["uid"] == 354937868
        assert {b["asset"]: b["free"] for b in acct["balances"]}["USDT"] == "1250.50000000"
        assert await ex.private_post_order_test(ORDER) == {}
        fut = await ex.fapiprivatev2_get_account()
        assert fut["assets"][0]["asset"] == "USDT"
        assert statuses == [200, 200, 200, 200]


async def test_ccxt_tampered_secret(cluster: SimCluster) -> None:
    import ccxt.async_support as ccxt

    async with ccxt_binance(cluster, "ok", secret=creds("read")[1]) as (ex, statuses):
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await ex.sapi_get_account_apirestrictions()
        assert statuses == [400]


async def test_ccxt_skewed_clock(cluster: SimCluster) -> None:
    import ccxt.async_support as ccxt

    sim_of(cluster).spec.clock_offset_ms = 120_000
    async with ccxt_binance(cluster, "ok") as (ex, statuses):
        with pytest.raises(ccxt.InvalidNonce, match="outside of the recvWindow"):
            await ex.private_get_account()
        assert statuses == [400]


async def test_ccxt_outside_whitelist(cluster: SimCluster) -> None:
    import ccxt.async_support as ccxt

    k = next(a for a in sim_of(cluster).spec.accounts if a.id == "354937868").keys[0]
    k.ip_whitelist = ["127.0.0.2"]
    async with ccxt_binance(cluster, "ok", local_ip="127.0.0.3") as (ex, statuses):
        with pytest.raises(ccxt.AuthenticationError, match=r"request ip: 127\.0\.0\.3"):
            await ex.sapi_get_account_apirestrictions()
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            await ex.private_get_account()
        assert statuses == [401, 401]


async def test_ccxt_rate_limit_and_ban(session: aiohttp.ClientSession) -> None:
    import ccxt.async_support as ccxt

    tiny = scenario(limits={"api_ip_weight_per_minute": 20}, settings={"ban_after_rejected_requests": 0})
    async with SimCluster(tiny) as c:
        start_of_next_window(sim_of(c))
        async with ccxt_binance(c, "ok") as (ex, statuses):
            ex.enableRateLimit = False
            # ccxt's own way to follow an exchange clock that differs from ours.
            ex.options["timeDifference"] = -sim_of(c).spec.clock_offset_ms
            assert (await ex.private_get_account())["uid"] == 354937868
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                await ex.private_get_account()
            with pytest.raises(ccxt.DDoSProtection, match="418"):
                await ex.private_get_account()
            assert statuses == [200, 429, 418]
