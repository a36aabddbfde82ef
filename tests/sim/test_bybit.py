"""The Bybit simulator over real HTTP: wire shapes, every refusal cause, limits, and ccxt as a client.

The requests here are signed by a small helper written from Bybit's documented recipe, separate
from the simulator's verifier; ccxt's own signer checks both against a client nobody here wrote.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from keysentry.sim.bybit import (
    PERMISSION_GROUPS,
    BybitSim,
    expected_signature,
    origin_string,
    verify_signature,
)
from keysentry.sim.scenario import ScenarioError, load_scenario, parse_scenario
from keysentry.sim.server import SimCluster
from windows import fresh_window

DEMO = Path(__file__).parents[2] / "src/keysentry/sim/scenarios/demo-bybit.yaml"

QUERY_API = "/v5/user/query-api"
WALLET = "/v5/account/wallet-balance"
ORDER = "/v5/order/create"
POSITIONS = "/v5/position/list"


def api_key(n: int) -> str:
    return f"BYBITKEY{n:010d}"  # 18 letters/digits


def secret(n: int) -> str:
    return f"BybitSecret{n:025d}"  # 36 letters/digits


def key(n: int, **fields: Any) -> dict[str, Any]:
    return {"api_key": api_key(n), "secret": secret(n), "label": f"key {n}", **fields}


def account(uid: int, *keys: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return {"id": str(uid), "keys": list(keys), **flags}


def scenario(*accounts: dict[str, Any], **exchange: Any) -> Any:
    return parse_scenario({"seed": 1, "exchanges": {"bybit": {"accounts": list(accounts), **exchange}}})


@asynccontextmanager
async def running(*accounts: dict[str, Any], **exchange: Any) -> AsyncIterator[SimCluster]:
    async with SimCluster(scenario(*accounts, **exchange)) as cluster:
        yield cluster


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any

    @property
    def code(self) -> int:
        return int(self.body["retCode"])


def sign_headers(
    key_: str, secret_: str, payload: str, *, ts: int | None = None, recv: str = "5000"
) -> dict[str, str]:
    stamp = str(int(time.time() * 1000) if ts is None else ts)
    # Written from the doc, independently of the simulator: timestamp + key + recv_window + payload.
    sig = hmac.new(secret_.encode(), f"{stamp}{key_}{recv}{payload}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-BAPI-API-KEY": key_, "X-BAPI-TIMESTAMP": stamp, "X-BAPI-SIGN": sig}
    if recv:
        headers["X-BAPI-RECV-WINDOW"] = recv
    return headers


async def call(
    session: aiohttp.ClientSession,
    base: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    n: int | None = None,
    key_: str | None = None,
    secret_: str | None = None,
    method: str = "GET",
    ts: int | None = None,
    recv: str = "5000",
    headers: dict[str, str] | None = None,
) -> Answer:
    url = base + path
    data = None
    if method == "GET":
        payload = urlencode(params or {})
        if payload:
            url += "?" + payload
    else:
        payload = data = json.dumps(params or {})
    if headers is None and (n is not None or key_ is not None):
        k = key_ if key_ is not None else api_key(n or 0)
        s = secret_ if secret_ is not None else secret(n or 0)
        headers = sign_headers(k, s, payload, ts=ts, recv=recv)
    if data is not None:
        headers = {**(headers or {}), "Content-Type": "application/json"}
    async with session.request(method, url, data=data, headers=headers) as resp:
        text = await resp.text()
        body = json.loads(text) if resp.content_type == "application/json" else text
        return Answer(resp.status, body, resp.headers)


def assert_error(answer: Answer, status: int, code: int, message: str) -> None:
    assert answer.status == status, answer.body
    assert answer.body == {
        "retCode": code,
        "retMsg": message,
        "result": {},
        "retExtInfo": {},
        "time": answer.body["time"],
    }
    assert abs(answer.body["time"] - time.time() * 1000) < 60_000


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def session_from(ip: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))


# -- signing -----------------------------------------------------------------------------------


def test_reference_signing_vector_verifies() -> None:
    # shared/reference/exchange-api.md 3.2: GET /v5/user/query-api with an empty query string.
    origin = origin_string("1658384314791", "XXXXXXXXXX", "5000", "")
    vector = "8d74628db9cf79f1d486af80722d4b2bd78f7d7a5d18bc968f7b28c5df75b7d1"
    assert expected_signature("test-secret", origin) == vector
    assert verify_signature("test-secret", origin, vector)
    assert not verify_signature("test-secret2", origin, vector)
    assert not verify_signature(
        "test-secret", origin_string("1658384314792", "XXXXXXXXXX", "5000", ""), vector
    )
    assert not verify_signature("test-secret", origin, vector.upper())


# -- public endpoints --------------------------------------------------------------------------


async def test_server_time_and_status_need_no_auth_and_follow_the_exchange_clock(
    session: aiohttp.ClientSession,
) -> None:
    async with running(clock_offset_ms=-3_600_000) as c:
        t = await call(session, c.url("bybit"), "/v5/market/time")
        status = await call(session, c.url("bybit"), "/v5/system/status")
    assert t.status == 200 and t.code == 0 and t.body["retMsg"] == "OK"
    exchange_s = time.time() - 3600
    assert abs(int(t.body["result"]["timeSecond"]) - exchange_s) < 5
    assert int(t.body["result"]["timeNano"]) // 1_000_000_000 == int(t.body["result"]["timeSecond"])
    assert status.status == 200 and status.body["result"] == {"list": []}


# -- every refusal cause -------------------------------------------------------------------------

INVALID = "API key is invalid."
PERMISSION = "Permission denied, please check your API key permissions."

CAUSES = (
    account(
        1001,
        key(1, permissions=["Spot.SpotTrade", "ContractTrade.Order", "ContractTrade.Position"]),
        key(2, deleted=True),
        key(3, enabled=False),
        key(4, environment="testnet"),
        key(5, expires_at="-1d", ip_whitelist=["127.0.0.0/8"]),
        key(6, created_at="-91d"),
        key(7, ip_whitelist=["127.0.0.2"]),
        key(13, permissions=["ReadOnly", "Spot.SpotTrade"]),
        key(14),
        balances={"USDT": "10"},
    ),
    account(1002, key(8), banned=True),
    account(1003, key(9), frozen=True),
    account(1004, key(10), api_disabled=True),
    account(1005, key(11), kyc_required=True, kyc_level=0),
    account(1006, key(12), region_restricted=True, region="US"),
    account(1007, key(15, permissions=["ContractTrade.Order"]), futures_opened=False),
)
PROBE = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "0"}


@pytest.mark.parametrize(
    ("label", "n", "key_override", "method", "path", "params", "code", "message"),
    [
        ("unknown key", None, "ZZZZZZZZZZZZZZZZZZ", "GET", QUERY_API, None, 10003, INVALID),
        ("malformed key", None, "abc def", "GET", QUERY_API, None, 10003, INVALID),
        ("deleted key", 2, None, "GET", QUERY_API, None, 10003, INVALID),
        ("not activated", 3, None, "GET", QUERY_API, None, 10003, INVALID),
        ("testnet key on mainnet", 4, None, "GET", QUERY_API, None, 10003, INVALID),
        ("expired", 5, None, "GET", QUERY_API, None, 33004, "Your api key has expired"),
        (
            "unbound 91 days",
            6,
            None,
            "GET",
            WALLET,
            {"accountType": "UNIFIED"},
            33004,
            "Your api key has expired",
        ),
        ("banned", 8, None, "GET", QUERY_API, None, 10008, "Common banned, please check your account mode"),
        ("frozen", 9, None, "GET", QUERY_API, None, 10027, "Transactions are banned."),
        ("api disabled", 10, None, "GET", QUERY_API, None, 10005, PERMISSION),
        ("kyc", 11, None, "GET", QUERY_API, None, 10024, "Compliance rules triggered"),
        (
            "region",
            12,
            None,
            "GET",
            QUERY_API,
            None,
            10009,
            "Service Restricted: Access is currently unavailable for your region. "
            "Please contact our support team for further assistance",
        ),
        ("no trade permission", 14, None, "POST", ORDER, PROBE, 10005, PERMISSION),
        ("read-only key", 13, None, "POST", ORDER, PROBE, 10005, PERMISSION),
        (
            "no contract permission",
            14,
            None,
            "GET",
            POSITIONS,
            {"category": "linear", "settleCoin": "USDT"},
            10005,
            PERMISSION,
        ),
        (
            "futures not opened",
            15,
            None,
            "GET",
            POSITIONS,
            {"category": "linear", "settleCoin": "USDT"},
            10005,
            PERMISSION,
        ),
        ("trade probe passes permission", 1, None, "POST", ORDER, PROBE, 10001, "Request parameter error."),
        (
            "linear positions need a coin",
            1,
            None,
            "GET",
            POSITIONS,
            {"category": "linear"},
            10001,
            "Request parameter error.",
        ),
        (
            "wallet needs UNIFIED",
            1,
            None,
            "GET",
            WALLET,
            {"accountType": "SPOT"},
            10001,
            "Request parameter error.",
        ),
    ],
)
async def test_refusal_causes(
    session: aiohttp.ClientSession,
    label: str,
    n: int | None,
    key_override: str | None,
    method: str,
    path: str,
    params: dict[str, Any] | None,
    code: int,
    message: str,
) -> None:
    async with running(*CAUSES, environments=["mainnet", "testnet"]) as c:
        answer = await call(
            session,
            c.url("bybit"),
            path,
            params,
            n=n,
            key_=key_override,
            secret_=None if n is not None else secret(1),
            method=method,
        )
    assert_error(answer, 200, code, message)


async def test_the_same_requests_succeed_for_a_healthy_key(session: aiohttp.ClientSession) -> None:
    # The counterpart of the refusals above: shows they come from the key's state, not the request.
    async with running(*CAUSES, environments=["mainnet", "testnet"]) as c:
        base = c.url("bybit")
        assert (await call(session, base, QUERY_API, n=1)).code == 0
        assert (
            await call(session, base, POSITIONS, {"category": "linear", "settleCoin": "USDT"}, n=1)
        ).code == 0
        placed = await call(session, base, ORDER, {**PROBE, "qty": "0.001"}, n=1, method="POST")
        assert placed.code == 0 and placed.body["result"]["orderId"]
        testnet = await call(session, c.url("bybit", "testnet"), QUERY_API, n=4)
        assert testnet.code == 0 and testnet.body["result"]["apiKey"] == api_key(4)


async def test_bad_signature_echoes_the_origin_string(session: aiohttp.ClientSession) -> None:
    async with running(account(1001, key(1))) as c:
        base = c.url("bybit")
        ts = int(time.time() * 1000)
        current = await call(session, base, WALLET, {"accountType": "UNIFIED"}, n=1, secret_=secret(2), ts=ts)
    origin = f"{ts}{api_key(1)}5000accountType=UNIFIED"
    assert_error(
        current,
        200,
        10004,
        f"Error sign, please check your signature generation algorithm: origin_string[{origin}]",
    )
    assert secret(1) not in json.dumps(current.body)

    async with running(account(1001, key(1)), settings={"sign_error_message": "legacy"}) as c:
        legacy = await call(session, c.url("bybit"), QUERY_API, n=1, secret_=secret(2), ts=ts)
    assert_error(legacy, 200, 10004, f"error sign! origin_string[{ts}{api_key(1)}5000]")


async def test_post_signature_covers_the_raw_body(session: aiohttp.ClientSession) -> None:
    async with running(account(1001, key(1, permissions=["Spot.SpotTrade"]))) as c:
        base = c.url("bybit")
        body = json.dumps({**PROBE, "qty": "1"})
        headers = sign_headers(api_key(1), secret(1), body) | {"Content-Type": "application/json"}
        tampered = body.replace('"1"', '"2"')
        async with session.post(base + ORDER, data=tampered, headers=headers) as resp:
            answer = await resp.json()
    assert answer["retCode"] == 10004 and tampered in answer["retMsg"]


@pytest.mark.parametrize("missing", ["X-BAPI-API-KEY", "X-BAPI-TIMESTAMP", "X-BAPI-SIGN"])
async def test_missing_auth_header(session: aiohttp.ClientSession, missing: str) -> None:
    async with running(account(1001, key(1))) as c:
        headers = sign_headers(api_key(1), secret(1), "")
        del headers[missing]
        answer = await call(session, c.url("bybit"), QUERY_API, headers=headers)
    assert_error(answer, 401, 10007, "User authentication failed.")


SKEW = re.compile(
    r"invalid request, please check your server timestamp or recv_window param\. "
    r"req_timestamp\[(\d+)\],server_timestamp\[(\d+)\],recv_window\[(\d+)\]"
)


@pytest.mark.parametrize(
    ("offset_ms", "recv", "accepted"),
    [(-6_000, "5000", False), (-4_000, "5000", True), (-9_000, "10000", True), (600, "5000", True), (1_500, "5000", False)],
)  # fmt: skip
async def test_timestamp_window(
    session: aiohttp.ClientSession, offset_ms: int, recv: str, accepted: bool
) -> None:
    async with running(account(1001, key(1))) as c:
        ts = int(time.time() * 1000) + offset_ms
        answer = await call(session, c.url("bybit"), QUERY_API, n=1, ts=ts, recv=recv)
    if accepted:
        assert answer.code == 0
        return
    assert answer.status == 200 and answer.code == 10002
    m = SKEW.fullmatch(answer.body["retMsg"])
    assert m is not None, answer.body["retMsg"]
    assert int(m.group(1)) == ts and m.group(3) == recv
    assert abs(int(m.group(2)) - time.time() * 1000) < 5_000


async def test_clock_skew_of_the_exchange_and_of_one_key(session: aiohttp.ClientSession) -> None:
    async with running(account(1001, key(1)), clock_offset_ms=120_000) as c:
        whole = await call(session, c.url("bybit"), QUERY_API, n=1)
    assert whole.code == 10002
    m = SKEW.fullmatch(whole.body["retMsg"])
    assert m is not None and int(m.group(2)) - int(m.group(1)) >= 119_000

    async with running(account(1001, key(1), key(2, clock_offset_ms=120_000))) as c:
        assert (await call(session, c.url("bybit"), QUERY_API, n=1)).code == 0
        assert (await call(session, c.url("bybit"), QUERY_API, n=2)).code == 10002


async def test_ip_whitelist_uses_the_peer_address() -> None:
    async with (
        running(account(1001, key(7, ip_whitelist=["127.0.0.2"]))) as c,
        session_from("127.0.0.3") as outside,
        session_from("127.0.0.2") as inside,
    ):
        refused = await call(outside, c.url("bybit"), QUERY_API, n=7)
        allowed = await call(inside, c.url("bybit"), QUERY_API, n=7)
    assert_error(refused, 200, 10010, "Unmatched IP, please check your API key's bound IP addresses.")
    assert allowed.code == 0 and allowed.body["result"]["ips"] == ["127.0.0.2"]


# -- introspection rendering -----------------------------------------------------------------------


async def test_query_api_renders_permissions_ips_and_expiry(session: aiohttp.ClientSession) -> None:
    perms = ["Wallet.Withdraw", "Spot.SpotTrade", "ContractTrade.Position", "ReadOnly"]
    async with running(
        account(
            73_000_001,
            key(1, permissions=perms, created_at="-10d", label="bot"),
            key(2, ip_whitelist=["127.0.0.1", "10.0.0.2"]),
            key(3, ip_whitelist=["127.0.0.0/8"], expires_at="+5d", permissions=["Spot.SpotTrade"]),
            kyc_level=1,
            region="MY",
        )
    ) as c:
        base = c.url("bybit")
        first, bound, dated = [(await call(session, base, QUERY_API, n=n)).body for n in (1, 2, 3)]
    r = first["result"]
    assert first["retCode"] == 0 and first["retMsg"] == ""
    assert list(r["permissions"]) == list(PERMISSION_GROUPS)  # every documented group, in order
    assert r["permissions"]["Spot"] == ["SpotTrade"]
    assert r["permissions"]["Wallet"] == ["Withdraw"]
    assert r["permissions"]["ContractTrade"] == ["Position"]
    assert r["permissions"]["Derivatives"] == [] and r["permissions"]["Earn"] == []
    assert r["readOnly"] == 1 and bound["result"]["readOnly"] == 0
    assert r["apiKey"] == api_key(1) and r["note"] == "bot" and r["secret"] == ""
    assert r["userID"] == 73_000_001 and r["parentUid"] == "0" and r["isMaster"] is True
    assert r["kycLevel"] == "LEVEL_1" and r["kycRegion"] == "MYS"
    # Unbound: ips ["*"], valid 90 days from creation.
    assert r["ips"] == ["*"]
    created = datetime.fromisoformat(r["createdAt"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(r["expiredAt"].replace("Z", "+00:00"))
    assert expires - created == timedelta(days=90)
    assert abs(created - (datetime.now(UTC) - timedelta(days=10))) < timedelta(minutes=1)
    assert r["deadlineDay"] == 79
    # Bound without expiry: the doc example's -2 and epoch.
    assert bound["result"]["ips"] == ["127.0.0.1", "10.0.0.2"]
    assert (bound["result"]["deadlineDay"], bound["result"]["expiredAt"]) == (-2, "1970-01-01T00:00:00Z")
    assert bound["result"]["permissions"]["Spot"] == []
    # An explicit expiry wins, bound or not.
    assert dated["result"]["deadlineDay"] == 4
    dated_at = datetime.fromisoformat(dated["result"]["expiredAt"].replace("Z", "+00:00"))
    assert abs(dated_at - (datetime.now(UTC) + timedelta(days=5))) < timedelta(minutes=1)


async def test_read_endpoints_render_the_account(session: aiohttp.ClientSession) -> None:
    async with running(
        account(
            1001,
            key(1),
            balances={"BTC": "0.5", "USDT": "100", "ETH": "0"},
            deposit_addresses={"BTC": "bc1qexample", "USDT": "0xabc"},
        )
    ) as c:
        base = c.url("bybit")
        wallet = await call(session, base, WALLET, {"accountType": "UNIFIED"}, n=1)
        only_usdt = await call(session, base, WALLET, {"accountType": "UNIFIED", "coin": "USDT"}, n=1)
        btc = await call(session, base, "/v5/asset/deposit/query-address", {"coin": "BTC"}, n=1)
        usdt = await call(session, base, "/v5/asset/deposit/query-address", {"coin": "USDT"}, n=1)
        none = await call(session, base, "/v5/asset/deposit/query-address", {"coin": "SOL"}, n=1)
        no_coin = await call(session, base, "/v5/asset/deposit/query-address", {}, n=1)
        history = await call(session, base, "/v5/execution/list", {"category": "spot"}, n=1)
        bad_history = await call(session, base, "/v5/execution/list", {"category": "futures"}, n=1)
        info = await call(session, base, "/v5/account/info", n=1)
    coins = {c["coin"]: c for c in wallet.body["result"]["list"][0]["coin"]}
    assert set(coins) == {"BTC", "USDT"}  # zero balances are left out unless asked for
    assert coins["BTC"]["walletBalance"] == "0.5" and coins["USDT"]["equity"] == "100"
    assert [c["coin"] for c in only_usdt.body["result"]["list"][0]["coin"]] == ["USDT"]
    assert wallet.body["result"]["list"][0]["accountType"] == "UNIFIED"
    assert btc.body["result"] == {
        "coin": "BTC",
        "chains": [
            {
                "chainType": "BTC",
                "addressDeposit": "bc1qexample",
                "tagDeposit": "",
                "chain": "BTC",
                "batchReleaseLimit": "-1",
                "contractAddress": "",
            }
        ],
    }
    assert usdt.body["result"]["chains"][0]["chain"] == "ETH"
    assert none.code == 0 and none.body["result"] == {"coin": "SOL", "chains": []}
    assert no_coin.code == 10001
    assert history.code == 0 and history.body["result"]["list"] == []
    assert bad_history.code == 10001
    assert info.code == 0 and info.body["result"]["marginMode"] == "REGULAR_MARGIN"


# -- settings: the unverified choices can be switched ---------------------------------------------


async def test_settings_switch_unverified_behaviour(session: aiohttp.ClientSession) -> None:
    settings = {
        "expired_key_ret_code": -2015,
        "frozen_ret_code": 10008,
        "api_disabled_ret_code": 10003,
        "error_http_status": 401,
        "unbound_ips": [],
        "unbound_key_validity_days": 30,
    }
    async with running(
        account(1001, key(1, expires_at="-1s"), key(2, created_at="-10d")),
        account(1002, key(3, created_at="-1d"), frozen=True),
        account(1003, key(4, created_at="-1d"), api_disabled=True),
        settings=settings,
    ) as c:
        base = c.url("bybit")
        expired = await call(session, base, QUERY_API, n=1)
        fresh = await call(session, base, QUERY_API, n=2)
        frozen = await call(session, base, QUERY_API, n=3)
        disabled = await call(session, base, QUERY_API, n=4)
    assert_error(expired, 401, -2015, "Invalid API-key, IP, or permissions for action.")
    assert_error(frozen, 401, 10008, "Common banned, please check your account mode")
    assert_error(disabled, 401, 10003, INVALID)
    assert fresh.status == 200 and fresh.body["result"]["ips"] == []
    assert fresh.body["result"]["deadlineDay"] == 19


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"frozen_ret_code": 12345}, "not a retCode"),
        ({"sign_error_message": "newest"}, "use one of"),
        ({"no_such_setting": 1}, "unknown name"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ScenarioError, match=problem):
        BybitSim(scenario(account(1001, key(1)), settings=settings).exchanges["bybit"], "mainnet")


@pytest.mark.parametrize(
    ("acct", "problem"),
    [
        (account(1001, {"api_key": "short", "secret": secret(1)}), "api_key is 18"),
        (account(1001, {"api_key": api_key(1), "secret": "x" * 35}), "secret is 36"),
        (account(1001, key(1, client_secret="wrong-format")), "client_secret is 36"),
        (account(1001, key(1, permissions=["Spot.Trade"])), "unknown permission"),
        ({"id": "alice", "keys": [key(1)]}, "must be a number"),
    ],
)
def test_scenario_keys_must_follow_bybit_formats(acct: dict[str, Any], problem: str) -> None:
    with pytest.raises(ScenarioError, match=problem):
        BybitSim(scenario(acct).exchanges["bybit"], "mainnet")


# -- exchange-wide states: maintenance, faults, unknown routes -------------------------------------


async def test_maintenance_refuses_private_calls_and_status_reports_it(
    session: aiohttp.ClientSession,
) -> None:
    windows = [{"start": "-1h", "end": "+1h"}, {"start": "-3d", "end": "-2d"}, {"start": "+2d", "end": "+3d"}]
    async with running(account(1001, key(1)), maintenance=windows) as c:
        base = c.url("bybit")
        private = await call(session, base, QUERY_API, n=1)
        status = await call(session, base, "/v5/system/status")
        ongoing = await call(session, base, "/v5/system/status", {"state": "ongoing"})
        clock = await call(session, base, "/v5/market/time")
    assert_error(private, 503, 10016, "Server error.")
    states = [e["state"] for e in status.body["result"]["list"]]
    assert states == ["ongoing", "completed", "scheduled"]
    [entry] = ongoing.body["result"]["list"]
    assert int(entry["begin"]) < time.time() * 1000 < int(entry["end"])
    assert clock.code == 0

    async with running(
        account(1001, key(1)), maintenance=windows, settings={"maintenance_http_status": 200}
    ) as c:
        assert_error(await call(session, c.url("bybit"), QUERY_API, n=1), 200, 10016, "Server error.")


async def test_injected_server_errors(session: aiohttp.ClientSession) -> None:
    async with running(account(1001, key(1)), faults={"error_rate": 1.0}) as c:
        answer = await call(session, c.url("bybit"), QUERY_API, n=1)
    assert_error(answer, 500, 10016, "Server error.")


async def test_unknown_route(session: aiohttp.ClientSession) -> None:
    async with running(account(1001, key(1))) as c:
        answer = await call(session, c.url("bybit"), "/v5/no/such/path", n=1)
        wrong_method = await call(session, c.url("bybit"), "/v5/market/time", method="POST")
    assert_error(answer, 404, 10017, "Route not found.")
    assert wrong_method.status == 404 and wrong_method.code == 10017


# -- rate limits -----------------------------------------------------------------------------------


async def test_ip_limit_bans_the_address_with_403() -> None:
    limits = {"ip_requests": 3, "ip_window_s": 60, "ip_ban_s": 60}
    async with running(account(1001, key(1)), limits=limits) as c:
        base = c.url("bybit")
        await fresh_window(60)
        async with session_from("127.0.0.2") as hot, session_from("127.0.0.3") as other:
            ok = [await call(hot, base, "/v5/market/time") for _ in range(3)]
            banned = await call(hot, base, "/v5/market/time")
            still = await call(hot, base, QUERY_API, n=1)
            elsewhere = await call(other, base, QUERY_API, n=1)
            c.endpoint("bybit").sim.reset_limits()  # what the admin endpoint's reset-limits calls
            after_reset = await call(hot, base, "/v5/market/time")
    assert [a.status for a in ok] == [200, 200, 200]
    assert (banned.status, banned.body) == (403, "access too frequent")
    assert "Retry-After" not in banned.headers
    assert (still.status, still.body) == (403, "access too frequent")
    assert elsewhere.code == 0
    assert after_reset.status == 200

    settings = {"ip_limit_response": "ret_code_10018", "ip_ban_retry_after": True}
    async with (
        running(account(1001, key(1)), limits=limits, settings=settings) as c,
        session_from("127.0.0.2") as hot,
    ):
        await fresh_window(60)
        for _ in range(3):
            await call(hot, c.url("bybit"), "/v5/market/time")
        alt = await call(hot, c.url("bybit"), "/v5/market/time")
    assert_error(alt, 200, 10018, "Exceeded the IP Rate Limit.")
    assert alt.headers["Retry-After"] == "60"


async def test_uid_limit_per_endpoint_with_bapi_headers(session: aiohttp.ClientSession) -> None:
    limits = {"uid_query_api": 2, "uid_window_s": 60}
    async with running(account(1001, key(1), key(2)), account(1002, key(3)), limits=limits) as c:
        base = c.url("bybit")
        await fresh_window(60)
        first = await call(session, base, QUERY_API, n=1)
        second = await call(session, base, QUERY_API, n=2)  # another key of the same UID shares the budget
        third = await call(session, base, QUERY_API, n=1)
        other_endpoint = await call(session, base, WALLET, {"accountType": "UNIFIED"}, n=1)
        other_uid = await call(session, base, QUERY_API, n=3)
    assert [a.headers["X-Bapi-Limit"] for a in (first, second, third)] == ["2", "2", "2"]
    assert [a.headers["X-Bapi-Limit-Status"] for a in (first, second, third)] == ["1", "0", "0"]
    assert first.code == second.code == 0
    assert_error(third, 200, 10006, "Too many visits. Exceeded the API Rate Limit.")
    now_ms = time.time() * 1000
    assert abs(int(first.headers["X-Bapi-Limit-Reset-Timestamp"]) - now_ms) < 5_000  # not exceeded: "now"
    assert now_ms < int(third.headers["X-Bapi-Limit-Reset-Timestamp"]) <= now_ms + 61_000
    assert other_endpoint.code == 0 and other_endpoint.headers["X-Bapi-Limit"] == "50"
    assert other_uid.code == 0 and other_uid.headers["X-Bapi-Limit-Status"] == "1"


async def test_order_limit_depends_on_category(session: aiohttp.ClientSession) -> None:
    async with running(account(1001, key(1, permissions=["Spot.SpotTrade", "ContractTrade.Order"]))) as c:
        spot = await call(session, c.url("bybit"), ORDER, PROBE, n=1, method="POST")
        linear = await call(
            session, c.url("bybit"), ORDER, {**PROBE, "category": "linear"}, n=1, method="POST"
        )
    assert (spot.headers["X-Bapi-Limit"], linear.headers["X-Bapi-Limit"]) == ("20", "10")


# -- run-time changes and environments -----------------------------------------------------------


async def test_admin_mutations_show_on_the_next_request(session: aiohttp.ClientSession) -> None:
    cluster_scenario = scenario(account(1001, key(1, permissions=["Spot.SpotTrade"])))
    async with SimCluster(cluster_scenario) as c:
        base = c.url("bybit")
        spec = cluster_scenario.exchanges["bybit"]
        acct, k = spec.accounts[0], spec.accounts[0].keys[0]
        assert (await call(session, base, QUERY_API, n=1)).code == 0

        k.permissions = ["Spot.SpotTrade", "Wallet.Withdraw"]
        shown = await call(session, base, QUERY_API, n=1)
        assert shown.body["result"]["permissions"]["Wallet"] == ["Withdraw"]

        k.ip_whitelist = ["10.1.1.1"]
        assert (await call(session, base, QUERY_API, n=1)).code == 10010
        k.ip_whitelist = []

        k.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        assert (await call(session, base, QUERY_API, n=1)).code == 33004
        k.expires_at = None

        acct.frozen = True
        assert (await call(session, base, QUERY_API, n=1)).code == 10027
        acct.frozen = False

        spec.settings["error_http_status"] = 418
        k.deleted = True
        assert_error(await call(session, base, QUERY_API, n=1), 418, 10003, INVALID)


def test_environments_are_bybit_sites() -> None:
    assert {"mainnet", "testnet", "demo", "eu", "nl", "tr", "kz"} <= set(BybitSim.environments)


async def test_each_environment_serves_only_its_own_keys(session: aiohttp.ClientSession) -> None:
    async with running(
        account(1001, key(1), key(2, environment="eu"), key(3, environment="demo")),
        environments=["mainnet", "eu", "demo"],
    ) as c:
        grid = {
            (env, n): (await call(session, c.url("bybit", env), QUERY_API, n=n)).code
            for env in ("mainnet", "eu", "demo")
            for n in (1, 2, 3)
        }
    home = {1: "mainnet", 2: "eu", 3: "demo"}
    assert grid == {(env, n): (0 if home[n] == env else 10003) for env, n in grid}


# -- the shipped demo scenario ---------------------------------------------------------------------

EXPECTED_BY_INTENT = {
    "connected": 0,
    "already_connected": 0,
    "expires_soon": 0,
    "withdrawal_enabled": 0,
    "incorrect_permissions": 0,
    "inactive_futures": 0,
    "expired": 33004,
    "secret_mismatch": 10004,
    "clock_skew": 10002,
    "ip_not_allowed": 10010,
}


async def test_demo_scenario_keys_show_their_intent(session: aiohttp.ClientSession) -> None:
    demo = load_scenario(DEMO)
    spec = demo.exchanges["bybit"]
    keys = [(a, k) for a in spec.accounts for k in a.keys]
    intents = {k.intent for _, k in keys}
    assert intents >= set(EXPECTED_BY_INTENT) | {"invalid_key", "account_restricted"}
    assert "passphrase_invalid" not in intents and "temporary_issue" not in intents
    async with SimCluster(demo) as c:
        base = c.url("bybit")
        for acct, k in keys:
            given_secret = k.client_secret or k.secret
            answer = await call(session, base, QUERY_API, key_=k.api_key, secret_=given_secret)
            assert k.intent is not None and k.label
            if k.intent == "invalid_key":
                assert answer.code == 10003, k.label
            elif k.intent == "account_restricted":
                assert answer.code in {10008, 10027, 10005, 10024, 10009}, k.label
            else:
                assert answer.code == EXPECTED_BY_INTENT[k.intent], k.label
            if answer.code:
                continue
            result = answer.body["result"]
            if k.intent == "expires_soon":
                assert 0 < result["deadlineDay"] <= 7
            if k.intent == "withdrawal_enabled":
                assert "Withdraw" in result["permissions"]["Wallet"]
            if k.intent == "incorrect_permissions":
                probe = await call(
                    session, base, ORDER, PROBE, key_=k.api_key, secret_=k.secret, method="POST"
                )
                assert probe.code == 10005
            if k.intent == "inactive_futures":
                params = {"category": "linear", "settleCoin": "USDT"}
                assert (
                    await call(session, base, POSITIONS, params, key_=k.api_key, secret_=k.secret)
                ).code == 10005
                assert result["permissions"]["ContractTrade"]
            if k.intent == "connected":
                assert acct.deposit_addresses.keys() >= {"BTC", "ETH", "USDT"} and acct.balances
        testnet_key = next(k for _, k in keys if k.environment == "testnet")
        assert (await call(session, c.url("bybit", "testnet"), QUERY_API, key_=testnet_key.api_key, secret_=testnet_key.secret)).code == 0  # fmt: skip
        restricted = {
            (await call(session, base, QUERY_API, key_=k.api_key, secret_=k.secret)).code
            for _, k in keys
            if k.intent == "account_restricted"
        }
    assert restricted == {10008, 10027, 10005, 10024, 10009}


# -- ccxt: a client nobody here wrote ----------------------------------------------------------


@asynccontextmanager
async def ccxt_bybit(
    base: str, n: int, *, secret_: str | None = None, source_ip: str | None = None
) -> AsyncIterator[Any]:
    import ccxt.async_support as ccxt

    config: dict[str, Any] = {
        "apiKey": api_key(n),
        "secret": secret_ or secret(n),
        "options": {"adjustForTimeDifference": False},
    }
    session = session_from(source_ip) if source_ip else None
    if session is not None:
        config["session"] = session
    exchange = ccxt.bybit(config)
    for name in list(exchange.urls["api"]):
        exchange.urls["api"][name] = base  # the real URLs are scheme + host only
    exchange.timeout_on_exit = 0
    try:
        yield exchange
    finally:
        await exchange.close()
        if session is not None:
            await session.close()


async def test_ccxt_reads_introspection_and_balance() -> None:
    perms = ["Spot.SpotTrade", "ContractTrade.Order", "ContractTrade.Position"]
    async with (
        running(account(55_000_001, key(1, permissions=perms), balances={"BTC": "2", "USDT": "5"})) as c,
        ccxt_bybit(c.url("bybit"), 1) as exchange,
    ):
        info = await exchange.private_get_v5_user_query_api()
        wallet = await exchange.private_get_v5_account_wallet_balance({"accountType": "UNIFIED"})
    assert info["retCode"] == 0
    assert info["result"]["apiKey"] == api_key(1) and info["result"]["userID"] == 55_000_001
    assert info["result"]["permissions"]["ContractTrade"] == ["Order", "Position"]
    coins = {c["coin"]: c["walletBalance"] for c in wallet["result"]["list"][0]["coin"]}
    assert coins == {"BTC": "2", "USDT": "5"}


async def test_ccxt_maps_the_refusals_to_its_exception_classes() -> None:
    import ccxt.async_support as ccxt

    async with running(
        account(1001, key(1), key(2, ip_whitelist=["127.0.0.2"]), key(3, expires_at="-1d")),
        account(1002, key(4), banned=True),
    ) as c:
        base = c.url("bybit")
        async with ccxt_bybit(base, 1, secret_=secret(9)) as exchange:
            with pytest.raises(ccxt.AuthenticationError, match='"retCode":10004'):
                await exchange.private_get_v5_user_query_api()
        async with ccxt_bybit(base, 2, source_ip="127.0.0.3") as exchange:
            with pytest.raises(ccxt.PermissionDenied, match='"retCode":10010'):
                await exchange.private_get_v5_account_wallet_balance({"accountType": "UNIFIED"})
        async with ccxt_bybit(base, 2, source_ip="127.0.0.2") as exchange:
            assert (await exchange.private_get_v5_user_query_api())["retCode"] == 0
        async with ccxt_bybit(base, 3) as exchange:
            with pytest.raises(ccxt.AuthenticationError, match='"retCode":33004'):
                await exchange.private_get_v5_user_query_api()
        async with ccxt_bybit(base, 4) as exchange:
            with pytest.raises(ccxt.AccountSuspended, match='"retCode":10008'):
                await exchange.private_get_v5_user_query_api()
        async with ccxt_bybit(base, 7) as exchange:
            with pytest.raises(ccxt.AuthenticationError, match='"retCode":10003'):
                await exchange.private_get_v5_user_query_api()


async def test_ccxt_sees_clock_skew_as_invalid_nonce() -> None:
    async with running(account(1001, key(1)), clock_offset_ms=120_000) as c:
        import ccxt.async_support as ccxt

        async with ccxt_bybit(c.url("bybit"), 1) as exchange:
            with pytest.raises(ccxt.InvalidNonce, match='"retCode":10002'):
                await exchange.private_get_v5_user_query_api()
            # ccxt's documented remedy: measure the difference and sign with the exchange's time.
            await exchange.load_time_difference()
            assert (await exchange.private_get_v5_user_query_api())["retCode"] == 0


async def test_ccxt_ip_ban_is_a_rate_limit_error() -> None:
    import ccxt.async_support as ccxt

    async with (
        running(account(1001, key(1)), limits={"ip_requests": 1, "ip_window_s": 60}) as c,
        ccxt_bybit(c.url("bybit"), 1) as exchange,
    ):
        await fresh_window(60)
        await exchange.private_get_v5_user_query_api()
        with pytest.raises(ccxt.RateLimitExceeded):
            await exchange.private_get_v5_user_query_api()
