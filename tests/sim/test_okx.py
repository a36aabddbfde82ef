"""The OKX simulator over real HTTP: every refusal with its exact status and body, and ccxt fidelity.

Requests are signed here by a small signer written from OKX's documented recipe; the ccxt tests
check the simulator against a client nobody here wrote.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from keysentry.sim.okx import OkxSim, parse_timestamp_ms, sign, verify_signature
from keysentry.sim.scenario import AccountSpec, ExchangeSpec, KeySpec, MaintenanceWindow, ScenarioError
from keysentry.sim.scenario import parse_scenario as parse
from keysentry.sim.server import SimCluster

MAIN_KEY = "0b8f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"
MAIN_SECRET = "22582BD0CFF14C41EDBF1AB98506286D"
MAIN_PASS = "Main-pass-01"
OTHER_KEY = "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"
DEMO_KEY = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
EEA_KEY = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
SECRET_2 = "0123456789ABCDEF0123456789ABCDEF"
WRONG_SECRET = "FEDCBA9876543210FEDCBA9876543210"
CONFIG = "/api/v5/account/config"


def okx_timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def client_sign(secret: str, prehash: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()).decode()


def key_dict(api_key: str, secret: str, passphrase: str, **extra: Any) -> dict[str, Any]:
    return {"api_key": api_key, "secret": secret, "passphrase": passphrase, **extra}


def base_scenario(**okx: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "environments": ["mainnet", "demo", "eea", "us"],
        "accounts": [
            {
                "id": "44705892343619584",
                "kyc_level": 3,
                "balances": {"BTC": "0.5", "USDT": "120.25", "XYZ": "7"},
                "deposit_addresses": {
                    "BTC": "bc1qmainaddress000000000000000000000",
                    "USDT": "TQmainUSDT0001",
                },
                "keys": [
                    key_dict(
                        MAIN_KEY,
                        MAIN_SECRET,
                        MAIN_PASS,
                        permissions=["read_only", "trade"],
                        label="bot key",
                        last_used_at="-1d",
                    )
                ],
            },
            {
                "id": "55000000000000002",
                "keys": [key_dict(OTHER_KEY, SECRET_2, "Other-pass-02", permissions=["read_only"])],
            },
            {
                "id": "55000000000000003",
                "keys": [key_dict(DEMO_KEY, SECRET_2, "Demo-pass-03", environment="demo")],
            },
            {
                "id": "55000000000000004",
                "keys": [key_dict(EEA_KEY, SECRET_2, "Eea-pass-04", environment="eea")],
            },
        ],
    }
    spec.update(okx)
    return {"seed": 1, "exchanges": {"okx": spec}}


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


CREDS = {
    MAIN_KEY: (MAIN_SECRET, MAIN_PASS),
    OTHER_KEY: (SECRET_2, "Other-pass-02"),
    DEMO_KEY: (SECRET_2, "Demo-pass-03"),
    EEA_KEY: (SECRET_2, "Eea-pass-04"),
}


class Harness:
    def __init__(self, cluster: SimCluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session
        self.spec: ExchangeSpec = cluster.scenario.exchanges["okx"]

    @property
    def account(self) -> AccountSpec:
        return self.spec.accounts[0]

    @property
    def key(self) -> KeySpec:
        return self.account.keys[0]

    async def call(
        self,
        method: str,
        path: str,
        *,
        api_key: str = MAIN_KEY,
        secret: str | None = None,
        passphrase: str | None = None,
        body: str = "",
        env: str = "mainnet",
        ts: str | None = None,
        clock_shift_ms: int = 0,
        headers: Mapping[str, str] | None = None,
        drop: tuple[str, ...] = (),
        sign_path: str | None = None,
        sign_body: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> Reply:
        real_secret, real_pass = CREDS.get(api_key, (MAIN_SECRET, MAIN_PASS))
        ts = ts or okx_timestamp(int(time.time() * 1000) + clock_shift_ms)
        prehash = ts + method + (sign_path or path) + (body if sign_body is None else sign_body)
        h = {
            "OK-ACCESS-KEY": api_key,
            "OK-ACCESS-SIGN": client_sign(secret or real_secret, prehash),
            "OK-ACCESS-TIMESTAMP": ts,
            "OK-ACCESS-PASSPHRASE": passphrase or real_pass,
            "Content-Type": "application/json",
            **(headers or {}),
        }
        for name in drop:
            h.pop(name, None)
        url = self.cluster.url("okx", env) + path
        async with (session or self.session).request(method, url, headers=h, data=body or None) as r:
            return Reply(r.status, json.loads(await r.read()), r.headers)

    async def public(self, path: str, *, session: aiohttp.ClientSession | None = None) -> Reply:
        async with (session or self.session).get(self.cluster.url("okx") + path) as r:
            return Reply(r.status, json.loads(await r.read()), r.headers)


@pytest.fixture
async def start() -> AsyncIterator[Any]:
    """Start a cluster on a scenario built from base_scenario(**overrides)."""
    stack: list[tuple[SimCluster, aiohttp.ClientSession]] = []

    async def _start(**okx: Any) -> Harness:
        cluster = await SimCluster(parse(base_scenario(**okx))).start()
        session = aiohttp.ClientSession()
        stack.append((cluster, session))
        return Harness(cluster, session)

    yield _start
    for cluster, session in stack:
        await session.close()
        await cluster.stop()


@pytest.fixture
async def okx(start: Any) -> Harness:
    h: Harness = await start()
    return h


def error(code: str, msg: str) -> dict[str, Any]:
    return {"code": code, "msg": msg, "data": []}


def bound_session(ip: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))


# -- signing ------------------------------------------------------------------------------------

VECTOR = ("22582BD0CFF14C41EDBF1AB98506286D", "2020-12-08T09:08:57.715Z", "GET", "/api/v5/account/config", "")
VECTOR_SIGN = "Kr/8IrbDYujS4cg2KkmB+tO2HMUXxyayG6ZwNb4H/yA="


def test_reference_vector_verifies() -> None:
    assert sign(*VECTOR) == VECTOR_SIGN
    assert verify_signature(*VECTOR, VECTOR_SIGN)


@pytest.mark.parametrize("part", range(5))
def test_changing_any_signed_part_breaks_the_vector(part: int) -> None:
    changes = (WRONG_SECRET, "2020-12-08T09:08:57.716Z", "POST", CONFIG + "?x=1", "{}")
    secret, ts, method, path, body = (changes[i] if i == part else VECTOR[i] for i in range(5))
    assert not verify_signature(secret, ts, method, path, body, VECTOR_SIGN)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2020-12-08T09:08:57.715Z", True),
        ("2020-12-08T09:08:57Z", False),
        ("2020-12-08T09:08:57.715", False),
        ("2020-12-08 09:08:57.715Z", False),
        ("2020-13-08T09:08:57.715Z", False),
        ("1607418537715", False),
    ],
)
def test_timestamp_format(text: str, ok: bool) -> None:
    assert (parse_timestamp_ms(text) == 1607418537715) if ok else parse_timestamp_ms(text) is None


# -- public endpoints, maintenance and faults --------------------------------------------------


async def test_server_time_follows_the_scenario_clock(okx: Harness) -> None:
    okx.spec.clock_offset_ms = 3_600_000
    r = await okx.public("/api/v5/public/time")
    assert r.status == 200 and r.body["code"] == "0"
    assert abs(int(r.body["data"][0]["ts"]) - (time.time() * 1000 + 3_600_000)) < 5_000


async def test_maintenance_refuses_private_calls_and_status_reports_it(okx: Harness) -> None:
    assert (await okx.public("/api/v5/system/status")).body == {"code": "0", "msg": "", "data": []}
    now = datetime.now(UTC)
    ongoing = MaintenanceWindow(start=now - timedelta(minutes=5), end=now + timedelta(hours=1))
    later = MaintenanceWindow(start=now + timedelta(days=2), end=now + timedelta(days=2, hours=1))
    done = MaintenanceWindow(start=now - timedelta(days=2), end=now - timedelta(days=1))
    okx.spec.maintenance.extend([ongoing, later, done])
    okx.spec.limits["system_status_requests"] = 100

    r = await okx.call("GET", CONFIG)
    assert (r.status, r.body) == (
        503,
        error("50001", "Service temporarily unavailable. Please try again later."),
    )
    status = await okx.public("/api/v5/system/status")
    assert status.status == 200
    entries = {e["state"]: e for e in status.body["data"]}
    assert set(entries) == {"ongoing", "scheduled"}
    assert entries["ongoing"]["begin"] == str(int(ongoing.start.timestamp() * 1000))
    assert entries["ongoing"]["end"] == str(int(ongoing.end.timestamp() * 1000))  # type: ignore[union-attr]
    completed = await okx.public("/api/v5/system/status?state=completed")
    assert [e["state"] for e in completed.body["data"]] == ["completed"]
    assert (await okx.public("/api/v5/public/time")).status == 200

    okx.spec.maintenance.clear()
    assert (await okx.call("GET", CONFIG)).status == 200


async def test_injected_server_errors(start: Any) -> None:
    okx = await start(faults={"error_rate": 1.0})
    r = await okx.call("GET", CONFIG)
    assert (r.status, r.body) == (500, error("50026", "System error. Try again later"))


async def test_wrong_method_on_a_known_path(okx: Harness) -> None:
    r = await okx.call("DELETE", CONFIG)
    assert (r.status, r.body) == (405, error("50115", "Invalid request method."))


# -- the happy path and how OKX renders a key --------------------------------------------------


@pytest.mark.parametrize(
    ("permissions", "perm"),
    [
        ([], "read_only"),
        (["read_only"], "read_only"),
        (["trade"], "read_only,trade"),
        (["withdraw", "trade", "read_only"], "read_only,trade,withdraw"),
        (["read_only", "withdraw"], "read_only,withdraw"),
    ],
)
async def test_config_renders_permissions(okx: Harness, permissions: list[str], perm: str) -> None:
    okx.key.permissions = permissions
    okx.key.ip_whitelist = ["127.0.0.1"]  # keeps trade/withdraw keys alive whatever their last use
    r = await okx.call("GET", CONFIG)
    assert r.status == 200 and r.body["code"] == "0"
    assert r.body["data"][0]["perm"] == perm


async def test_config_fields(okx: Harness) -> None:
    okx.key.ip_whitelist = ["127.0.0.1", "10.0.0.0/24"]
    cfg = (await okx.call("GET", CONFIG)).body["data"][0]
    assert (cfg["uid"], cfg["mainUid"], cfg["label"]) == ("44705892343619584", "44705892343619584", "bot key")
    assert (cfg["kycLv"], cfg["acctLv"], cfg["ip"]) == ("3", "2", "127.0.0.1,10.0.0.0/24")
    okx.account.futures_opened = False
    okx.account.kyc_level = 1
    cfg = (await okx.call("GET", CONFIG)).body["data"][0]
    assert (cfg["kycLv"], cfg["acctLv"]) == ("1", "1")


async def test_perm_order_setting(start: Any) -> None:
    okx = await start(settings={"perm_order": "read_only,withdraw,trade"})
    okx.key.permissions = ["trade", "withdraw"]
    assert (await okx.call("GET", CONFIG)).body["data"][0]["perm"] == "read_only,withdraw,trade"


async def test_balance(okx: Harness) -> None:
    data = (await okx.call("GET", "/api/v5/account/balance")).body["data"][0]
    by_ccy = {d["ccy"]: d for d in data["details"]}
    assert set(by_ccy) == {"BTC", "USDT", "XYZ"}
    assert (by_ccy["BTC"]["availBal"], by_ccy["BTC"]["eqUsd"]) == ("0.5", "30000")
    assert data["totalEq"] == "30120.25"
    only = (await okx.call("GET", "/api/v5/account/balance?ccy=USDT")).body["data"][0]
    assert [d["ccy"] for d in only["details"]] == ["USDT"]


async def test_deposit_address(okx: Harness) -> None:
    r = await okx.call("GET", "/api/v5/asset/deposit-address?ccy=BTC")
    assert r.body["data"][0]["addr"] == "bc1qmainaddress000000000000000000000"
    assert r.body["data"][0]["ccy"] == "BTC"
    none = await okx.call("GET", "/api/v5/asset/deposit-address?ccy=ETH")
    assert (none.status, none.body) == (200, {"code": "0", "msg": "", "data": []})
    r = await okx.call("GET", "/api/v5/asset/deposit-address")
    assert (r.status, r.body) == (400, error("50014", "Parameter ccy can not be empty."))


async def test_fills_history_is_empty(okx: Harness) -> None:
    r = await okx.call("GET", "/api/v5/trade/fills?instType=SPOT")
    assert (r.status, r.body) == (200, {"code": "0", "msg": "", "data": []})


# -- futures -------------------------------------------------------------------------------------

ACCOUNT_MODE = "You can't complete this request under your current account mode."


async def test_positions_need_futures(okx: Harness) -> None:
    assert (await okx.call("GET", "/api/v5/account/positions")).body["data"] == []
    okx.account.futures_opened = False
    r = await okx.call("GET", "/api/v5/account/positions")
    assert (r.status, r.body) == (200, error("51010", ACCOUNT_MODE))


async def test_positions_without_futures_setting(start: Any) -> None:
    okx = await start(settings={"positions_without_futures": "empty"})
    okx.account.futures_opened = False
    r = await okx.call("GET", "/api/v5/account/positions")
    assert (r.status, r.body["code"], r.body["data"]) == (200, "0", [])


# -- the trade-permission probe -----------------------------------------------------------------


def order(**fields: Any) -> str:
    base = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "px": "1", "sz": "-1"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("fields", "s_code", "s_msg"),
    [
        ({}, "51000", "Parameter sz error"),
        ({"sz": "abc"}, "51000", "Parameter sz error"),
        ({"sz": "0.001"}, "51008", "Order failed. Insufficient USDT balance in account."),
        ({"sz": "0.001", "side": "sell"}, "51008", "Order failed. Insufficient BTC balance in account."),
    ],
)
async def test_trade_probe_with_trade_permission(
    okx: Harness, fields: dict[str, Any], s_code: str, s_msg: str
) -> None:
    r = await okx.call("POST", "/api/v5/trade/order", body=order(clOrdId="probe1", **fields))
    assert r.status == 200
    assert (r.body["code"], r.body["msg"]) == ("1", "All operations failed")
    item = r.body["data"][0]
    assert (item["sCode"], item["sMsg"], item["clOrdId"], item["ordId"]) == (s_code, s_msg, "probe1", "")


async def test_trade_probe_on_swap_needs_futures(okx: Harness) -> None:
    okx.account.futures_opened = False
    r = await okx.call("POST", "/api/v5/trade/order", body=order(instId="BTC-USDT-SWAP", tdMode="cross"))
    assert r.body["data"][0]["sCode"] == "51010"


@pytest.mark.parametrize(
    ("body", "status", "code", "msg"),
    [
        (order(sz=None), 400, "50014", "Parameter sz can not be empty."),
        ("{not json", 400, "50002", "Json data format error."),
    ],
)
async def test_trade_probe_bad_request(okx: Harness, body: str, status: int, code: str, msg: str) -> None:
    r = await okx.call("POST", "/api/v5/trade/order", body=body)
    assert (r.status, r.body) == (status, error(code, msg))


@pytest.mark.parametrize(
    ("settings", "status", "code", "msg"),
    [
        ({}, 200, "50120", "This API key doesn't have permission to use this function"),
        ({"missing_permission_code": "50030"}, 200, "50030", "You don't have permission to use this API endpoint"),
        ({"missing_permission_http_status": 401}, 401, "50120", "This API key doesn't have permission to use this function"),
    ],
)  # fmt: skip
async def test_trade_probe_without_trade_permission(
    start: Any, settings: dict[str, Any], status: int, code: str, msg: str
) -> None:
    okx = await start(settings=settings)
    okx.key.permissions = ["read_only", "withdraw"]
    r = await okx.call("POST", "/api/v5/trade/order", body=order())
    assert (r.status, r.body) == (status, error(code, msg))
    # Reads stay allowed: read_only is always part of an OKX key.
    assert (await okx.call("GET", CONFIG)).status == 200


# -- authentication failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("OK-ACCESS-KEY", "50103"),
        ("OK-ACCESS-PASSPHRASE", "50104"),
        ("OK-ACCESS-SIGN", "50106"),
        ("OK-ACCESS-TIMESTAMP", "50107"),
    ],
)
@pytest.mark.parametrize("how", ["missing", "empty"])
async def test_missing_header(okx: Harness, header: str, code: str, how: str) -> None:
    kwargs: dict[str, Any] = {"drop": (header,)} if how == "missing" else {"headers": {header: ""}}
    r = await okx.call("GET", CONFIG, **kwargs)
    assert (r.status, r.body) == (401, error(code, f'Request header "{header}" cannot be empty.'))


@pytest.mark.parametrize("ts", ["1607418537715", "2020-12-08 09:08:57.715Z", "2020-12-08T09:08:57Z"])
async def test_malformed_timestamp(okx: Harness, ts: str) -> None:
    r = await okx.call("GET", CONFIG, ts=ts)
    assert (r.status, r.body) == (401, error("50112", "Invalid OK-ACCESS-TIMESTAMP."))


INVALID_KEY = error("50111", "Invalid OK-ACCESS-KEY")


@pytest.mark.parametrize(
    "api_key",
    [
        MAIN_KEY.upper(),  # OKX keys are lowercase
        MAIN_KEY.replace("-", ""),
        "a" * 64,  # a Binance key pasted into OKX
        "00000000-0000-4000-8000-000000000000",  # well-formed, unknown
    ],
)
async def test_unknown_or_malformed_key(okx: Harness, api_key: str) -> None:
    r = await okx.call("GET", CONFIG, api_key=api_key)
    assert (r.status, r.body) == (401, INVALID_KEY)


async def test_invalid_key_message_setting(start: Any) -> None:
    okx = await start(settings={"invalid_key_message": "Invalid OK-ACCESS-KEY."})
    r = await okx.call("GET", CONFIG, api_key="00000000-0000-4000-8000-000000000000")
    assert r.body == error("50111", "Invalid OK-ACCESS-KEY.")


@pytest.mark.parametrize("field", ["deleted", "disabled"])
async def test_deleted_or_disabled_key_is_unknown(okx: Harness, field: str) -> None:
    if field == "deleted":
        okx.key.deleted = True
    else:
        okx.key.enabled = False
    r = await okx.call("GET", CONFIG)
    assert (r.status, r.body) == (401, INVALID_KEY)


async def test_bad_signature(okx: Harness) -> None:
    r = await okx.call("GET", CONFIG, secret=WRONG_SECRET)
    assert (r.status, r.body) == (401, error("50113", "Invalid signature."))
    # the query string is part of the signed path
    r = await okx.call("GET", "/api/v5/account/balance?ccy=BTC", sign_path="/api/v5/account/balance")
    assert (r.status, r.body["code"]) == (401, "50113")
    # and so is the body of a POST
    r = await okx.call("POST", "/api/v5/trade/order", body=order(sz="5"), sign_body=order())
    assert (r.status, r.body["code"]) == (401, "50113")


async def test_wrong_passphrase(okx: Harness) -> None:
    r = await okx.call("GET", CONFIG, passphrase="main-pass-01")
    assert (r.status, r.body) == (401, error("50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.'))


@pytest.mark.parametrize(("header", "code"), [("OK-ACCESS-PASSPHRASE", "50105"), ("OK-ACCESS-SIGN", "50113")])
async def test_undecodable_header_bytes_get_okx_errors(okx: Harness, header: str, code: str) -> None:
    ts = okx_timestamp(int(time.time() * 1000))
    headers = {
        "OK-ACCESS-KEY": MAIN_KEY.encode(),
        "OK-ACCESS-SIGN": client_sign(MAIN_SECRET, ts + "GET" + CONFIG).encode(),
        "OK-ACCESS-TIMESTAMP": ts.encode(),
        "OK-ACCESS-PASSPHRASE": MAIN_PASS.encode(),
    }
    headers[header] += b"\xff\xc3\xa9"
    port = int(okx.cluster.url("okx").rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers.items())
    writer.write(
        b"GET " + CONFIG.encode() + b" HTTP/1.1\r\nHost: okx\r\nConnection: close\r\n" + lines + b"\r\n"
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == code


SKEW = error("50102", "Timestamp request expired.")


@pytest.mark.parametrize(
    ("shift_ms", "ok"), [(-29_000, True), (29_000, True), (-31_000, False), (31_000, False)]
)
async def test_timestamp_window(okx: Harness, shift_ms: int, ok: bool) -> None:
    r = await okx.call("GET", CONFIG, clock_shift_ms=shift_ms)
    assert (r.status, r.body) == ((200, r.body) if ok else (401, SKEW))


async def test_clock_skew_of_the_exchange_and_of_one_key(okx: Harness) -> None:
    okx.spec.clock_offset_ms = 120_000
    assert (await okx.call("GET", CONFIG)).body == SKEW
    assert (await okx.call("GET", CONFIG, clock_shift_ms=120_000)).status == 200
    okx.spec.clock_offset_ms = 0
    okx.key.clock_offset_ms = 120_000
    assert (await okx.call("GET", CONFIG)).body == SKEW
    assert (await okx.call("GET", CONFIG, clock_shift_ms=120_000)).status == 200
    # other keys see the exchange's own clock
    assert (await okx.call("GET", CONFIG, api_key=OTHER_KEY)).status == 200


@pytest.mark.parametrize(
    ("whitelist", "allowed"),
    [
        (["127.0.0.2"], False),
        (["127.0.0.3"], True),
        (["127.0.0.0/30"], True),
        (["10.11.12.13", "::1"], False),
    ],
)
async def test_ip_whitelist(okx: Harness, whitelist: list[str], allowed: bool) -> None:
    okx.key.ip_whitelist = whitelist
    async with bound_session("127.0.0.3") as session:
        r = await okx.call("GET", CONFIG, session=session)
    if allowed:
        assert (r.status, r.body["data"][0]["ip"]) == (200, ",".join(whitelist))
    else:
        msg = "Your IP 127.0.0.3 is not included in your API key's IP whitelist."
        assert (r.status, r.body) == (401, error("50110", msg))


# -- expiry ----------------------------------------------------------------------------------------


async def test_expires_at_removes_the_key(okx: Harness) -> None:
    okx.key.expires_at = datetime.now(UTC) + timedelta(hours=1)
    assert (await okx.call("GET", CONFIG)).status == 200
    okx.key.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = await okx.call("GET", CONFIG)
    assert (r.status, r.body) == (401, INVALID_KEY)


async def test_expired_key_code_setting(start: Any) -> None:
    okx = await start(settings={"expired_key_code": "50119"})
    okx.key.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = await okx.call("GET", CONFIG)
    assert (r.status, r.body) == (401, error("50119", "API key doesn't exist"))


@pytest.mark.parametrize(
    ("permissions", "whitelist", "last_used_days", "alive"),
    [
        (["read_only", "trade"], [], 15, False),
        (["read_only", "trade"], [], 13, True),
        (["read_only", "withdraw"], [], 15, False),
        (["read_only"], [], 90, True),
        (["read_only", "trade"], ["127.0.0.1"], 90, True),
        (["read_only", "trade"], [], None, False),  # never used: counted from creation (30 days ago)
    ],
)
async def test_inactivity_expiry(
    okx: Harness, permissions: list[str], whitelist: list[str], last_used_days: int | None, alive: bool
) -> None:
    okx.key.permissions = permissions
    okx.key.ip_whitelist = whitelist
    okx.key.created_at = datetime.now(UTC) - timedelta(days=30)
    okx.key.last_used_at = (
        None if last_used_days is None else datetime.now(UTC) - timedelta(days=last_used_days)
    )
    r = await okx.call("GET", CONFIG)
    assert (r.status, r.body) == ((200, r.body) if alive else (401, INVALID_KEY))


async def test_inactivity_days_setting_and_demo_keys(start: Any) -> None:
    okx = await start(settings={"inactivity_expiry_days": 30})
    okx.key.last_used_at = datetime.now(UTC) - timedelta(days=20)
    assert (await okx.call("GET", CONFIG)).status == 200
    demo_key = okx.spec.accounts[2].keys[0]
    demo_key.permissions = ["trade", "withdraw"]
    demo_key.last_used_at = datetime.now(UTC) - timedelta(days=400)
    r = await okx.call("GET", CONFIG, api_key=DEMO_KEY, headers={"x-simulated-trading": "1"})
    assert r.status == 200  # demo-trading keys never expire


async def test_successful_calls_count_as_use(okx: Harness) -> None:
    okx.key.last_used_at = datetime.now(UTC) - timedelta(days=10)
    await okx.call("GET", CONFIG, secret=WRONG_SECRET)
    assert okx.key.last_used_at < datetime.now(UTC) - timedelta(days=9)
    await okx.call("GET", CONFIG)
    assert okx.key.last_used_at > datetime.now(UTC) - timedelta(minutes=1)


# -- account state -----------------------------------------------------------------------------

BLOCKED = "User blocked."
STATUS_INVALID = "Account status invalid. Check account status"
KYC = (
    "For security and compliance purposes, please complete the identity verification process "
    "to continue using our services."
)
REGION = "Due to compliance restrictions in your country or region, you cannot use this feature."


@pytest.mark.parametrize(
    ("flag", "settings", "status", "code", "msg"),
    [
        ("api_disabled", {}, 400, "50100", "API frozen, please contact customer service."),
        ("frozen", {}, 200, "50007", BLOCKED),
        ("frozen", {"account_restriction_http_status": 403}, 403, "50007", BLOCKED),
        ("banned", {}, 200, "50007", BLOCKED),
        ("banned", {"banned_code": "50012"}, 200, "50012", STATUS_INVALID),
        ("kyc_required", {}, 200, "50060", KYC),
        ("region_restricted", {}, 200, "50051", REGION),
        (
            "region_restricted",
            {"region_restricted_code": "50121"},
            200,
            "50121",
            "You can't access our services through the IP address (127.0.0.1)",
        ),
    ],
)
async def test_account_flags(
    start: Any, flag: str, settings: dict[str, Any], status: int, code: str, msg: str
) -> None:
    okx = await start(settings=settings)
    setattr(okx.account, flag, True)
    for path in (CONFIG, "/api/v5/account/balance"):
        r = await okx.call("GET", path)
        assert (r.status, r.body) == (status, error(code, msg))
    assert (await okx.call("GET", CONFIG, api_key=OTHER_KEY)).status == 200


async def test_compliance_blocks_only_trading_when_scoped(start: Any) -> None:
    okx = await start(settings={"compliance_block_scope": "trade"})
    okx.account.kyc_required = True
    assert (await okx.call("GET", CONFIG)).status == 200
    r = await okx.call("POST", "/api/v5/trade/order", body=order())
    assert r.body == error("50060", KYC)


async def test_admin_mutations_show_on_the_next_request(okx: Harness) -> None:
    probe = "/api/v5/trade/order"
    assert (await okx.call("POST", probe, body=order())).body["code"] == "1"
    okx.key.permissions = ["read_only"]
    assert (await okx.call("POST", probe, body=order())).body["code"] == "50120"
    okx.key.permissions = ["read_only", "trade", "withdraw"]
    assert (await okx.call("GET", CONFIG)).body["data"][0]["perm"] == "read_only,trade,withdraw"
    okx.key.ip_whitelist = ["10.11.12.13"]
    assert (await okx.call("GET", CONFIG)).body["code"] == "50110"
    okx.key.ip_whitelist = []
    okx.account.frozen = True
    assert (await okx.call("GET", CONFIG)).body["code"] == "50007"
    okx.account.frozen = False
    okx.key.deleted = True
    assert (await okx.call("GET", CONFIG)).body["code"] == "50111"
    okx.key.deleted = False
    okx.key.passphrase = "Changed-pass-9"
    assert (await okx.call("GET", CONFIG)).body["code"] == "50105"
    assert (await okx.call("GET", CONFIG, passphrase="Changed-pass-9")).status == 200


# -- environments and sites --------------------------------------------------------------------

WRONG_ENV = error("50101", "APIKey does not match current environment.")
NOT_ON_SITE = error("50119", "API key doesn't exist")
DEMO = {"x-simulated-trading": "1"}


@pytest.mark.parametrize(
    ("api_key", "env", "demo_header", "expected"),
    [
        (DEMO_KEY, "mainnet", False, WRONG_ENV),
        (DEMO_KEY, "mainnet", True, None),
        (DEMO_KEY, "demo", True, None),
        (DEMO_KEY, "demo", False, WRONG_ENV),
        (MAIN_KEY, "mainnet", True, WRONG_ENV),
        (MAIN_KEY, "demo", True, WRONG_ENV),
        (MAIN_KEY, "demo", False, None),  # the demo host is the global REST host
        (EEA_KEY, "mainnet", False, NOT_ON_SITE),
        (EEA_KEY, "eea", False, None),
        (MAIN_KEY, "eea", False, NOT_ON_SITE),
        (MAIN_KEY, "us", False, NOT_ON_SITE),
        (EEA_KEY, "us", False, NOT_ON_SITE),
    ],
)
async def test_environments(
    okx: Harness, api_key: str, env: str, demo_header: bool, expected: dict[str, Any] | None
) -> None:
    r = await okx.call("GET", CONFIG, api_key=api_key, env=env, headers=DEMO if demo_header else None)
    if expected is None:
        assert (r.status, r.body["code"]) == (200, "0")
    else:
        assert (r.status, r.body) == (401, expected)


async def test_other_site_http_status_setting(start: Any) -> None:
    okx = await start(settings={"other_site_http_status": 200})
    r = await okx.call("GET", CONFIG, api_key=EEA_KEY)
    assert (r.status, r.body) == (200, NOT_ON_SITE)


# -- rate limits ---------------------------------------------------------------------------------

TOO_MANY = error("50011", "Too Many Requests")


async def test_private_limit_is_per_account_and_endpoint(start: Any) -> None:
    okx = await start(limits={"account_config_requests": 2, "account_config_window_s": 3600})
    assert [(await okx.call("GET", CONFIG)).status for _ in range(2)] == [200, 200]
    r = await okx.call("GET", CONFIG)
    assert (r.status, r.body) == (429, TOO_MANY)
    assert "Retry-After" not in r.headers
    assert (await okx.call("GET", "/api/v5/account/balance")).status == 200
    assert (await okx.call("GET", CONFIG, api_key=OTHER_KEY)).status == 200


async def test_reset_limits_forgets_the_counters(start: Any) -> None:
    okx = await start(limits={"account_config_requests": 1, "account_config_window_s": 3600})
    assert [(await okx.call("GET", CONFIG)).status for _ in range(2)] == [200, 429]
    okx.cluster.sim("okx").reset_limits()
    assert (await okx.call("GET", CONFIG)).status == 200


async def test_retry_after_setting(start: Any) -> None:
    okx = await start(
        settings={"rate_limit_retry_after": True},
        limits={"account_config_requests": 1, "account_config_window_s": 3600},
    )
    await okx.call("GET", CONFIG)
    r = await okx.call("GET", CONFIG)
    assert r.status == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 3600


async def test_public_limit_is_per_ip(start: Any) -> None:
    okx = await start(limits={"system_status_window_s": 3600})
    assert (await okx.public("/api/v5/system/status")).status == 200  # published: 1 per 5 s
    r = await okx.public("/api/v5/system/status")
    assert (r.status, r.body) == (429, TOO_MANY)
    async with bound_session("127.0.0.3") as other_ip:
        assert (await okx.public("/api/v5/system/status", session=other_ip)).status == 200


# -- scenario checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"api_key": MAIN_KEY.upper()}, "api_key must be a lowercase UUID"),
        ({"secret": MAIN_SECRET.lower()}, "secret must be 32 uppercase hex"),
        ({"passphrase": "short"}, "passphrase must be 8-32"),
        ({"passphrase": None}, "needs a passphrase"),
        ({"client_secret": "nothex"}, "client_secret must be 32 uppercase hex"),
    ],
)
def test_scenario_key_formats_are_enforced(change: dict[str, Any], fragment: str) -> None:
    data = base_scenario()
    data["exchanges"]["okx"]["accounts"][0]["keys"][0].update(change)
    spec = parse(data).exchanges["okx"]
    with pytest.raises(ScenarioError, match=fragment):
        OkxSim(spec, "mainnet")


async def test_code_settings_accept_numbers_and_survive_bad_runtime_values(start: Any) -> None:
    okx = await start(settings={"banned_code": 50012})  # YAML reads an unquoted code as a number
    okx.account.banned = True
    assert (await okx.call("GET", CONFIG)).body == error("50012", STATUS_INVALID)
    okx.spec.settings = {"banned_code": "99999"}  # the admin endpoint does not know the choices
    assert (await okx.call("GET", CONFIG)).body == error("50007", BLOCKED)


@pytest.mark.parametrize(
    "settings",
    [{"banned_code": "50013"}, {"compliance_block_scope": "some"}, {"perm_order": "read_only,trade"}],
)
def test_bad_setting_values_are_refused(settings: dict[str, Any]) -> None:
    spec = parse(base_scenario(settings=settings)).exchanges["okx"]
    with pytest.raises(ScenarioError, match=next(iter(settings))):
        OkxSim(spec, "mainnet")


def test_demo_scenario_loads_and_covers_the_statuses() -> None:
    from importlib.resources import files

    from keysentry.sim.scenario import load_scenario

    path = files("keysentry.sim") / "scenarios" / "demo-okx.yaml"
    spec = load_scenario(str(path)).exchanges["okx"]
    for env in spec.environments:
        OkxSim(spec, env)  # key formats and settings hold
    intents = {k.intent for a in spec.accounts for k in a.keys}
    assert intents >= {
        "connected", "invalid_key", "secret_mismatch", "passphrase_invalid", "clock_skew",
        "ip_not_allowed", "account_restricted", "withdrawal_enabled", "incorrect_permissions",
        "inactive_futures",
    }  # fmt: skip


# -- ccxt fidelity -------------------------------------------------------------------------------


@pytest.fixture
async def ccxt_client(okx: Harness) -> AsyncIterator[Any]:
    """ccxt's OKX client pointed at the simulator; returns (exchange, seen HTTP statuses)."""
    made: list[tuple[Any, aiohttp.ClientSession]] = []

    def make(
        *,
        api_key: str = MAIN_KEY,
        secret: str = MAIN_SECRET,
        password: str = MAIN_PASS,
        source_ip: str = "127.0.0.1",
        sandbox: bool = False,
    ) -> Any:
        statuses: list[int] = []
        trace = aiohttp.TraceConfig()

        async def on_end(_s: Any, _c: Any, params: aiohttp.TraceRequestEndParams) -> None:
            statuses.append(params.response.status)

        trace.on_request_end.append(on_end)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(source_ip, 0)), trace_configs=[trace]
        )
        exchange = ccxt.okx(
            {
                "apiKey": api_key,
                "secret": secret,
                "password": password,
                "urls": {"api": {"rest": okx.cluster.url("okx")}},
                "session": session,
                # ccxt's own throttle and its 250 ms pause on close only slow the tests down
                "enableRateLimit": False,
                "timeout_on_exit": 0,
            }
        )
        if sandbox:
            exchange.set_sandbox_mode(True)  # adds x-simulated-trading: 1 (and may swap the urls)
            exchange.urls["api"] = {"rest": okx.cluster.url("okx")}
        made.append((exchange, session))
        return exchange, statuses

    yield make
    for exchange, session in made:
        await exchange.close()
        await session.close()


