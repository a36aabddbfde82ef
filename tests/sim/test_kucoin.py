"""KuCoin simulator over real HTTP: wire format, every refusal with its exact status and body, limits,
run-time mutations, and fidelity with ccxt (an independent client nobody here wrote).

Requests are signed by a small signer written here from KuCoin's documentation, separate from the
simulator's verifier, so one misreading cannot pass on both sides; ccxt cross-checks both.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from keysentry.sim.kucoin import KucoinSim, passphrase_header, prehash, sign, verify_signature
from keysentry.sim.scenario import ExchangeSpec, KeySpec, ScenarioError, load_scenario, parse_scenario
from keysentry.sim.server import SimCluster

DEMO = Path(__file__).parents[2] / "src/keysentry/sim/scenarios/demo-kucoin.yaml"

# KuCoin's texts, as the reference (shared/reference/exchange-api.md section 4.6) quotes them.
M_MISSING = (
    "Any of KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP, KC-API-PASSPHRASE is missing in your request header."
)
M_TIMESTAMP = "KC-API-TIMESTAMP Invalid -- Time differs from server time by more than 5 seconds"
M_NO_KEY = "KC-API-KEY not exists"
M_PASSPHRASE = "KC-API-PASSPHRASE error"
M_SIGNATURE = "Signature error -- Please check your signature"
M_IP = "The IP address is not in the API whitelist"
M_DENIED = "Access Denied -- Your API key does not have sufficient permissions to access the URI"
M_FROZEN = "User is frozen -- Please contact us via support center"
M_RISK = "Transaction restricted, there's a risk problem in your account"
M_KYC = (
    "To enjoy the full range of our products and services, we kindly request you complete "
    "the identity verification process."
)
M_REGION = "Your located country/region is currently not supported for the trading of this token"
M_RATE = (
    "Too Many Requests -- Trigger the total traffic limit of this interface of KuCoin server, "
    "you can retry the request"
)
M_500 = "Internal Server Error -- We had a problem with our server. Try again later."
M_503 = "Service Unavailable -- We're temporarily offline for maintenance. Please try again later."

ORDER = {
    "clientOid": "probe-1",
    "side": "buy",
    "symbol": "BTC-USDT",
    "type": "limit",
    "price": "1",
    "size": "1",
}


def _key(n: int, permissions: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "label": f"key{n}",
        "api_key": f"{n:024x}",
        "secret": f"{n:08x}-0000-4000-8000-{n:012x}",
        "passphrase": f"pass-phrase-{n}",
        "permissions": permissions,
        "created_at": 1_700_000_000_000,
        **extra,
    }


ALL = ["General", "Spot", "Futures"]
ACCOUNTS: list[dict[str, Any]] = [
    {
        "id": "1001",
        "balances": {"USDT": "150.5", "BTC": "0.25"},
        "deposit_addresses": {"BTC": "bc1qdemo", "ETH": "0xdemo", "USDT": "Tdemo"},
        "keys": [
            _key(1, ALL, label="main"),
            _key(2, ["General"]),
            _key(3, ["General", "Spot", "Transfer"], ip_whitelist=["127.0.0.2", "10.20.30.0/24"]),
            _key(4, ALL, key_version=1),
            _key(5, ALL, key_version=3),
            _key(6, ALL, deleted=True),
            _key(7, ALL, enabled=False),
            _key(8, ALL, expires_at=1_700_000_000_000),
            _key(9, ALL, clock_offset_ms=120_000),
            _key(10, ALL, ip_whitelist=["10.11.12.13"]),
            _key(11, ["General", "Spot"]),
        ],
    },
    {"id": "1002", "frozen": True, "keys": [_key(20, ALL)]},
    {"id": "1003", "banned": True, "keys": [_key(30, ALL)]},
    {"id": "1004", "api_disabled": True, "keys": [_key(40, ALL)]},
    {"id": "1005", "kyc_required": True, "keys": [_key(50, ALL)]},
    {"id": "1006", "region_restricted": True, "keys": [_key(60, ALL)]},
    {"id": "1007", "futures_opened": False, "keys": [_key(70, ALL)]},
    {"id": "1008", "keys": [_key(80, ALL)]},
]


def scenario(**exchange: Any) -> dict[str, Any]:
    return {"seed": 1, "exchanges": {"kucoin": {"accounts": copy.deepcopy(ACCOUNTS), **exchange}}}


def key_data(n: int) -> dict[str, Any]:
    return next(k for a in ACCOUNTS for k in a["keys"] if k["api_key"] == f"{n:024x}")


# -- an independent client-side signer (from the docs, not the simulator's code) --------------------------


def _b64_hmac(secret: str, message: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()


class Sim:
    def __init__(self, cluster: SimCluster, session: aiohttp.ClientSession) -> None:
        self.base = cluster.url("kucoin")
        self.spec: ExchangeSpec = cluster.endpoint("kucoin").sim.spec
        self.session = session
        self.admin_url = cluster.admin_url
        self.admin_headers = {"Authorization": f"Bearer {cluster.admin_token}"}

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        async with self.session.request(
            method, self.admin_url + path, json=body, headers=self.admin_headers
        ) as r:
            assert r.status == 200, await r.text()

    def key(self, n: int) -> KeySpec:
        found = self.spec.find_key(f"{n:024x}")
        assert found is not None
        return found[0]

    async def call(
        self,
        method: str,
        path: str,
        n: int | None = None,
        *,
        body: dict[str, Any] | None = None,
        api_key: str | None = None,
        secret: str | None = None,
        passphrase: str | None = None,
        version: str = "2",
        ts_offset_ms: int = 0,
        drop: tuple[str, ...] = (),
        session: aiohttp.ClientSession | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any, Any]:
        text = json.dumps(body, separators=(",", ":")) if body is not None else ""
        headers: dict[str, str] = {}
        if n is not None:
            k = key_data(n)
            secret = secret or k["secret"]
            phrase = passphrase or k["passphrase"]
            ts = str(int(time.time() * 1000) + ts_offset_ms)
            headers = {
                "KC-API-KEY": api_key or k["api_key"],
                "KC-API-SIGN": _b64_hmac(secret, ts + method + path + text),
                "KC-API-TIMESTAMP": ts,
                "KC-API-PASSPHRASE": phrase if version == "1" else _b64_hmac(secret, phrase),
                "KC-API-KEY-VERSION": version,
            }
            if text:
                headers["Content-Type"] = content_type
            for name in drop:
                del headers[name]
        async with (session or self.session).request(
            method, self.base + path, data=text or None, headers=headers
        ) as r:
            return r.status, await r.json(content_type=None), r.headers

    async def get(self, path: str, n: int | None = None, **kw: Any) -> tuple[int, Any, Any]:
        return await self.call("GET", path, n, **kw)

    async def post(self, path: str, n: int, body: dict[str, Any], **kw: Any) -> tuple[int, Any, Any]:
        return await self.call("POST", path, n, body=body, **kw)


@asynccontextmanager
async def running(**exchange: Any) -> AsyncIterator[Sim]:
    async with SimCluster(parse_scenario(scenario(**exchange))) as cluster, aiohttp.ClientSession() as s:
        yield Sim(cluster, s)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with running() as s:
        yield s


def bound_session(ip: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))


# -- signing ------------------------------------------------------------------------------------------------


def test_reference_vectors_verify_in_the_verifier() -> None:
    # shared/reference/exchange-api.md 4.2, computed vectors.
    assert sign("test-secret", prehash("1700000000000", "GET", "/api/v1/user/api-key", "")) == (
        "iQCy1mrZdsqYmA9XSS+V8GQ5k15PevBR/GrxGWyRZuo="
    )
    assert passphrase_header("test-secret", "test-pass", 2) == "+KGfNXdTCAFagUD1lg/kgwlqIgMFeba97YWwVk6avzw="
    assert passphrase_header("test-secret", "test-pass", 3) == "+KGfNXdTCAFagUD1lg/kgwlqIgMFeba97YWwVk6avzw="
    assert passphrase_header("test-secret", "test-pass", 1) == "test-pass"
    good = "iQCy1mrZdsqYmA9XSS+V8GQ5k15PevBR/GrxGWyRZuo="
    assert verify_signature("test-secret", "1700000000000", "GET", "/api/v1/user/api-key", "", good)
    assert not verify_signature("test-secret", "1700000000001", "GET", "/api/v1/user/api-key", "", good)
    assert not verify_signature("test-secret", "1700000000000", "POST", "/api/v1/user/api-key", "", good)
    assert not verify_signature("other", "1700000000000", "GET", "/api/v1/user/api-key", "", good)


async def test_query_string_and_body_are_signed(sim: Sim) -> None:
    status, body, _ = await sim.get("/api/v1/accounts?currency=BTC", 1)
    assert (status, [a["currency"] for a in body["data"]]) == (200, ["BTC"])
    status, body, _ = await sim.post("/api/v1/hf/orders/test", 1, ORDER)
    assert status == 200, body
    # A signature over the path without its query, or without the body, is refused.
    k = key_data(1)
    ts = str(int(time.time() * 1000))
    headers = {
        "KC-API-KEY": k["api_key"],
        "KC-API-SIGN": _b64_hmac(k["secret"], ts + "GET/api/v1/accounts"),
        "KC-API-TIMESTAMP": ts,
        "KC-API-PASSPHRASE": _b64_hmac(k["secret"], k["passphrase"]),
        "KC-API-KEY-VERSION": "2",
    }
    async with sim.session.get(sim.base + "/api/v1/accounts?currency=BTC", headers=headers) as r:
        assert (r.status, (await r.json())["code"]) == (401, "400005")


async def test_key_versions_choose_the_passphrase_encoding(sim: Sim) -> None:
    assert (await sim.get("/api/v1/user/api-key", 4, version="1"))[0] == 200  # v1: plain
    assert (await sim.get("/api/v1/user/api-key", 4, version="2"))[1]["code"] == "400004"
    assert (await sim.get("/api/v1/user/api-key", 5, version="3"))[0] == 200  # v3: HMAC'd
    assert (await sim.get("/api/v1/user/api-key", 1, version="1"))[1]["code"] == "400004"


# -- public endpoints ---------------------------------------------------------------------------------------


async def test_public_endpoints_need_no_auth_and_follow_the_exchange_clock() -> None:
    async with running(clock_offset_ms=120_000) as sim:
        status, body, headers = await sim.get("/api/v1/timestamp")
        assert status == 200 and body["code"] == "200000"
        assert abs(body["data"] - (time.time() * 1000 + 120_000)) < 2000
        assert headers["gw-ratelimit-limit"] == "2000"
        assert headers["gw-ratelimit-remaining"] == "1997"  # weight 3 in the public pool
        status, body, _ = await sim.get("/api/v1/status")
        assert (status, body) == (200, {"code": "200000", "data": {"status": "open", "msg": ""}})


# -- successful reads and probes ----------------------------------------------------------------------------


async def test_api_key_info_renders_kucoin_fields(sim: Sim) -> None:
    status, body, headers = await sim.get("/api/v1/user/api-key", 3, session=None)
    # key 3 is whitelisted for 127.0.0.2 only
    assert (status, body["code"]) == (401, "400006")
    async with bound_session("127.0.0.2") as s:
        status, body, headers = await sim.get("/api/v1/user/api-key", 3, session=s)
    assert status == 200 and body["code"] == "200000"
    assert body["data"] == {
        "remark": "key3",
        "apiKey": f"{3:024x}",
        "apiVersion": 2,
        "permission": "General,Spot,Transfer",
        "ipWhitelist": "127.**.2,10.**.0/24",
        "createdAt": 1_700_000_000_000,
        "uid": 1001,
        "isMaster": True,
    }
    assert (headers["gw-ratelimit-limit"], headers["gw-ratelimit-remaining"]) == ("2000", "1980")
    status, body, _ = await sim.get("/api/v1/user/api-key", 1)
    assert body["data"]["ipWhitelist"] == "" and body["data"]["permission"] == "General,Spot,Futures"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [({"empty_ip_whitelist": "null"}, None), ({"ip_whitelist_rendering": "plain"}, "10.11.12.13")],
)
async def test_ip_whitelist_rendering_settings(settings: dict[str, str], expected: str | None) -> None:
    async with running(settings=settings) as sim:
        sim.key(1).ip_whitelist = ["10.11.12.13", "127.0.0.1"]
        sim.key(11).ip_whitelist = []
        info = (await sim.get("/api/v1/user/api-key", 1 if expected else 11))[1]["data"]
        assert info["ipWhitelist"] == (f"{expected},127.0.0.1" if expected else None)
    async with running(settings={"empty_ip_whitelist": "omit"}) as sim:
        assert "ipWhitelist" not in (await sim.get("/api/v1/user/api-key", 11))[1]["data"]


async def test_balances_fills_and_deposit_addresses(sim: Sim) -> None:
    status, body, _ = await sim.get("/api/v1/accounts", 1)
    assert status == 200
    assert {(a["currency"], a["balance"], a["available"], a["type"]) for a in body["data"]} == {
        ("USDT", "150.5", "150.5", "trade"),
        ("BTC", "0.25", "0.25", "trade"),
    }
    assert all(len(a["id"]) == 24 for a in body["data"])
    assert (await sim.get("/api/v1/accounts?type=main", 1))[1]["data"] == []
    assert (await sim.get("/api/v1/fills", 1))[1]["data"]["items"] == []
    assert (await sim.get("/api/v1/hf/fills?symbol=BTC-USDT", 1))[1]["data"] == {"items": [], "lastId": 0}
    status, body, _ = await sim.get("/api/v1/hf/fills", 1)
    assert (status, body["code"]) == (400, "400100")

    status, body, _ = await sim.get("/api/v3/deposit-addresses?currency=ETH", 1)
    assert status == 200 and [(a["address"], a["chainId"], a["currency"]) for a in body["data"]] == [
        ("0xdemo", "eth", "ETH")
    ]
    assert (await sim.get("/api/v3/deposit-addresses?currency=ETH&chain=trx", 1))[1]["data"] == []
    assert (await sim.get("/api/v1/deposit-addresses?currency=BTC", 1))[1]["data"]["address"] == "bc1qdemo"
    assert (await sim.get("/api/v1/deposit-addresses?currency=XRP", 1))[1]["data"] is None
    assert (await sim.get("/api/v2/deposit-addresses?currency=USDT", 1))[1]["data"][0]["chain"] == "TRC20"
    status, body, _ = await sim.get("/api/v3/deposit-addresses", 1)
    assert (status, body["code"]) == (400, "400100")


async def test_trade_probes_validate_without_placing(sim: Sim) -> None:
    status, body, _ = await sim.post("/api/v1/hf/orders/test", 11, ORDER)
    assert status == 200 and body["data"]["clientOid"] == "probe-1" and len(body["data"]["orderId"]) == 24
    assert (await sim.post("/api/v1/orders/test", 11, ORDER))[0] == 200
    no_price = {k: v for k, v in ORDER.items() if k != "price"}
    assert (await sim.post("/api/v1/hf/orders/test", 11, no_price))[1]["code"] == "400100"
    no_oid = {k: v for k, v in ORDER.items() if k != "clientOid"}
    assert (await sim.post("/api/v1/hf/orders/test", 11, no_oid))[0] == 200  # optional on HF
    assert (await sim.post("/api/v1/orders/test", 11, no_oid))[1]["code"] == "400100"
    # A contract symbol makes it the futures host's order test, which needs the Futures right.
    futures = {**ORDER, "symbol": "XBTUSDTM", "leverage": 3}
    status, body, _ = await sim.post("/api/v1/orders/test", 11, futures)
    assert (status, body["code"]) == (403, "400007")
    assert (await sim.post("/api/v1/orders/test", 1, futures))[0] == 200
    status, body, _ = await sim.post("/api/v1/hf/orders/test", 11, ORDER, content_type="text/plain")
    assert (status, body) == (415, {"code": "415000", "msg": "Unsupported Media Type"})


async def test_futures_account(sim: Sim) -> None:
    status, body, headers = await sim.get("/api/v1/account-overview?currency=USDT", 1)
    assert status == 200 and body["data"]["currency"] == "USDT" and body["data"]["accountEquity"] == 150.5
    assert headers["gw-ratelimit-limit"] == "2000" and headers["gw-ratelimit-remaining"] == "1995"
    assert (await sim.get("/api/v1/account-overview", 11))[1]["code"] == "400007"  # no Futures right


async def test_unknown_path_answers_kucoin_404(sim: Sim) -> None:
    status, body, _ = await sim.get("/api/v1/nope", 1)
    assert (status, body) == (
        404,
        {"code": "404000", "msg": "URL Not Found -- The requested resource could not be found"},
    )


# -- every refusal, with its exact status and body ------------------------------------------------------------

API_KEY, ORDER_TEST, FUTURES_ACCOUNT = (
    "/api/v1/user/api-key",
    "/api/v1/hf/orders/test",
    "/api/v1/account-overview",
)
CASES: list[tuple[str, int, str, dict[str, Any], int, str, str]] = [
    # (case, key, path, request tweaks, HTTP status, code, msg)
    ("missing header", 1, API_KEY, {"drop": ("KC-API-PASSPHRASE",)}, 401, "400001", M_MISSING),
    ("clock 6 s behind", 1, API_KEY, {"ts_offset_ms": -6000}, 401, "400002", M_TIMESTAMP),
    ("clock 6 s ahead", 1, API_KEY, {"ts_offset_ms": 6000}, 401, "400002", M_TIMESTAMP),
    ("key clock offset", 9, API_KEY, {}, 401, "400002", M_TIMESTAMP),
    ("unknown key", 1, API_KEY, {"api_key": "ab" * 12}, 401, "400003", M_NO_KEY),
    ("malformed key", 1, API_KEY, {"api_key": "AB" * 12}, 401, "400003", M_NO_KEY),
    ("deleted key", 6, API_KEY, {}, 401, "400003", M_NO_KEY),
    ("key not enabled", 7, API_KEY, {}, 401, "400003", M_NO_KEY),
    ("expired key", 8, API_KEY, {}, 401, "400003", M_NO_KEY),
    (
        "wrong secret",
        1,
        API_KEY,
        {"secret": "00000000-0000-4000-8000-000000000000"},
        401,
        "400005",
        M_SIGNATURE,
    ),
    ("wrong passphrase", 1, API_KEY, {"passphrase": "not-the-one"}, 401, "400004", M_PASSPHRASE),
    ("ip not whitelisted", 10, API_KEY, {}, 401, "400006", M_IP),
    ("no Spot right", 2, ORDER_TEST, {"body": ORDER}, 403, "400007", M_DENIED),
    ("no Futures right", 11, FUTURES_ACCOUNT, {}, 403, "400007", M_DENIED),
    ("frozen", 20, API_KEY, {}, 403, "411100", M_FROZEN),
    ("banned", 30, API_KEY, {}, 403, "400700", M_RISK),
    ("api disabled", 40, API_KEY, {}, 403, "400007", M_DENIED),
    ("kyc required", 50, ORDER_TEST, {"body": ORDER}, 400, "400303", M_KYC),
    ("kyc required, deposit", 50, "/api/v3/deposit-addresses?currency=BTC", {}, 400, "400303", M_KYC),
    ("region restricted", 60, ORDER_TEST, {"body": ORDER}, 400, "400500", M_REGION),
    ("futures not opened", 70, FUTURES_ACCOUNT, {}, 403, "400007", M_DENIED),
]


@pytest.mark.parametrize(
    ("key", "path", "tweaks", "status", "code", "msg"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_refusals(
    sim: Sim, key: int, path: str, tweaks: dict[str, Any], status: int, code: str, msg: str
) -> None:
    method = "POST" if "body" in tweaks else "GET"
    got_status, body, headers = await sim.call(method, path, key, **tweaks)
    assert (got_status, body) == (status, {"code": code, "msg": msg})
    assert headers["Content-Type"].startswith("application/json")


async def test_restrictions_leave_reads_alone_by_default(sim: Sim) -> None:
    for n in (50, 60, 70):  # KYC, region, futures not opened: reading still works
        assert (await sim.get(API_KEY, n))[0] == 200
    assert (await sim.get("/api/v3/deposit-addresses?currency=BTC", 60))[0] == 200


@pytest.mark.parametrize(
    ("settings", "key", "path", "body", "status", "code"),
    [
        ({"http_status_ip_not_allowed": 403}, 10, API_KEY, None, 403, "400006"),
        ({"banned_code": "411100"}, 30, API_KEY, None, 403, "411100"),
        ({"api_disabled_code": "411100"}, 40, API_KEY, None, 403, "411100"),
        ({"kyc_required_scope": "all"}, 50, API_KEY, None, 400, "400303"),
        ({"region_restricted_scope": "all"}, 60, API_KEY, None, 400, "400500"),
        ({"http_status_kyc_required": 200}, 50, ORDER_TEST, ORDER, 200, "400303"),
        ({"futures_not_opened": "empty_account"}, 70, FUTURES_ACCOUNT, None, 200, "200000"),
        ({"expired_key_behaviour": "trade_disabled"}, 8, ORDER_TEST, ORDER, 403, "400007"),
        ({"expired_key_behaviour": "trade_disabled"}, 8, API_KEY, None, 200, "200000"),
        # A v2 passphrase is HMAC'd with the secret: checked first, a wrong secret reads as 400004.
        ({"passphrase_before_signature": True}, 1, API_KEY, None, 401, "400004"),
    ],
)
async def test_settings_switch_unverified_behaviour(
    settings: dict[str, Any], key: int, path: str, body: dict[str, Any] | None, status: int, code: str
) -> None:
    async with running(settings=settings) as sim:
        secret = "00000000-0000-4000-8000-000000000000" if "passphrase_before_signature" in settings else None
        got = await sim.call("POST" if body else "GET", path, key, body=body, secret=secret)
        assert (got[0], got[1]["code"]) == (status, code)
        if settings.get("expired_key_behaviour") and path == API_KEY:
            assert got[1]["data"]["permission"] == "General"  # trade rights gone, key kept
        if "futures_not_opened" in settings:
            assert got[1]["data"]["accountEquity"] == 0


def test_bad_scenarios_are_refused_with_clear_messages() -> None:
    bad_setting = scenario(settings={"banned_code": "999"})
    with pytest.raises(ScenarioError, match=r"settings\.banned_code: '999' is not one of"):
        KucoinSim(parse_scenario(bad_setting).exchanges["kucoin"], "mainnet")
    with pytest.raises(ScenarioError, match="not an HTTP status"):
        KucoinSim(
            parse_scenario(scenario(settings={"http_status_user_frozen": 99})).exchanges["kucoin"], "mainnet"
        )
    bad_key = scenario()
    bad_key["exchanges"]["kucoin"]["accounts"][0]["keys"][0]["api_key"] = "ABCDEF" * 4
    with pytest.raises(ScenarioError, match="24 lowercase hex"):
        KucoinSim(parse_scenario(bad_key).exchanges["kucoin"], "mainnet")
    bad_secret = scenario()
    bad_secret["exchanges"]["kucoin"]["accounts"][0]["keys"][0]["client_secret"] = "nope"
    with pytest.raises(ScenarioError, match="client_secret must be a lowercase UUID"):
        KucoinSim(parse_scenario(bad_secret).exchanges["kucoin"], "mainnet")
    no_phrase = scenario()
    del no_phrase["exchanges"]["kucoin"]["accounts"][0]["keys"][0]["passphrase"]
    with pytest.raises(ScenarioError, match="passphrase must be 7-32 printable"):
        KucoinSim(parse_scenario(no_phrase).exchanges["kucoin"], "mainnet")
    withdraw = scenario()
    withdraw["exchanges"]["kucoin"]["accounts"][0]["keys"][0]["permissions"] = ["General", "Withdraw"]
    with pytest.raises(ScenarioError, match=r"unknown permission\(s\) Withdraw"):
        KucoinSim(parse_scenario(withdraw).exchanges["kucoin"], "mainnet")


# -- IP whitelist, environments, mutations --------------------------------------------------------------------


async def test_ip_whitelist_reads_the_peer_address() -> None:
    async with running() as sim:
        sim.key(1).ip_whitelist = ["127.0.0.2"]
        async with bound_session("127.0.0.3") as s3, bound_session("127.0.0.2") as s2:
            status, body, _ = await sim.get(API_KEY, 1, session=s3)
            assert (status, body) == (401, {"code": "400006", "msg": M_IP})
            assert (await sim.get(API_KEY, 1, session=s2))[0] == 200


async def test_environments_are_mainnet_only() -> None:
    assert set(KucoinSim.environments) == {"mainnet"}
    with pytest.raises(ScenarioError, match="unknown environment 'sandbox'"):
        await SimCluster(parse_scenario(scenario(environments=["mainnet", "sandbox"]))).start()
    async with running() as sim:
        sim.key(1).environment = "sandbox"  # a key of another site answers like an unknown key
        assert (await sim.get(API_KEY, 1))[1] == {"code": "400003", "msg": M_NO_KEY}


async def test_admin_mutations_show_on_the_next_request(sim: Sim) -> None:
    account = sim.spec.accounts[0]
    key = sim.key(1)
    assert (await sim.post(ORDER_TEST, 1, ORDER))[0] == 200
    key.permissions = ["General"]
    assert (await sim.post(ORDER_TEST, 1, ORDER))[1]["code"] == "400007"
    assert (await sim.get(API_KEY, 1))[1]["data"]["permission"] == "General"
    key.permissions = ["General", "Spot", "Transfer"]
    assert (await sim.get(API_KEY, 1))[1]["data"]["permission"] == "General,Spot,Transfer"
    key.ip_whitelist = ["10.0.0.1"]
    assert (await sim.get(API_KEY, 1))[1]["code"] == "400006"
    key.ip_whitelist = []
    account.frozen = True
    assert (await sim.get(API_KEY, 1))[1]["code"] == "411100"
    account.frozen = False
    account.balances = {"ETH": "2"}
    assert [a["currency"] for a in (await sim.get("/api/v1/accounts", 1))[1]["data"]] == ["ETH"]
    key.expires_at = key.created_at
    assert (await sim.get(API_KEY, 1))[1]["code"] == "400003"
    key.expires_at = None
    assert (await sim.get(API_KEY, 1))[0] == 200
    key.deleted = True
    assert (await sim.get(API_KEY, 1))[1]["code"] == "400003"
    sim.spec.clock_offset_ms = 60_000
    assert (await sim.get(API_KEY, 11))[1]["code"] == "400002"


async def test_admin_endpoint_changes_show_on_the_next_request() -> None:
    async with running(limits={"management_quota": 20}) as sim:
        assert (await sim.get(API_KEY, 1))[0] == 200
        assert (await sim.get(API_KEY, 1))[1]["code"] == "429000"
        await sim.admin("POST", "/admin/kucoin/reset-limits")
        assert (await sim.get(API_KEY, 1))[0] == 200
        await sim.admin("PATCH", "/admin/kucoin/limits", {"management_quota": 1000})
        # The admin endpoint takes any setting value; one the simulator cannot use falls back to its default.
        await sim.admin(
            "PATCH", "/admin/kucoin/settings", {"http_status_access_denied": "x", "banned_code": 1}
        )
        assert (await sim.get(API_KEY, 40))[:2] == (403, {"code": "400007", "msg": M_DENIED})
        assert (await sim.get(API_KEY, 30))[1]["code"] == "400700"
        await sim.admin("PATCH", "/admin/kucoin/settings", {"http_status_key_not_exists": 404})
        await sim.admin("POST", f"/admin/kucoin/keys/{1:024x}/expire")
        assert (await sim.get(API_KEY, 1))[:2] == (404, {"code": "400003", "msg": M_NO_KEY})
        await sim.admin("PATCH", f"/admin/kucoin/keys/{11:024x}", {"permissions": ["General", "Transfer"]})
        assert (await sim.get(API_KEY, 11))[1]["data"]["permission"] == "General,Transfer"
        await sim.admin("POST", "/admin/kucoin/accounts/1001/freeze")
        assert (await sim.get(API_KEY, 11))[1]["code"] == "411100"


# -- rate limits, maintenance, faults -------------------------------------------------------------------------


async def test_weight_is_counted_per_account_and_pool() -> None:
    async with running(limits={"management_quota": 45}) as sim:
        for remaining in ("25", "5"):  # api-key info weighs 20 in the management pool
            assert (await sim.get(API_KEY, 1))[2]["gw-ratelimit-remaining"] == remaining
        status, body, headers = await sim.get(API_KEY, 11)  # another key, same account (uid 1001)
        assert (status, body) == (429, {"code": "429000", "msg": M_RATE})
        assert headers["gw-ratelimit-limit"] == "45" and headers["gw-ratelimit-remaining"] == "5"
        assert 0 < int(headers["gw-ratelimit-reset"]) <= 30_000
        assert "Retry-After" not in headers
        assert (await sim.get("/api/v1/accounts", 1))[0] == 200  # weight 5 still fits
        assert (await sim.get(API_KEY, 80))[0] == 200  # another account has its own pool
        assert (await sim.post(ORDER_TEST, 1, ORDER))[0] == 200  # another pool (spot)


async def test_public_weight_is_counted_per_ip_and_the_window_resets() -> None:
    async with running(
        limits={"public_quota": 6, "window_s": 0.3}, settings={"send_retry_after": True}
    ) as sim:
        assert (await sim.get("/api/v1/status"))[0] == 200
        assert (await sim.get("/api/v1/timestamp"))[0] == 200
        status, body, headers = await sim.get("/api/v1/status")
        assert (status, body["code"], headers["Retry-After"]) == (429, "429000", "1")
        async with bound_session("127.0.0.3") as other:
            assert (await sim.get("/api/v1/status", session=other))[0] == 200
        await asyncio.sleep(0.35)
        assert (await sim.get("/api/v1/status"))[0] == 200


async def test_maintenance_keeps_status_reachable() -> None:
    async with running(maintenance=[{"start": "-1h", "end": "+1h"}]) as sim:
        status, body, _ = await sim.get(API_KEY, 1)
        assert (status, body) == (503, {"code": "503000", "msg": M_503})
        status, body, _ = await sim.get("/api/v1/status")
        assert (status, body["data"]["status"]) == (200, "close")
        assert (await sim.get("/api/v1/timestamp"))[0] == 200
    async with running(maintenance=[{"start": "-1h"}], settings={"maintenance_status": "cancelonly"}) as sim:
        assert (await sim.get("/api/v1/status"))[1]["data"]["status"] == "cancelonly"
    async with running(maintenance=[{"start": "+1h"}]) as sim:
        assert (await sim.get(API_KEY, 1))[0] == 200


async def test_injected_server_errors() -> None:
    async with running(faults={"error_rate": 1.0}) as sim:
        status, body, _ = await sim.get(API_KEY, 1)
        assert (status, body) == (500, {"code": "500000", "msg": M_500})
        assert (await sim.get("/api/v1/status"))[0] == 500  # faults hit every path, status included


# -- the demo scenario ----------------------------------------------------------------------------------------


async def test_demo_scenario_keys_show_their_intent() -> None:
    scen = load_scenario(DEMO)
    async with SimCluster(scen) as cluster, aiohttp.ClientSession() as session:
        base = cluster.url("kucoin")
        seen = set()
        for account in scen.exchanges["kucoin"].accounts:
            for key in account.keys:
                assert key.intent and key.label
                seen.add(key.intent)
                secret = key.client_secret or key.secret
                phrase = key.client_passphrase or key.passphrase or ""

                async def call(
                    method: str,
                    path: str,
                    body: str = "",
                    *,
                    k: KeySpec = key,
                    s: str = secret,
                    p: str = phrase,
                ) -> dict[str, Any]:
                    ts = str(int(time.time() * 1000))
                    headers = {
                        "KC-API-KEY": k.api_key,
                        "KC-API-SIGN": _b64_hmac(s, ts + method + path + body),
                        "KC-API-TIMESTAMP": ts,
                        "KC-API-PASSPHRASE": _b64_hmac(s, p),
                        "KC-API-KEY-VERSION": "2",
                        "Content-Type": "application/json",
                    }
                    async with session.request(method, base + path, data=body or None, headers=headers) as r:
                        result: dict[str, Any] = await r.json()
                        return result

                info = await call("GET", API_KEY)
                order = await call("POST", ORDER_TEST, json.dumps(ORDER, separators=(",", ":")))
                futures = await call("GET", FUTURES_ACCOUNT + "?currency=USDT")
                expected_info = {
                    "secret_mismatch": "400005",
                    "passphrase_invalid": "400004",
                    "clock_skew": "400002",
                    "ip_not_allowed": "400006",
                    "invalid_key": "400003",
                }
                if key.intent in expected_info:
                    assert info["code"] == expected_info[key.intent], key.label
                elif key.intent == "account_restricted":
                    assert {info["code"], order["code"]} & {
                        "411100",
                        "400700",
                        "400007",
                        "400303",
                        "400500",
                    }, key.label
                else:
                    assert info["code"] == "200000", key.label
                    perms = info["data"]["permission"].split(",")
                    assert ("Transfer" in perms) == (key.intent == "withdrawal_enabled")
                    assert (order["code"] == "400007") == (key.intent == "incorrect_permissions")
                    if "Futures" in perms:
                        assert (futures["code"] == "400007") == (key.intent == "inactive_futures")
                    assert info["data"]["uid"] == int(account.id)
                    if key.intent == "connected":
                        assert account.deposit_addresses and account.balances
        assert seen == {
            "connected", "already_connected", "secret_mismatch", "passphrase_invalid", "clock_skew",
            "ip_not_allowed", "withdrawal_enabled", "incorrect_permissions", "inactive_futures",
            "invalid_key", "account_restricted",
        }  # fmt: skip


# -- ccxt fidelity ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def ccxt_kucoin(
    sim: Sim, n: int, local_ip: str = "127.0.0.1"
) -> AsyncIterator[tuple[Any, list[tuple[int, Any]]]]:
    """ccxt's async client pointed at the simulator, sending from `local_ip`; yields it and the
    (HTTP status, request headers) of each exchange it made."""
    seen: list[tuple[int, Any]] = []

    async def on_end(_s: Any, _ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        seen.append((params.response.status, params.headers))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(local_ip, 0)), trace_configs=[trace]
    )
    k = key_data(n)
    exchange = ccxt.kucoin(
        {
            "apiKey": k["api_key"],
            "secret": k["secret"],
            "password": k["passphrase"],
            "session": session,
            "urls": {"api": {"private": sim.base, "public": sim.base, "futuresPrivate": sim.base}},
        }
    )
    exchange.options["partner"] = {}  # otherwise ccxt adds its broker headers
    try:
        yield exchange, seen
    finally:
        await exchange.close()
        await session.close()


async def test_ccxt_reads_and_is_refused_like_on_kucoin(sim: Sim) -> None:
    async with ccxt_kucoin(sim, 1) as (exchange, seen):
        info = await exchange.private_get_user_api_key()
        assert info["code"] == "200000" and info["data"]["uid"] == 1001
        assert info["data"]["permission"] == "General,Spot,Futures" and info["data"]["apiKey"] == f"{1:024x}"
        status, headers = seen[-1]
        assert status == 200 and headers["KC-API-KEY-VERSION"] == "2"
        assert headers["KC-API-PASSPHRASE"] != "pass-phrase-1"  # ccxt sends the v2 HMAC'd passphrase
        balances = await exchange.private_get_accounts()
        assert {a["currency"]: a["available"] for a in balances["data"]} == {"USDT": "150.5", "BTC": "0.25"}
        address = await exchange.private_get_deposit_addresses({"currency": "BTC"})  # signed query string
        assert address["data"]["address"] == "bc1qdemo"
        assert (await exchange.futuresprivate_get_account_overview({"currency": "USDT"}))["data"][
            "accountEquity"
        ] == 150.5
        assert (await exchange.private_post_hf_orders_test(dict(ORDER)))["code"] == "200000"  # signed body

        exchange.secret = "00000000-0000-4000-8000-000000000000"
        with pytest.raises(ccxt.AuthenticationError, match="400005"):
            await exchange.private_get_user_api_key()
        assert seen[-1][0] == 401

        exchange.secret = key_data(1)["secret"]
        exchange.password = "not-the-passphrase"
        with pytest.raises(ccxt.AuthenticationError, match="400004"):
            await exchange.private_get_accounts()
        assert seen[-1][0] == 401

        exchange.password = key_data(1)["passphrase"]
        sim.spec.clock_offset_ms = 120_000
        with pytest.raises(ccxt.InvalidNonce, match="400002"):
            await exchange.private_get_user_api_key()
        assert seen[-1][0] == 401
        sim.spec.clock_offset_ms = 0

        exchange.apiKey, exchange.secret, exchange.password = (
            key_data(20)[f] for f in ("api_key", "secret", "passphrase")
        )
        with pytest.raises(ccxt.AccountSuspended, match="411100"):
            await exchange.private_get_accounts()
        exchange.apiKey, exchange.secret, exchange.password = (
            key_data(60)[f] for f in ("api_key", "secret", "passphrase")
        )
        with pytest.raises(ccxt.RestrictedLocation, match="400500"):
            await exchange.private_post_hf_orders_test(dict(ORDER))
        exchange.apiKey, exchange.secret, exchange.password = (
            key_data(50)[f] for f in ("api_key", "secret", "passphrase")
        )
        with pytest.raises(ccxt.PermissionDenied, match="400303"):
            await exchange.private_post_hf_orders_test(dict(ORDER))
        exchange.apiKey, exchange.secret, exchange.password = (
            key_data(2)[f] for f in ("api_key", "secret", "passphrase")
        )
        with pytest.raises(ccxt.AuthenticationError, match="400007"):
            await exchange.private_post_hf_orders_test(dict(ORDER))
        assert seen[-1][0] == 403


async def test_ccxt_from_outside_the_whitelist(sim: Sim) -> None:
    sim.key(1).ip_whitelist = ["127.0.0.2"]
    async with ccxt_kucoin(sim, 1, local_ip="127.0.0.3") as (exchange, seen):
        with pytest.raises(ccxt.AuthenticationError, match="400006"):
            await exchange.private_get_user_api_key()
        assert seen[-1][0] == 401
    async with ccxt_kucoin(sim, 1, local_ip="127.0.0.2") as (exchange, _):
        assert (await exchange.private_get_user_api_key())["data"]["ipWhitelist"] == "127.**.2"


async def test_ccxt_rate_limit() -> None:
    async with running(limits={"management_quota": 20}) as sim, ccxt_kucoin(sim, 1) as (exchange, seen):
        await exchange.private_get_user_api_key()
        with pytest.raises(ccxt.RateLimitExceeded, match="429000"):
            await exchange.private_get_user_api_key()
        assert seen[-1][0] == 429
