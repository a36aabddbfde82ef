"""Binance adapter: every state the simulator can produce, over real HTTP, plus classify() and parallelism.

The simulator stands in for Binance; the adapter is written from the reference. Keys are
sha256 hex digests (64 characters [0-9a-f], Binance's format), stable per name.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from keysentry.domain.permissions import READ_PERMISSIONS, Permission
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.exchanges.base import Cause, CheckRequest, KeyFacts, Probe
from keysentry.exchanges.binance import BinanceAdapter, BinanceSettings
from keysentry.exchanges.transport import MockTransport, RawResponse, Timeouts, Transport
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from windows import fresh_window

P = Permission
C = Cause
LOOPBACK = ["127.0.0.0/8"]
TRADE = ["reading", "spot_and_margin_trading"]
SPOT = frozenset({P.SPOT_TRADE})
# Canary: the secret of the keys below must never show in anything the adapter returns.
CANARY = "c4n4ry"


def creds(name: str, *, secret: str | None = None) -> ApiCredentials:
    api_key = hashlib.sha256(name.encode()).hexdigest()
    return ApiCredentials(api_key, Secret(secret or _secret(name)))


def _secret(name: str) -> str:
    return (CANARY + hashlib.sha256(f"{name}/secret".encode()).hexdigest())[:64]


def key(name: str, **fields: Any) -> dict[str, Any]:
    c = creds(name)
    return {"label": name, "api_key": c.api_key, "secret": c.secret.reveal(), **fields}


def account(uid: str, *keys: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": uid, "keys": list(keys), **fields}


ACCOUNTS = [
    account(
        "354937868",
        key("ok", permissions=TRADE, ip_whitelist=LOOPBACK, created_at="-10d"),
        key("read", permissions=["reading"], ip_whitelist=LOOPBACK),
        key("spot-only", permissions=["spot_and_margin_trading"], ip_whitelist=LOOPBACK),
        key("fut", permissions=[*TRADE, "futures"], ip_whitelist=LOOPBACK),
        key(
            "wide",
            permissions=[
                *TRADE,
                "margin",
                "withdrawals",
                "internal_transfer",
                "universal_transfer",
                "vanilla_options",
            ],
            ip_whitelist=LOOPBACK,
        ),
        key("wl", permissions=TRADE, ip_whitelist=["127.0.0.2"]),
        key("expiring", permissions=TRADE, expires_at="+5d"),
        key("lapsed", permissions=TRADE, expires_at="-3d"),
        key("gone", permissions=TRADE, ip_whitelist=LOOPBACK, expires_at="-1d"),
        key("deleted", permissions=TRADE, ip_whitelist=LOOPBACK, deleted=True),
        key("testnet", permissions=TRADE, environment="testnet"),
        key("us", permissions=TRADE, environment="us"),
        balances={"BTC": "0.5", "USDT": "1250.5", "ETH": "0"},
        deposit_addresses={"BTC": "bc1qexampledepositaddress0000000000000000"},
    ),
    account("1006", key("frozen", permissions=TRADE, ip_whitelist=LOOPBACK), frozen=True),
    account("1007", key("banned", permissions=TRADE, ip_whitelist=LOOPBACK), banned=True),
    account("1008", key("apioff", permissions=TRADE, ip_whitelist=LOOPBACK), api_disabled=True),
    account("1009", key("kyc", permissions=TRADE, ip_whitelist=LOOPBACK), kyc_required=True),
    account("1010", key("region", permissions=TRADE, ip_whitelist=LOOPBACK), region_restricted=True),
    account(
        "1011",
        key("nofut", permissions=[*TRADE, "futures"], ip_whitelist=LOOPBACK),
        key("nofut-perm", permissions=TRADE, ip_whitelist=LOOPBACK),
        futures_opened=False,
    ),
]


def scenario(**spec: Any) -> Any:
    binance = {"environments": ["mainnet", "testnet", "us"], "accounts": ACCOUNTS, **spec}
    return parse_scenario({"seed": 1, "exchanges": {"binance": binance}})


@asynccontextmanager
async def simulated(**spec: Any) -> AsyncIterator[SimCluster]:
    async with SimCluster(scenario(**spec)) as cluster:
        yield cluster


async def check(
    cluster: SimCluster,
    name: str,
    *,
    env: str = "mainnet",
    egress: tuple[str, ...] = (),
    timeouts: Timeouts | None = None,
    settings: BinanceSettings | None = None,
    credentials: ApiCredentials | None = None,
    **request: Any,
) -> KeyFacts:
    transport = Transport(egress_ips=egress, timeouts=timeouts or Timeouts(total=5.0))
    try:
        adapter = BinanceAdapter(
            transport, environment=env, base_url=cluster.url("binance", env), settings=settings
        )
        return await adapter.check(CheckRequest(credentials or creds(name), egress_ips=egress, **request))
    finally:
        await transport.close()


def near(moment: datetime | None, expected: datetime, slack: timedelta = timedelta(minutes=1)) -> bool:
    return moment is not None and abs(moment - expected) < slack


def now() -> datetime:
    return datetime.now(UTC)


# -- keys that work, and what their flags say ----------------------------------------------------------


async def test_connected_key_reports_account_permissions_and_ip_facts() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "ok")
    assert facts.cause is C.OK and facts.candidates == ()
    assert facts.account_id == "354937868"
    assert facts.permissions == READ_PERMISSIONS | SPOT
    assert {"enableReading", "enableSpotAndMarginTrading"} <= set(facts.native_permissions)
    assert "enableWithdrawals" not in facts.native_permissions
    assert facts.ip_restricted is True and facts.ip_whitelist is None  # Binance never reveals the list
    assert near(facts.created_at, now() - timedelta(days=10))
    assert facts.expires_at is None and facts.expiry_kind is None
    assert facts.account_flags["canTrade"] is True
    assert set(facts.outcomes) == {
        Probe.INTROSPECTION,
        Probe.ACCOUNT,
        Probe.TRADE,
    }  # nothing failed: one round
    assert facts.server_time_offset_ms is None


@pytest.mark.parametrize(
    ("name", "needs_futures", "cause", "permissions"),
    [
        ("read", False, C.PERMISSION_DENIED, READ_PERMISSIONS),
        ("spot-only", False, C.PERMISSION_DENIED, SPOT),
        ("fut", True, C.OK, READ_PERMISSIONS | SPOT | {P.FUTURES_TRADE}),
        (
            "wide",
            False,
            C.OK,
            READ_PERMISSIONS | SPOT | {P.MARGIN_TRADE, P.WITHDRAW, P.TRANSFER, P.OPTIONS_TRADE},
        ),
    ],
)
async def test_permission_combinations(
    name: str, needs_futures: bool, cause: Cause, permissions: frozenset[Permission]
) -> None:
    async with simulated() as cluster:
        facts = await check(cluster, name, needs_futures=needs_futures)
    assert facts.cause is cause
    assert facts.permissions == permissions
    if needs_futures:
        assert facts.futures_active is True


async def test_read_only_key_is_a_missing_trade_permission_not_an_ambiguous_refusal() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "read")
    trade = facts.outcomes[Probe.TRADE]
    assert trade.cause is C.PERMISSION_DENIED and trade.code == "-2015"
    assert facts.account_id == "354937868"  # reads work
    assert any("enableSpotAndMarginTrading is off" in e for e in facts.evidence)


async def test_key_without_reading_keeps_no_account_id() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "spot-only")
    assert facts.outcomes[Probe.ACCOUNT].cause is C.PERMISSION_DENIED
    assert facts.outcomes[Probe.TRADE].ok
    assert facts.account_id is None


async def test_deposit_addresses_present_and_missing() -> None:
    async with simulated() as cluster:
        present = await check(cluster, "ok", deposit_currency="btc")
        missing = await check(cluster, "ok", deposit_currency="XRP")
    assert present.cause is C.OK and present.deposit_addresses == {"BTC": True}
    assert missing.cause is C.OK and missing.deposit_addresses == {"XRP": False}
    assert missing.outcomes[Probe.DEPOSIT_ADDRESS].cause is C.NOT_FOUND


# -- keys the exchange refuses ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["never-created", "deleted", "gone", "banned", "testnet"])
async def test_unknown_key_stays_ambiguous_with_one_egress_address(name: str) -> None:
    async with simulated() as cluster:
        facts = await check(cluster, name)
    assert facts.cause is C.AMBIGUOUS_AUTH
    assert facts.candidates == (C.UNKNOWN_KEY, C.IP_NOT_ALLOWED)
    assert facts.permissions is None and facts.account_id is None
    assert any("only one egress address" in e for e in facts.evidence)
    assert Probe.SERVER_TIME in facts.outcomes  # something failed: the second round ran


async def test_malformed_key() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "x", credentials=ApiCredentials("not-a-key", Secret("s" * 64)))
    assert facts.cause is C.MALFORMED_KEY
    assert facts.outcomes[Probe.INTROSPECTION].code == "-2014"


async def test_wrong_secret() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "ok", credentials=creds("ok", secret=_secret("another key")))
    assert facts.cause is C.BAD_SIGNATURE
    assert facts.outcomes[Probe.INTROSPECTION].code == "-1022"
    assert facts.server_time_offset_ms is not None and abs(facts.server_time_offset_ms) < 5000


async def test_clock_skew_measures_the_offset() -> None:
    async with simulated(clock_offset_ms=120_000) as cluster:
        facts = await check(cluster, "ok")
    assert facts.cause is C.CLOCK_SKEW
    assert facts.server_time_offset_ms is not None
    assert abs(facts.server_time_offset_ms - 120_000) < 5000
    assert any("-1021" in e and "ms from ours" in e for e in facts.evidence)


async def test_ip_not_allowed_is_proved_from_another_egress_address() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "wl", egress=("127.0.0.3", "127.0.0.2"))
    assert facts.cause is C.IP_NOT_ALLOWED and facts.candidates == ()
    assert facts.outcomes[Probe.INTROSPECTION].egress_ip == "127.0.0.3"
    assert facts.ip_restricted is True
    assert facts.permissions == READ_PERMISSIONS | SPOT  # read from the address that answered
    evidence = " ".join(facts.evidence)
    assert "answered from 127.0.0.2 but -2015 from 127.0.0.3" in evidence


async def test_whitelisted_first_address_needs_no_second_round() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "wl", egress=("127.0.0.2", "127.0.0.3"))
    assert facts.cause is C.OK and facts.ip_restricted is True
    assert Probe.SERVER_TIME not in facts.outcomes


async def test_ip_outside_whitelist_with_one_address_stays_ambiguous() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "wl", egress=("127.0.0.3",))
    assert facts.cause is C.AMBIGUOUS_AUTH
    assert facts.candidates == (C.UNKNOWN_KEY, C.IP_NOT_ALLOWED)
    assert any("Binance saw the request from 127.0.0.3" in e for e in facts.evidence)


async def test_refused_from_every_address_stays_ambiguous() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "wl", egress=("127.0.0.3", "127.0.0.4"))
    assert facts.cause is C.AMBIGUOUS_AUTH
    assert "-2015 from every egress address asked (127.0.0.3, 127.0.0.4)" in facts.evidence
    assert any("no egress address got an answer" in e for e in facts.evidence)


async def test_lapsed_trading_authority_is_expiry_not_a_missing_permission() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "lapsed")
    assert facts.cause is C.KEY_EXPIRED
    assert facts.outcomes[Probe.TRADE].cause is C.KEY_EXPIRED
    assert facts.expiry_kind == "trading_authority"
    assert near(facts.expires_at, now() - timedelta(days=3))
    assert facts.ip_restricted is False
    assert P.SPOT_TRADE not in (facts.permissions or ())
    assert any("trading authority expired" in e for e in facts.evidence)


async def test_expiring_key_works_and_reports_its_expiry() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "expiring")
    assert facts.cause is C.OK
    assert facts.expiry_kind == "trading_authority"
    assert near(facts.expires_at, now() + timedelta(days=5))
    assert facts.ip_restricted is False


async def test_frozen_account() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "frozen")
    assert facts.cause is C.ACCOUNT_FROZEN
    assert facts.outcomes[Probe.TRADE].code == "-2010"
    assert facts.account_flags["canTrade"] is False
    assert facts.account_flags["account_status"] == "Frozen"


@pytest.mark.parametrize(
    ("name", "settings", "cause"),
    [
        ("banned", {"banned_answer": "not_authorized"}, C.ACCOUNT_BANNED),
        ("apioff", {}, C.API_DISABLED),
        ("apioff", {"api_disabled_answer": "invalid_key"}, C.AMBIGUOUS_AUTH),
        ("kyc", {}, C.KYC_REQUIRED),
        ("region", {}, C.REGION_RESTRICTED),
    ],
)
async def test_restricted_accounts(name: str, settings: dict[str, Any], cause: Cause) -> None:
    async with simulated(settings=settings) as cluster:
        facts = await check(cluster, name)
    assert facts.cause is cause


async def test_kyc_block_on_wallet_calls_still_reads_the_account() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "kyc")
    assert facts.outcomes[Probe.INTROSPECTION].code == "200003903"
    assert facts.account_id == "1009"  # /api works, only /sapi is blocked
    assert facts.permissions == READ_PERMISSIONS | SPOT  # inferred from the calls that answered


async def test_futures_account_not_opened() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "nofut", needs_futures=True)
    assert facts.cause is C.FUTURES_NOT_OPENED
    assert facts.futures_active is False
    assert facts.outcomes[Probe.FUTURES].code == "-2015"
    assert facts.account_flags["isFutureEnabled"] is False
    assert any("not opened" in e for e in facts.evidence)


async def test_futures_permission_missing_on_an_opened_account() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "ok", needs_futures=True)
    assert facts.cause is C.PERMISSION_DENIED
    assert facts.futures_active is True
    assert P.FUTURES_TRADE not in (facts.permissions or ())
    assert any("enableFutures is off" in e for e in facts.evidence)


# -- environments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["testnet", "us"])
async def test_key_of_another_environment(env: str) -> None:
    async with simulated() as cluster:
        on_mainnet = await check(cluster, env)
        at_home = await check(cluster, env, env=env)
    assert on_mainnet.cause is C.AMBIGUOUS_AUTH
    assert at_home.cause is C.OK and at_home.environment == env
    assert at_home.account_id == "354937868"
    assert at_home.permissions is not None and at_home.permissions >= SPOT


async def test_spot_testnet_without_sapi_infers_permissions() -> None:
    async with simulated() as cluster:
        facts = await check(cluster, "testnet", env="testnet", needs_futures=False)
    assert Probe.INTROSPECTION not in facts.outcomes
    assert facts.permissions == READ_PERMISSIONS | SPOT
    assert facts.ip_restricted is None  # unknown without apiRestrictions
    assert any("inferred" in e for e in facts.evidence)


async def test_engine_finds_the_key_in_its_environment() -> None:
    from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine

    async with simulated() as cluster, Transport() as transport:
        options = CheckOptions(
            base_url=cluster.url("binance"),
            other_environments={"testnet": cluster.url("binance", "testnet")},
        )
        c = creds("testnet")
        diagnosis = await DiagnosisEngine(transport).diagnose_credentials("binance", c, options)
    assert diagnosis.status.value == "invalid_key"
    assert any(f.code == "wrong_environment" for f in diagnosis.findings)


# -- the exchange could not answer ---------------------------------------------------------------


async def test_rate_limited() -> None:
    async with simulated(limits={"api_ip_weight_per_minute": 5}) as cluster:
        facts = await check(cluster, "ok")
    assert facts.cause is C.RATE_LIMITED
    heavy = facts.outcomes[Probe.ACCOUNT]  # weight 20 over a limit of 5
    assert heavy.http_status == 429 and heavy.retry_after_s is not None and heavy.retry_after_s > 0
    assert facts.outcomes[Probe.INTROSPECTION].ok  # /sapi has its own budget
    assert Probe.SERVER_TIME not in facts.outcomes  # told to back off: no second round


async def test_ip_banned() -> None:
    limits = {"api_ip_weight_per_minute": 5}
    async with simulated(limits=limits, settings={"ban_after_rejected_requests": 0}) as cluster:
        await fresh_window(60)
        for _ in range(2):  # the second 429 of the window bans the address
            await check(cluster, "ok")
        facts = await check(cluster, "ok")
    assert facts.cause is C.IP_BANNED
    assert {o.http_status for o in facts.outcomes.values()} == {418}  # a ban covers every family
    ban = facts.outcomes[Probe.INTROSPECTION]
    assert ban.retry_after_s is not None and 60 < ban.retry_after_s <= 120
    assert ban.data["banned_until_ms"] > datetime.now(UTC).timestamp() * 1000


async def test_maintenance() -> None:
    async with simulated(maintenance=[{"start": "-1m"}]) as cluster:
        facts = await check(cluster, "ok")
    assert facts.cause is C.MAINTENANCE
    assert facts.system_status == "maintenance"
    assert facts.outcomes[Probe.INTROSPECTION].code == "1"


async def test_server_errors() -> None:
    async with simulated(faults={"error_rate": 1.0}) as cluster:
        facts = await check(cluster, "ok")
    assert facts.cause is C.SERVER_ERROR
    assert facts.outcomes[Probe.ACCOUNT].http_status == 500
    assert facts.system_status is None  # the status call failed too


async def test_timeouts() -> None:
    async with simulated(faults={"timeout_rate": 1.0, "timeout_s": 2}) as cluster:
        facts = await check(cluster, "ok", timeouts=Timeouts(connect=1.0, total=0.2))
    assert facts.cause is C.TIMEOUT
    assert all(o.cause is C.TIMEOUT for o in facts.outcomes.values())
    assert Probe.SERVER_TIME not in facts.outcomes  # unreachable: no second round


# -- classify(): every code of the table, from raw answers -----------------------------------------

MSG_2015 = "Invalid API-key, IP, or permissions for action, request ip: 127.0.0.9"
BAN_MSG = "Way too much request weight used; IP banned until {until}. Please use WebSocket Streams."


@pytest.mark.parametrize(
    ("probe", "status", "body", "cause"),
    [
        (Probe.INTROSPECTION, 401, {"code": -2015, "msg": MSG_2015}, C.AMBIGUOUS_AUTH),
        (Probe.ACCOUNT, 401, {"code": -2008, "msg": "Invalid Api-Key ID."}, C.UNKNOWN_KEY),
        (Probe.ACCOUNT, 401, {"code": -2014, "msg": "API-key format invalid."}, C.MALFORMED_KEY),
        (
            Probe.ACCOUNT,
            400,
            {"code": -1022, "msg": "Signature for this request is not valid."},
            C.BAD_SIGNATURE,
        ),
        (
            Probe.ACCOUNT,
            400,
            {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."},
            C.CLOCK_SKEW,
        ),
        (
            Probe.ACCOUNT,
            401,
            {"code": -1002, "msg": "You are not authorized to execute this request."},
            C.ACCOUNT_BANNED,
        ),
        (
            Probe.TRADE,
            400,
            {"code": -2010, "msg": "This account may not place or cancel orders."},
            C.ACCOUNT_FROZEN,
        ),
        (
            Probe.TRADE,
            400,
            {"code": -2011, "msg": "This action is disabled on this account."},
            C.ACCOUNT_FROZEN,
        ),
        (Probe.TRADE, 400, {"code": -2010, "msg": "Rest API trading is not enabled."}, C.MAINTENANCE),
        (
            Probe.TRADE,
            400,
            {"code": -2010, "msg": "Account has insufficient balance for requested action."},
            C.OK,
        ),
        (Probe.TRADE, 400, {"code": -1013, "msg": "Filter failure: NOTIONAL"}, C.OK),
        (Probe.TRADE, 400, {"code": -1121, "msg": "Invalid symbol."}, C.OK),
        (Probe.ACCOUNT, 400, {"code": -1121, "msg": "Invalid symbol."}, C.UNEXPECTED),
        (Probe.FUTURES, 401, {"code": -2017, "msg": "API Keys are locked on this account."}, C.API_DISABLED),
        (
            Probe.INTROSPECTION,
            451,
            {"code": 0, "msg": "Service unavailable from a restricted location"},
            C.REGION_RESTRICTED,
        ),
        (
            Probe.INTROSPECTION,
            400,
            {"code": 200003903, "msg": "Your identity verification has been rejected."},
            C.KYC_REQUIRED,
        ),
        (
            Probe.FUTURES,
            400,
            {"code": -4401, "msg": "Compliance restricted account permission"},
            C.KYC_REQUIRED,
        ),
        (Probe.FUTURES, 400, {"code": -4402, "msg": "not available in your region"}, C.REGION_RESTRICTED),
        (
            Probe.INTROSPECTION,
            400,
            {"code": -13007, "msg": "The Agreement is not signed"},
            C.AGREEMENT_PENDING,
        ),
        (Probe.ACCOUNT, 429, {"code": -1003, "msg": "Too much request weight used"}, C.RATE_LIMITED),
        (Probe.TRADE, 429, {"code": -1015, "msg": "Too many new orders"}, C.RATE_LIMITED),
        (Probe.ACCOUNT, 418, {"code": -1003, "msg": "Way too much request weight used"}, C.IP_BANNED),
        (Probe.ACCOUNT, 503, {"code": -1008, "msg": "Server is currently overloaded"}, C.SERVER_ERROR),
        (Probe.ACCOUNT, 500, {"code": -1001, "msg": "Internal error"}, C.SERVER_ERROR),
        (
            Probe.ACCOUNT,
            504,
            {"code": -1007, "msg": "Timeout waiting for response from backend server."},
            C.SERVER_ERROR,
        ),
        (Probe.ACCOUNT, 400, {"code": -1016, "msg": "This service is no longer available."}, C.SERVER_ERROR),
        (Probe.INTROSPECTION, 503, {"code": 1, "msg": "System is under maintenance."}, C.MAINTENANCE),
        (Probe.INTROSPECTION, 200, {"code": 1, "msg": "System is under maintenance."}, C.MAINTENANCE),
        (Probe.DEPOSIT_ADDRESS, 400, {"code": -4018, "msg": "We don't have this asset."}, C.NOT_FOUND),
        (Probe.ACCOUNT, 400, {"code": -4018, "msg": "We don't have this asset."}, C.UNEXPECTED),
        (Probe.ACCOUNT, 400, {"code": -9999, "msg": "Something new."}, C.UNEXPECTED),
        (Probe.ACCOUNT, 502, {"code": -9999, "msg": "Bad gateway"}, C.SERVER_ERROR),
    ],
)
def test_classify_codes(probe: Probe, status: int, body: dict[str, Any], cause: Cause) -> None:
    adapter = BinanceAdapter(MockTransport(lambda *a: RawResponse(500)))
    outcome = adapter.classify(probe, RawResponse.from_json(status, body))
    assert outcome.cause is cause
    assert outcome.http_status == status
    assert outcome.code == str(body["code"])
    assert outcome.message == body["msg"]  # kept for the unexpected ones above all


@pytest.mark.parametrize(
    ("status", "body", "cause"),
    [
        (503, b"", C.MAINTENANCE),
        (500, b"<html>oops</html>", C.SERVER_ERROR),
        (403, b"<html>WAF</html>", C.IP_BANNED),
        (404, b"", C.UNEXPECTED),
    ],
)
def test_classify_http_level_answers(status: int, body: bytes, cause: Cause) -> None:
    adapter = BinanceAdapter(MockTransport(lambda *a: RawResponse(500)))
    outcome = adapter.classify(Probe.ACCOUNT, RawResponse(status, {"Retry-After": "7"}, body))
    assert outcome.cause is cause and outcome.code is None
    if cause is C.UNEXPECTED:
        assert outcome.message is not None and "404" in outcome.message


def test_classify_success_parses_the_body() -> None:
    adapter = BinanceAdapter(MockTransport(lambda *a: RawResponse(500)))
    outcome = adapter.classify(Probe.ACCOUNT, RawResponse.from_json(200, {"uid": 7, "canTrade": True}))
    assert outcome.ok and outcome.data == {"uid": 7, "canTrade": True}
    assert adapter.classify(Probe.ACCOUNT, RawResponse(200, {}, b"not json")).cause is C.UNEXPECTED


def test_classify_reads_retry_after_and_ban_end() -> None:
    clock_ms = 1_700_000_000_000
    adapter = BinanceAdapter(MockTransport(lambda *a: RawResponse(500)), clock_ms=lambda: clock_ms)
    body = {"code": -1003, "msg": BAN_MSG.format(until=clock_ms + 90_000)}
    without_header = adapter.classify(Probe.ACCOUNT, RawResponse.from_json(418, body))
    assert without_header.retry_after_s == 90 and without_header.data["banned_until_ms"] == clock_ms + 90_000
    with_header = adapter.classify(
        Probe.ACCOUNT, RawResponse.from_json(418, body, headers={"Retry-After": "30"})
    )
    assert with_header.retry_after_s == 30
    limited = {"code": -1003, "msg": "Too much request weight used"}
    assert (
        adapter.classify(
            Probe.ACCOUNT, RawResponse.from_json(429, limited, headers={"Retry-After": "12"})
        ).retry_after_s
        == 12
    )
    refused = adapter.classify(Probe.FUTURES, RawResponse.from_json(401, {"code": -2015, "msg": MSG_2015}))
    assert refused.data["request_ip"] == "127.0.0.9"


def test_settings_override_the_code_table() -> None:
    settings = BinanceSettings(
        code_overrides={-1002: C.PERMISSION_DENIED}, deposit_missing_codes=frozenset({-9000})
    )
    adapter = BinanceAdapter(MockTransport(lambda *a: RawResponse(500)), settings=settings)
    answer = RawResponse.from_json(
        401, {"code": -1002, "msg": "You are not authorized to execute this request."}
    )
    assert adapter.classify(Probe.ACCOUNT, answer).cause is C.PERMISSION_DENIED
    missing = RawResponse.from_json(400, {"code": -9000, "msg": "no address"})
    assert adapter.classify(Probe.DEPOSIT_ADDRESS, missing).cause is C.NOT_FOUND


# -- signing, parallelism, secrets -------------------------------------------------------------------

RESTRICTIONS = {
    "ipRestrict": True,
    "createTime": 1_600_000_000_000,
    "enableReading": True,
    "enableSpotAndMarginTrading": True,
    "enableFutures": True,
}
ANSWERS: Mapping[str, Any] = {
    "/sapi/v1/account/apiRestrictions": RESTRICTIONS,
    "/api/v3/account": {"uid": 42, "canTrade": True},
    "/api/v3/order/test": {},
    "/fapi/v2/account": {"canTrade": True, "assets": []},
    "/sapi/v1/capital/deposit/address": {"address": "0xabc", "coin": "USDT"},
}


def answer(url: str) -> RawResponse:
    return RawResponse.from_json(200, ANSWERS[urlsplit(url).path])


async def test_requests_are_signed_the_documented_way() -> None:
    transport = MockTransport(lambda method, url, headers, body: answer(url))
    c = creds("ok")
    adapter = BinanceAdapter(transport, clock_ms=lambda: 1_499_827_319_559)
    facts = await adapter.check(CheckRequest(c, pairs=("ETH/BTC",)))
    assert facts.cause is C.OK
    for sent in transport.sent:
        assert sent.headers["X-MBX-APIKEY"] == c.api_key
        query = urlsplit(sent.url).query
        unsigned, _, signature = query.rpartition("&signature=")
        expected = hmac.new(c.secret.reveal().encode(), unsigned.encode(), hashlib.sha256).hexdigest()
        assert signature == expected
        params = parse_qsl(unsigned)
        assert params[-2:] == [("timestamp", "1499827319559"), ("recvWindow", "5000")]
    order = next(s for s in transport.sent if s.url.startswith("https://api.binance.com/api/v3/order/test"))
    assert order.method == "POST"
    assert {"symbol": "ETHBTC", "side": "BUY", "type": "MARKET"}.items() <= dict(
        parse_qsl(urlsplit(order.url).query)
    ).items()


async def test_any_answer_turns_other_refusals_into_missing_permissions() -> None:
    """Were apiRestrictions to need reading, a trade-only key must still not look unknown."""

    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        if urlsplit(url).path == "/api/v3/order/test":
            return RawResponse.from_json(200, {})
        return RawResponse.from_json(401, {"code": -2015, "msg": MSG_2015})

    facts = await BinanceAdapter(MockTransport(handler)).check(CheckRequest(creds("ok")))
    assert facts.cause is C.PERMISSION_DENIED and facts.candidates == ()
    assert facts.permissions == SPOT  # inferred from order/test
    refused = {facts.outcomes[Probe.INTROSPECTION].cause, facts.outcomes[Probe.ACCOUNT].cause}
    assert refused == {C.PERMISSION_DENIED}


async def test_base_url_replaces_every_family() -> None:
    transport = MockTransport(lambda method, url, headers, body: answer(url))
    adapter = BinanceAdapter(transport, base_url="http://127.0.0.1:9")
    await adapter.check(CheckRequest(creds("ok"), needs_futures=True, deposit_currency="USDT"))
    assert {urlsplit(s.url).netloc for s in transport.sent} == {"127.0.0.1:9"}


async def test_first_round_probes_run_in_parallel() -> None:
    expected = 5  # apiRestrictions, account, order/test, futures account, deposit address
    in_flight = 0
    most = 0
    all_arrived = asyncio.Event()

    async def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == expected:
            all_arrived.set()
        try:
            # Sequential probes would never get here together: the first would wait out the timeout.
            await asyncio.wait_for(all_arrived.wait(), timeout=5)
        except TimeoutError:
            pytest.fail(f"only {in_flight} request(s) in flight at once, expected {expected}")
        finally:
            in_flight -= 1
        return answer(url)

    adapter = BinanceAdapter(MockTransport(handler))
    facts = await adapter.check(CheckRequest(creds("ok"), needs_futures=True, deposit_currency="USDT"))
    assert most == expected
    assert facts.cause is C.OK and facts.futures_active is True and facts.deposit_addresses == {"USDT": True}


async def test_no_secret_in_outcomes_facts_or_evidence() -> None:
    c = creds("ok")
    secret = c.secret.reveal()
    assert secret.startswith(CANARY)

    def echoing(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        # A hostile answer that echoes what it was sent, the way Bybit's 10004 does.
        return RawResponse.from_json(
            400, {"code": -1022, "msg": f"bad: {secret} {headers.get('X-MBX-APIKEY')}"}
        )

    mocked = await BinanceAdapter(MockTransport(echoing)).check(CheckRequest(c))
    async with simulated() as cluster:
        checked = [
            mocked,
            await check(cluster, "ok", deposit_currency="BTC", needs_futures=True),
            await check(cluster, "wl", egress=("127.0.0.3", "127.0.0.2")),
            await check(cluster, "ok", credentials=creds("ok", secret=_secret("other"))),
        ]
    for facts in checked:
        texts = [repr(facts), *facts.evidence, *(repr(o) for o in facts.outcomes.values())]
        texts += [str(o.message) for o in facts.outcomes.values()]
        for text in texts:
            assert CANARY not in text
            assert c.api_key not in text