async def test_ccxt_reads_config_and_balance(okx: Harness, ccxt_client: Any) -> None:
    exchange, statuses = ccxt_client()
    config = await exchange.private_get_account_config()
    assert config["code"] == "0"
    assert (config["data"][0]["uid"], config["data"][0]["perm"]) == ("44705892343619584", "read_only,trade")
    balance = await exchange.private_get_account_balance()
    details = {d["ccy"]: d["availBal"] for d in balance["data"][0]["details"]}
    assert details == {"BTC": "0.5", "USDT": "120.25", "XYZ": "7"}
    # the trade probe as ccxt sends it (with its own clOrdId and tag) places nothing
    with pytest.raises(ccxt.BadRequest, match="51000"):
        await exchange.private_post_trade_order(
            {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "px": "1", "sz": "-1"}
        )
    assert statuses == [200, 200, 200]


@pytest.mark.parametrize(
    ("case", "exception", "code"),
    [
        ("tampered_secret", ccxt.AuthenticationError, "50113"),
        ("wrong_passphrase", ccxt.AuthenticationError, "50105"),
        ("skewed_clock", ccxt.InvalidNonce, "50102"),
        ("ip_outside_whitelist", ccxt.PermissionDenied, "50110"),
    ],
)
async def test_ccxt_sees_okx_errors(
    okx: Harness, ccxt_client: Any, case: str, exception: type[Exception], code: str
) -> None:
    kwargs: dict[str, Any] = {}
    if case == "tampered_secret":
        kwargs["secret"] = MAIN_SECRET[:-1] + "E"
    elif case == "wrong_passphrase":
        kwargs["password"] = MAIN_PASS + "x"
    elif case == "skewed_clock":
        okx.spec.clock_offset_ms = 120_000
    else:
        okx.key.ip_whitelist = ["127.0.0.2"]
        kwargs["source_ip"] = "127.0.0.3"
    exchange, statuses = ccxt_client(**kwargs)
    for call in (exchange.private_get_account_config, exchange.private_get_account_balance):
        with pytest.raises(exception) as info:
            await call()
        assert f'"code":"{code}"' in str(info.value)
        # a subclass would also satisfy pytest.raises; ccxt must pick exactly the mapped class
        assert type(info.value) is exception
    assert statuses == [401, 401]


async def test_ccxt_demo_trading(okx: Harness, ccxt_client: Any) -> None:
    demo, statuses = ccxt_client(api_key=DEMO_KEY, secret=SECRET_2, password="Demo-pass-03", sandbox=True)
    assert (await demo.private_get_account_config())["data"][0]["uid"] == "55000000000000003"
    live_in_demo, _ = ccxt_client(sandbox=True)
    with pytest.raises(ccxt.AuthenticationError, match="50101"):
        await live_in_demo.private_get_account_config()
    demo_on_live, _ = ccxt_client(api_key=DEMO_KEY, secret=SECRET_2, password="Demo-pass-03")
    with pytest.raises(ccxt.AuthenticationError, match="50101"):
        await demo_on_live.private_get_account_config()
    assert statuses == [200]
