"""The Bybit adapter over real HTTP against the Bybit simulator, plus its code table on raw answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from keysentry.domain.permissions import Permission
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.exchanges import bybit as bybit_module
from keysentry.exchanges.base import Cause, CheckRequest, KeyFacts, Probe, now_ms
from keysentry.exchanges.bybit import BybitAdapter
from keysentry.exchanges.transport import MockTransport, RawResponse, Timeouts, Transport
from keysentry.sim.bybit import BybitSim
from keysentry.sim.scenario import load_scenario, parse_scenario
from keysentry.sim.server import SimCluster

DEMO = Path(__file__).parents[2] / "src/keysentry/sim/scenarios/demo-bybit.yaml"
P = Permission
READS = frozenset({P.BALANCE_READ, P.TRADE_HISTORY_READ, P.DEPOSIT_ADDRESS_READ})
CONTRACT = ["ContractTrade.Order", "ContractTrade.Position"]


def api_key(n: int) -> str:
    return f"BYBITKEY{n:010d}"  # 18 letters/digits


def secret(n: int) -> str:
    return f"BybitSecret{n:025d}"  # 36 letters/digits


def key(n: int, **fields: Any) -> dict[str, Any]:
    return {"api_key": api_key(n), "secret": secret(n), "label": f"key {n}", **fields}


def account(uid: int, *keys: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return {"id": str(uid), "keys": list(keys), **flags}


def creds(n: int, *, wrong_secret: bool = False, passphrase: str | None = None) -> ApiCredentials:
    value = secret(n + 1) if wrong_secret else secret(n)
    return ApiCredentials(api_key(n), Secret(value), Secret(passphrase) if passphrase else None)


@dataclass
class Bench:
    cluster: SimCluster
    transport: Transport

    def adapter(self, environment: str = "mainnet", **kwargs: Any) -> BybitAdapter:
        url = self.cluster.url("bybit", environment)
        return BybitAdapter(self.transport, environment=environment, base_url=url, **kwargs)

    async def check(self, credentials: ApiCredentials, **request: Any) -> KeyFacts:
        return await self.adapter().check(CheckRequest(credentials, **request))


@asynccontextmanager
async def bench(
    *accounts: dict[str, Any],
    egress: tuple[str, ...] = (),
    timeouts: Timeouts | None = None,
    **exchange: Any,
) -> AsyncIterator[Bench]:
    spec = {"seed": 3, "exchanges": {"bybit": {"accounts": list(accounts), **exchange}}}
    transport = Transport(egress_ips=egress, timeouts=timeouts or Timeouts(connect=2.0, total=5.0))
    async with SimCluster(parse_scenario(spec)) as cluster, transport:
        yield Bench(cluster, transport)


def days_from_now(moment: datetime | None) -> float:
    assert moment is not None
    return (moment - datetime.now(UTC)) / timedelta(days=1)


# -- tables ---------------------------------------------------------------------------------------


def test_environments_are_the_simulators_with_real_https_hosts() -> None:
    assert set(BybitAdapter.environments) == set(BybitSim.environments)
    for env, families in BybitAdapter.environments.items():
        for url in families.values():
            parts = urlsplit(url)
            assert parts.scheme == "https" and "bybit" in parts.netloc, (env, url)
    assert BybitAdapter.environments["mainnet"]["api"] == "https://api.bybit.com"
    assert BybitAdapter.environments["testnet"]["api"] == "https://api-testnet.bybit.com"


def test_base_url_replaces_scheme_and_host_of_every_family() -> None:
    adapter = BybitAdapter(MockTransport(lambda *a: RawResponse(200)), base_url="http://127.0.0.1:9")
    assert adapter.url("api", "/v5/user/query-api") == "http://127.0.0.1:9/v5/user/query-api"


# -- every state the simulator produces -------------------------------------------------------------


async def test_connected_key_gives_every_fact() -> None:
    perms = ["Spot.SpotTrade", *CONTRACT, "Derivatives.DerivativesTrade"]
    acc = account(
        30000001,
        key(1, permissions=perms, created_at="-10d", label="bot"),
        kyc_level=1,
        region="MY",
        deposit_addresses={"USDT": "0xabc"},
    )
    async with bench(acc) as b:
        facts = await b.check(creds(1), needs_futures=True, deposit_currency="usdt")
    assert facts.cause is Cause.OK and facts.candidates == ()
    assert facts.account_id == "30000001"
    assert facts.permissions == READS | {P.SPOT_TRADE, P.FUTURES_TRADE}
    assert set(perms) <= set(facts.native_permissions)
    assert facts.ip_restricted is False and facts.ip_whitelist == ()
    assert facts.expiry_kind == "key" and 79 < days_from_now(facts.expires_at) <= 80
    assert facts.created_at is not None and 9.9 < -days_from_now(facts.created_at) < 10.1
    assert facts.label == "bot"
    assert facts.account_flags["kyc_level"] == "LEVEL_1" and facts.account_flags["kyc_region"] == "MYS"
    assert facts.futures_active is True
    assert facts.deposit_addresses == {"USDT": True}
    trade = facts.outcome(Probe.TRADE)
    assert trade is not None and trade.ok
    # Nothing failed: no second round.
    assert facts.server_time_offset_ms is None and facts.system_status is None
    assert Probe.SERVER_TIME not in facts.outcomes


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        (["ReadOnly"], set()),
        (["Spot.SpotTrade"], {P.SPOT_TRADE}),
        (["ReadOnly", "Spot.SpotTrade", "Wallet.Withdraw", *CONTRACT], set()),
        (CONTRACT, {P.FUTURES_TRADE}),
        (["ContractTrade.Position"], set()),
        (["Derivatives.DerivativesTrade"], {P.FUTURES_TRADE}),
        (["Options.OptionsTrade"], {P.OPTIONS_TRADE}),
        (
            ["Spot.SpotTrade", "Wallet.Withdraw", "Wallet.AccountTransfer"],
            {P.SPOT_TRADE, P.WITHDRAW, P.TRANSFER},
        ),
        (["Wallet.SubMemberTransfer"], {P.TRANSFER}),
        (["Earn.Earn", "Exchange.ExchangeHistory"], set()),
    ],
)
async def test_permissions_are_mapped_from_query_api(native: list[str], expected: set[Permission]) -> None:
    async with bench(account(30000002, key(2, permissions=native))) as b:
        facts = await b.check(creds(2))
    assert facts.cause is Cause.OK
    assert facts.permissions == READS | expected
    assert ("ReadOnly" in facts.native_permissions) == ("ReadOnly" in native)
    trade = facts.outcome(Probe.TRADE)
    assert trade is not None
    assert trade.cause is (Cause.OK if P.SPOT_TRADE in expected else Cause.PERMISSION_DENIED)


async def test_unknown_key_keeps_the_other_environment_as_candidate() -> None:
    async with bench(account(30000003, key(3))) as b:
        facts = await b.check(creds(4))
    assert facts.cause is Cause.UNKNOWN_KEY
    assert Cause.WRONG_ENVIRONMENT in facts.candidates
    assert facts.account_id is None and facts.permissions is None
    assert facts.evidence
    # The second round measured the clock: the simulator runs on ours.
    assert facts.server_time_offset_ms is not None and abs(facts.server_time_offset_ms) < 1000


@pytest.mark.parametrize("bad_key", ["SHORTKEY1", "BYBITKEY000000000Ö", "BYBIT-KEY-00000003"])
async def test_malformed_key(bad_key: str) -> None:
    async with bench(account(30000004, key(5))) as b:
        facts = await b.check(ApiCredentials(bad_key, Secret(secret(5))))
    assert facts.cause is Cause.MALFORMED_KEY


async def test_key_with_unsendable_characters_is_refused_without_a_request() -> None:
    mock = MockTransport(lambda *a: RawResponse(500))
    facts = await BybitAdapter(mock).check(CheckRequest(ApiCredentials("BYBIT KEY\n00000001", Secret("s"))))
    assert facts.cause is Cause.MALFORMED_KEY
    assert mock.sent == []


async def test_wrong_secret_hides_the_echoed_origin_string() -> None:
    async with bench(account(30000005, key(6))) as b:
        facts = await b.check(creds(6, wrong_secret=True))
    assert facts.cause is Cause.BAD_SIGNATURE
    intro = facts.outcome(Probe.INTROSPECTION)
    assert intro is not None and intro.code == "10004" and intro.message is not None
    assert "origin_string[<hidden>]" in intro.message
    assert api_key(6) not in intro.message and api_key(6) not in " ".join(facts.evidence)


@pytest.mark.parametrize("offset_ms", [120_000, -30_000])
async def test_clock_skew_measures_the_offset(offset_ms: int) -> None:
    async with bench(account(30000006, key(7)), clock_offset_ms=offset_ms) as b:
        facts = await b.check(creds(7))
    assert facts.cause is Cause.CLOCK_SKEW
    assert facts.server_time_offset_ms is not None
    assert abs(facts.server_time_offset_ms - offset_ms) < 1500
    assert facts.outcome(Probe.SERVER_TIME) is not None


async def test_clock_skew_seen_by_one_key_only_takes_the_offset_from_the_refusal() -> None:
    # The simulator's demo aid: only this key's requests see a skewed clock, market/time does not.
    async with bench(account(30000007, key(8, clock_offset_ms=90_000))) as b:
        facts = await b.check(creds(8))
    assert facts.cause is Cause.CLOCK_SKEW
    assert facts.server_time_offset_ms is not None and abs(facts.server_time_offset_ms - 90_000) < 1500
    assert any("10002 says" in note for note in facts.evidence)


async def test_ip_not_allowed_is_told_apart_by_asking_from_another_address() -> None:
    acc = account(30000008, key(9, ip_whitelist=["127.0.0.2"], permissions=["Spot.SpotTrade"]))
    async with bench(acc, egress=("127.0.0.3", "127.0.0.2")) as b:
        facts = await b.check(creds(9))
    assert facts.cause is Cause.IP_NOT_ALLOWED
    intro = facts.outcome(Probe.INTROSPECTION)
    assert intro is not None and intro.code == "10010" and intro.egress_ip == "127.0.0.3"
    # The re-ask from 127.0.0.2 revealed the whitelist and the account.
    assert facts.ip_restricted is True and facts.ip_whitelist == ("127.0.0.2",)
    assert facts.account_id == "30000008"
    assert any("127.0.0.2" in n and "127.0.0.3" in n for n in facts.evidence)


async def test_ip_not_allowed_from_the_only_address_leaves_the_whitelist_unknown() -> None:
    async with bench(account(30000009, key(10, ip_whitelist=["127.0.0.2"])), egress=("127.0.0.3",)) as b:
        facts = await b.check(creds(10))
    assert facts.cause is Cause.IP_NOT_ALLOWED
    assert facts.ip_whitelist is None and facts.account_id is None


async def test_bound_key_from_its_address_never_expires() -> None:
    async with bench(account(30000010, key(11, ip_whitelist=["127.0.0.2"])), egress=("127.0.0.2",)) as b:
        facts = await b.check(creds(11))
    assert facts.cause is Cause.OK
    assert facts.ip_restricted is True and facts.ip_whitelist == ("127.0.0.2",)
    assert facts.expires_at is None and facts.expiry_kind is None


@pytest.mark.parametrize(
    "fields", [{"created_at": "-95d"}, {"ip_whitelist": ["127.0.0.0/8"], "expires_at": "-1h"}]
)
async def test_expired_key(fields: dict[str, Any]) -> None:
    async with bench(account(30000011, key(12, **fields))) as b:
        facts = await b.check(creds(12))
    assert facts.cause is Cause.KEY_EXPIRED
    intro = facts.outcome(Probe.INTROSPECTION)
    assert intro is not None and intro.code == "33004"


@pytest.mark.parametrize(
    ("fields", "days_left"),
    [({"created_at": "-85d"}, 5), ({"ip_whitelist": ["127.0.0.0/8"], "expires_at": "+3d"}, 3)],
)
async def test_expiring_key_reports_when(fields: dict[str, Any], days_left: int) -> None:
    async with bench(account(30000012, key(13, **fields))) as b:
        facts = await b.check(creds(13))
    assert facts.cause is Cause.OK
    assert facts.expiry_kind == "key"
    assert days_left - 0.01 < days_from_now(facts.expires_at) < days_left + 0.01


@pytest.mark.parametrize(
    ("flag", "cause", "code"),
    [
        ("frozen", Cause.ACCOUNT_FROZEN, "10027"),
        ("banned", Cause.ACCOUNT_BANNED, "10008"),
        ("api_disabled", Cause.API_DISABLED, "10005"),
        ("kyc_required", Cause.KYC_REQUIRED, "10024"),
        ("region_restricted", Cause.REGION_RESTRICTED, "10009"),
    ],
)
async def test_restricted_accounts(flag: str, cause: Cause, code: str) -> None:
    async with bench(account(30000013, key(14, permissions=["Spot.SpotTrade"]), **{flag: True})) as b:
        facts = await b.check(creds(14))
    assert facts.cause is cause
    intro = facts.outcome(Probe.INTROSPECTION)
    assert intro is not None and intro.code == code


async def test_futures_not_opened() -> None:
    acc = account(30000014, key(15, permissions=["Spot.SpotTrade", *CONTRACT]), futures_opened=False)
    async with bench(acc) as b:
        facts = await b.check(creds(15), needs_futures=True)
    assert facts.cause is Cause.FUTURES_NOT_OPENED
    assert facts.futures_active is False
    assert facts.permissions is not None and P.FUTURES_TRADE in facts.permissions


async def test_futures_without_contract_permission_is_left_to_the_permissions() -> None:
    acc = account(30000015, key(16, permissions=["Spot.SpotTrade"]), futures_opened=False)
    async with bench(acc) as b:
        facts = await b.check(creds(16), needs_futures=True)
    assert facts.cause is Cause.OK
    assert facts.futures_active is None
    assert facts.permissions is not None and P.FUTURES_TRADE not in facts.permissions


async def test_futures_probe_runs_only_when_needed() -> None:
    async with bench(account(30000016, key(17, permissions=CONTRACT))) as b:
        facts = await b.check(creds(17))
    assert Probe.FUTURES not in facts.outcomes and facts.futures_active is None


async def test_missing_deposit_address() -> None:
    acc = account(30000017, key(18), deposit_addresses={"USDT": "0xabc"})
    async with bench(acc) as b:
        facts = await b.check(creds(18), deposit_currency="BTC")
    assert facts.cause is Cause.OK
    assert facts.deposit_addresses == {"BTC": False}


async def test_key_of_another_environment() -> None:
    acc = account(30000018, key(19, environment="testnet", permissions=["Spot.SpotTrade"]))
    async with bench(acc, environments=["mainnet", "testnet"]) as b:
        on_mainnet = await b.adapter("mainnet").check(CheckRequest(creds(19)))
        on_testnet = await b.adapter("testnet").check(CheckRequest(creds(19)))
    assert on_mainnet.cause is Cause.UNKNOWN_KEY
    assert on_testnet.cause is Cause.OK and on_testnet.account_id == "30000018"
    assert on_testnet.environment == "testnet"


async def test_uid_rate_limit_reports_when_to_retry() -> None:
    async with bench(account(30000019, key(20)), limits={"uid_query_api": 0}) as b:
        facts = await b.check(creds(20))
    assert facts.cause is Cause.RATE_LIMITED
    intro = facts.outcome(Probe.INTROSPECTION)
    assert intro is not None and intro.code == "10006"
    assert intro.retry_after_s is not None and 0 <= intro.retry_after_s <= 1.0


@pytest.mark.parametrize(("settings", "wait_s"), [({}, 600.0), ({"ip_ban_retry_after": True}, 42.0)])
async def test_ip_ban(settings: dict[str, Any], wait_s: float) -> None:
    limits = {"ip_requests": 0, "ip_ban_s": 42}
    async with bench(account(30000020, key(21)), limits=limits, settings=settings) as b:
        facts = await b.check(creds(21))
    assert facts.cause is Cause.IP_BANNED
    intro = facts.outcome(Probe.INTROSPECTION)
    assert intro is not None and intro.http_status == 403 and intro.retry_after_s == wait_s
    # A banned address is refused everywhere: no second round.
    assert Probe.SERVER_TIME not in facts.outcomes


@pytest.mark.parametrize("http_status", [503, 200])
async def test_maintenance(http_status: int) -> None:
    async with bench(
        account(30000021, key(22)),
        maintenance=[{"start": "-1h", "end": "+1h"}],
        settings={"maintenance_http_status": http_status},
    ) as b:
        facts = await b.check(creds(22))
    assert facts.cause is Cause.MAINTENANCE
    assert facts.system_status == "maintenance"
    assert facts.server_time_offset_ms is not None


async def test_server_errors() -> None:
    async with bench(account(30000022, key(23)), faults={"error_rate": 1.0}) as b:
        facts = await b.check(creds(23))
    assert facts.cause is Cause.SERVER_ERROR
    assert facts.system_status is None  # the status endpoint failed too


async def test_finished_maintenance_is_normal_status() -> None:
    acc = account(30000023, key(24))
    async with bench(acc, maintenance=[{"start": "-2h", "end": "-1h"}], limits={"uid_query_api": 0}) as b:
        facts = await b.check(creds(24))
    assert facts.cause is Cause.RATE_LIMITED and facts.system_status == "normal"


async def test_timeouts() -> None:
    async with bench(
        account(30000024, key(25)),
        timeouts=Timeouts(connect=1.0, total=0.2),
        faults={"timeout_rate": 1.0, "timeout_s": 2},
    ) as b:
        facts = await b.check(creds(25))
    assert facts.cause is Cause.TIMEOUT
    assert facts.account_id is None and facts.permissions is None


async def test_every_demo_key_shows_its_intent() -> None:
    expected = {
        "connected": Cause.OK,
        "already_connected": Cause.OK,
        "expires_soon": Cause.OK,
        "withdrawal_enabled": Cause.OK,
        "incorrect_permissions": Cause.OK,
        "expired": Cause.KEY_EXPIRED,
        "invalid_key": Cause.UNKNOWN_KEY,
        "secret_mismatch": Cause.BAD_SIGNATURE,
        "clock_skew": Cause.CLOCK_SKEW,
        "ip_not_allowed": Cause.IP_NOT_ALLOWED,
        "inactive_futures": Cause.FUTURES_NOT_OPENED,
    }
    restricted = {Cause.ACCOUNT_FROZEN, Cause.ACCOUNT_BANNED, Cause.API_DISABLED, Cause.KYC_REQUIRED}
    restricted |= {Cause.REGION_RESTRICTED}
    scenario = load_scenario(DEMO)
    async with SimCluster(scenario) as cluster, Transport() as transport:
        adapter = BybitAdapter(transport, base_url=cluster.url("bybit"))
        for acc in scenario.exchanges["bybit"].accounts:
            for k in acc.keys:
                credentials = ApiCredentials(k.api_key, Secret(k.client_secret or k.secret))
                request = CheckRequest(credentials, needs_futures=k.intent == "inactive_futures")
                facts = await adapter.check(request)
                assert k.intent is not None
                wanted = {expected[k.intent]} if k.intent in expected else restricted
                assert facts.cause in wanted, (k.label, facts.cause)
                if k.intent == "withdrawal_enabled":
                    assert facts.permissions is not None and P.WITHDRAW in facts.permissions
                if k.intent == "incorrect_permissions":
                    assert facts.permissions == READS
                if k.intent == "expires_soon":
                    assert days_from_now(facts.expires_at) < 14


# -- classification of raw answers -----------------------------------------------------------------


def envelope(code: int, message: str = "text", **extra: Any) -> dict[str, Any]:
    return {
        "retCode": code,
        "retMsg": message,
        "result": {},
        "retExtInfo": {},
        "time": 1_700_000_000_000,
        **extra,
    }


def adapter() -> BybitAdapter:
    return BybitAdapter(MockTransport(lambda *a: RawResponse(500)))


# Every retCode the reference gives for Bybit, with the cause it must mean (written out here, not
# read from the module, so a wrong table entry fails).
CODE_CAUSES: list[tuple[int, Cause]] = [
    (10000, Cause.SERVER_ERROR),
    (10002, Cause.CLOCK_SKEW),
    (10003, Cause.UNKNOWN_KEY),
    (10004, Cause.BAD_SIGNATURE),
    (10005, Cause.PERMISSION_DENIED),
    (10006, Cause.RATE_LIMITED),
    (10007, Cause.UNKNOWN_KEY),
    (10008, Cause.ACCOUNT_BANNED),
    (10009, Cause.REGION_RESTRICTED),
    (10010, Cause.IP_NOT_ALLOWED),
    (10016, Cause.SERVER_ERROR),
    (10018, Cause.IP_BANNED),
    (10024, Cause.KYC_REQUIRED),
    (10027, Cause.ACCOUNT_FROZEN),
    (10029, Cause.PERMISSION_DENIED),
    (33004, Cause.KEY_EXPIRED),
    (-2015, Cause.KEY_EXPIRED),
]


@pytest.mark.parametrize(("code", "cause"), CODE_CAUSES)
def test_every_code_is_classified(code: int, cause: Cause) -> None:
    outcome = adapter().classify(Probe.BALANCE, RawResponse.from_json(200, envelope(code, "msg")))
    assert outcome.cause is cause
    assert outcome.code == str(code) and outcome.message == "msg" and outcome.http_status == 200


def test_the_code_table_is_fully_tested() -> None:
    assert set(bybit_module.CODES) == {str(code) for code, _ in CODE_CAUSES}


@pytest.mark.parametrize(
    ("probe", "code", "cause"),
    [
        (Probe.INTROSPECTION, 10005, Cause.API_DISABLED),
        (Probe.TRADE, 10005, Cause.PERMISSION_DENIED),
        (Probe.FUTURES, 10005, Cause.PERMISSION_DENIED),
        (Probe.TRADE, 10001, Cause.OK),
        (Probe.INTROSPECTION, 10001, Cause.UNEXPECTED),
        (Probe.INTROSPECTION, 10017, Cause.UNEXPECTED),
    ],
)
def test_probe_specific_codes(probe: Probe, code: int, cause: Cause) -> None:
    assert adapter().classify(probe, RawResponse.from_json(200, envelope(code))).cause is cause


def test_unknown_code_keeps_code_and_message() -> None:
    outcome = adapter().classify(Probe.INTROSPECTION, RawResponse.from_json(200, envelope(99999, "odd")))
    assert (outcome.cause, outcome.code, outcome.message) == (Cause.UNEXPECTED, "99999", "odd")


def test_legacy_envelope_is_read() -> None:
    body = {"ret_code": "-2015", "ret_msg": "Invalid API-key, IP, or permissions for action."}
    outcome = adapter().classify(Probe.INTROSPECTION, RawResponse.from_json(200, body))
    assert outcome.cause is Cause.KEY_EXPIRED and outcome.code == "-2015"


@pytest.mark.parametrize("legacy", [False, True])
def test_signature_error_loses_the_origin_string(legacy: bool) -> None:
    text = "error sign! origin_string[" if legacy else "Error sign, please check: origin_string["
    body = envelope(10004, f"{text}1700000000000{api_key(1)}5000category=spot]")
    outcome = adapter().classify(Probe.INTROSPECTION, RawResponse.from_json(200, body))
    assert outcome.cause is Cause.BAD_SIGNATURE and outcome.message is not None
    assert api_key(1) not in outcome.message and "1700000000000" not in outcome.message


@pytest.mark.parametrize(
    ("status", "body", "headers", "cause", "retry"),
    [
        (403, b"access too frequent", {}, Cause.IP_BANNED, 600.0),
        (403, b"access too frequent", {"Retry-After": "30"}, Cause.IP_BANNED, 30.0),
        (403, b"<html>403 Forbidden</html>", {}, Cause.REGION_RESTRICTED, None),
        (401, b"", {}, Cause.UNKNOWN_KEY, None),
        (404, b"not found", {}, Cause.UNEXPECTED, None),
        (429, b"", {"Retry-After": "7"}, Cause.RATE_LIMITED, 7.0),
        (500, b"<html>oops</html>", {}, Cause.SERVER_ERROR, None),
        (502, b"", {}, Cause.SERVER_ERROR, None),
        (503, b"", {}, Cause.MAINTENANCE, None),
        (200, b"<html>not json</html>", {}, Cause.UNEXPECTED, None),
    ],
)
def test_http_level_answers(
    status: int, body: bytes, headers: Mapping[str, str], cause: Cause, retry: float | None
) -> None:
    outcome = adapter().classify(Probe.INTROSPECTION, RawResponse(status, headers, body))
    assert outcome.cause is cause and outcome.http_status == status
    assert outcome.retry_after_s == retry


def test_server_error_body_on_5xx_keeps_its_code() -> None:
    raw = RawResponse.from_json(503, envelope(10016, "Server error."))
    outcome = adapter().classify(Probe.INTROSPECTION, raw)
    assert (outcome.cause, outcome.code) == (Cause.MAINTENANCE, "10016")


def test_uid_rate_limit_waits_until_the_window_resets() -> None:
    raw = RawResponse.from_json(
        200, envelope(10006), headers={"X-Bapi-Limit-Reset-Timestamp": str(1_700_000_000_000 + 2500)}
    )
    assert adapter().classify(Probe.INTROSPECTION, raw).retry_after_s == 2.5


def test_success_bodies_are_parsed_without_the_key() -> None:
    result = {"apiKey": api_key(1), "secret": "", "userID": 5, "readOnly": 0}
    outcome = adapter().classify(Probe.INTROSPECTION, RawResponse.from_json(200, envelope(0, result=result)))
    assert outcome.ok and outcome.data == {"userID": 5, "readOnly": 0}
    clock = {"timeSecond": "1700000000", "timeNano": "1700000000123456789"}
    outcome = adapter().classify(Probe.SERVER_TIME, RawResponse.from_json(200, envelope(0, result=clock)))
    assert outcome.data["server_ms"] == pytest.approx(1_700_000_000_123.456789)
    empty = {"coin": "BTC", "chains": []}
    outcome = adapter().classify(Probe.DEPOSIT_ADDRESS, RawResponse.from_json(200, envelope(0, result=empty)))
    assert outcome.cause is Cause.NOT_FOUND


# -- how the probes are weighed (one unit, in-process answers) --------------------------------------

QUERY_API_OK = {
    "userID": 7,
    "readOnly": 0,
    "permissions": {"Spot": ["SpotTrade"], "ContractTrade": ["Order"]},
}


def routed(answers: Mapping[str, RawResponse]) -> MockTransport:
    """Answers by path; query-api succeeds unless told otherwise."""
    defaults = {"/v5/user/query-api": RawResponse.from_json(200, envelope(0, result=QUERY_API_OK))}

    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        return {**defaults, **answers}[urlsplit(url).path]

    return MockTransport(handler)


async def test_trade_probe_refusal_takes_spot_trading_away() -> None:
    mock = routed({"/v5/order/create": RawResponse.from_json(200, envelope(10005))})
    facts = await BybitAdapter(mock).check(CheckRequest(creds(1)))
    assert facts.cause is Cause.OK
    assert facts.permissions == READS | {P.FUTURES_TRADE}
    assert any("10005" in note for note in facts.evidence)


async def test_futures_probe_without_answer_makes_the_check_temporary() -> None:
    mock = routed(
        {
            "/v5/order/create": RawResponse.from_json(200, envelope(10001)),
            "/v5/position/list": RawResponse(502),
            "/v5/market/time": RawResponse(502),
            "/v5/system/status": RawResponse(502),
        }
    )
    facts = await BybitAdapter(mock).check(CheckRequest(creds(1), needs_futures=True))
    assert facts.cause is Cause.SERVER_ERROR
    assert facts.futures_active is None and facts.account_id == "7"


async def test_deposit_probe_without_answer_leaves_the_address_unknown() -> None:
    mock = routed(
        {
            "/v5/order/create": RawResponse.from_json(200, envelope(10001)),
            "/v5/asset/deposit/query-address": RawResponse(500),
        }
    )
    facts = await BybitAdapter(mock).check(CheckRequest(creds(1), deposit_currency="USDT"))
    assert facts.cause is Cause.OK and facts.deposit_addresses == {}
    assert any("deposit" in note for note in facts.evidence)


async def test_requests_are_stamped_with_the_adapters_clock() -> None:
    # Our clock a minute behind the exchange's: the adapter signs with it and measures it.
    async with bench(account(30000031, key(32))) as b:
        late = b.adapter(clock_ms=lambda: now_ms() - 60_000)
        facts = await late.check(CheckRequest(creds(32)))
    assert facts.cause is Cause.CLOCK_SKEW
    assert facts.server_time_offset_ms is not None and abs(facts.server_time_offset_ms - 60_000) < 1500


# -- parallel probes and secrets --------------------------------------------------------------------


async def test_first_round_probes_are_in_flight_together() -> None:
    expected = 4  # query-api, order/create, position/list, deposit address
    in_flight, most = 0, 0
    all_in = asyncio.Event()
    answers = {
        "/v5/user/query-api": {
            "userID": 1,
            "readOnly": 0,
            "permissions": {"Spot": ["SpotTrade"]},
            "ips": ["*"],
        },
        "/v5/position/list": {"list": []},
        "/v5/asset/deposit/query-address": {"coin": "USDT", "chains": [{"chain": "ETH"}]},
    }

    async def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == expected:
            all_in.set()
        # Fails the test (TimeoutError) if the probes were sent one after another.
        await asyncio.wait_for(all_in.wait(), timeout=5)
        in_flight -= 1
        path = urlsplit(url).path
        if path == "/v5/order/create":
            return RawResponse.from_json(200, envelope(10001))
        return RawResponse.from_json(200, envelope(0, result=answers[path]))

    mock = MockTransport(handler)
    facts = await BybitAdapter(mock).check(
        CheckRequest(creds(1), needs_futures=True, deposit_currency="USDT")
    )
    assert most == expected and len(mock.sent) == expected
    assert (
        facts.cause is Cause.OK and facts.futures_active is True and facts.deposit_addresses == {"USDT": True}
    )
    for sent in mock.sent:
        assert sent.url.startswith("https://api.bybit.com/v5/")
        assert sent.headers["X-BAPI-API-KEY"] == api_key(1)


async def test_no_secret_or_passphrase_leaves_the_adapter() -> None:
    secret_canary, passphrase_canary = "CanarySecretZq81", "CanaryPassphraseXw29"

    def echo(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        # A hostile exchange echoing everything it can, the secret included.
        text = f"origin_string[{headers.get('X-BAPI-API-KEY')}{url}] {secret_canary} {passphrase_canary}"
        return RawResponse.from_json(200, envelope(10004 if "query-api" in url else 10002, text))

    credentials = ApiCredentials(api_key(1), Secret(secret_canary), Secret(passphrase_canary))
    checks = [BybitAdapter(MockTransport(echo)).check(CheckRequest(credentials, needs_futures=True))]
    async with bench(account(30000030, key(30, permissions=["Spot.SpotTrade"]))) as b:
        for c in (creds(30), creds(30, wrong_secret=True), creds(31)):
            leaky = ApiCredentials(c.api_key, Secret(c.secret.reveal()), Secret(passphrase_canary))
            checks.append(b.check(leaky, needs_futures=True, deposit_currency="USDT"))
        results = await asyncio.gather(*checks)
    secrets = [secret_canary, passphrase_canary, secret(30), secret(31)]
    for facts in results:
        shown = [repr(facts), *facts.evidence, *(repr(o) for o in facts.outcomes.values())]
        shown += [str(o.message) for o in facts.outcomes.values()]
        for text in shown:
            for s in secrets:
                assert s not in text
        for o in facts.outcomes.values():
            assert api_key(1) not in str(o.message) and api_key(30) not in str(o.message)
