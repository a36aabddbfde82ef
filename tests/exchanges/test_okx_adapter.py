"""The OKX adapter: every state the OKX simulator can produce, over real HTTP, and its code table.

Integration tests run the adapter through the real `Transport` against `SimCluster` on loopback;
the code-table and concurrency tests feed raw answers through `MockTransport` or `RawResponse`.
Expected causes come from the reference (shared/reference/exchange-api.md, section 2), not from
the adapter's own tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from keysentry.domain.permissions import READ_PERMISSIONS, Permission
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.exchanges import okx as okx_module
from keysentry.exchanges.base import AdapterConfigError, Cause, CheckRequest, KeyFacts, Probe
from keysentry.exchanges.okx import OkxAdapter, OkxSettings
from keysentry.exchanges.transport import MockTransport, RawResponse, Timeouts, Transport
from keysentry.sim.okx import OkxSim
from keysentry.sim.scenario import Scenario, load_scenario, parse_scenario
from keysentry.sim.server import SimCluster

P = Permission
C = Cause
ACCOUNT_ID = "604000000000000001"
KEY = "3f2b8c1d-7a4e-4c5b-9d6e-0a1b2c3d4e5f"
SECRET = "5A1F0C3E9B7D2468ACE013579BDF2468"
PASSPHRASE = "Canary-pass-77"
OTHER_SECRET = "0D1E2F3A4B5C6D7E8F90A1B2C3D4E5F6"
TRADING = frozenset({P.SPOT_TRADE, P.MARGIN_TRADE, P.FUTURES_TRADE, P.OPTIONS_TRADE})
FUNDS_OUT = frozenset({P.WITHDRAW, P.TRANSFER})
ENVIRONMENTS = ["mainnet", "demo", "eea", "us"]
DEMO_SCENARIO = Path(__file__).parents[2] / "src/keysentry/sim/scenarios/demo-okx.yaml"
FAST = Timeouts(connect=2.0, total=5.0)


def key(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "api_key": KEY,
        "secret": SECRET,
        "passphrase": PASSPHRASE,
        "permissions": ["read_only", "trade"],
        "last_used_at": "-1d",
        "label": "bot key",
    }
    return {**spec, **extra}


def scenario(*keys: dict[str, Any], account: Mapping[str, Any] | None = None, **okx: Any) -> Scenario:
    acct = {
        "id": ACCOUNT_ID,
        "kyc_level": 2,
        "balances": {"BTC": "0.5", "USDT": "100"},
        "deposit_addresses": {"BTC": "bc1qadapterdeposit000000000000000000000"},
        "keys": list(keys) or [key()],
        **(account or {}),
    }
    exchange = {"environments": ENVIRONMENTS, "accounts": [acct], **okx}
    return parse_scenario({"seed": 7, "exchanges": {"okx": exchange}})


def creds(api_key: str = KEY, secret: str = SECRET, passphrase: str | None = PASSPHRASE) -> ApiCredentials:
    return ApiCredentials(api_key, Secret(secret), Secret(passphrase) if passphrase is not None else None)


class Harness:
    def __init__(self, cluster: SimCluster, transport: Transport) -> None:
        self.cluster = cluster
        self.transport = transport

    async def check(
        self,
        env: str = "mainnet",
        credentials: ApiCredentials | None = None,
        settings: OkxSettings | None = None,
        **request: Any,
    ) -> KeyFacts:
        url = self.cluster.url("okx", env)
        adapter = OkxAdapter(self.transport, environment=env, base_url=url, settings=settings)
        return await adapter.check(CheckRequest(credentials or creds(), **request))


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """`sim = await start(scenario, egress_ips=..., timeouts=...)`: simulators and a transport for the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def _start(
            scn: Scenario, *, egress_ips: tuple[str, ...] = (), timeouts: Timeouts = FAST
        ) -> Harness:
            cluster = await stack.enter_async_context(SimCluster(scn))
            transport = await stack.enter_async_context(Transport(egress_ips=egress_ips, timeouts=timeouts))
            return Harness(cluster, transport)

        yield _start


def near(moment: datetime | None, low: datetime, high: datetime) -> bool:
    return moment is not None and low - timedelta(seconds=1) <= moment <= high + timedelta(seconds=1)


# -- environments and base URLs ------------------------------------------------------------------


def test_environments_are_the_simulators_with_okx_real_hosts() -> None:
    assert set(OkxAdapter.environments) == set(OkxSim.environments)
    hosts = {env: urlsplit(families["rest"]).netloc for env, families in OkxAdapter.environments.items()}
    assert hosts["mainnet"] == "www.okx.com"
    assert hosts["eea"] == "my.okx.com"
    assert hosts["us"] == "app.okx.com"
    assert all(urlsplit(f["rest"]).scheme == "https" for f in OkxAdapter.environments.values())
    assert OkxAdapter.needs_passphrase


def test_base_url_replaces_the_origin_and_bad_environments_are_refused() -> None:
    mock = MockTransport(lambda *_: RawResponse(200))
    adapter = OkxAdapter(mock, environment="eea", base_url="http://127.0.0.1:9999")
    assert adapter.url("rest", "/api/v5/account/config") == "http://127.0.0.1:9999/api/v5/account/config"
    with pytest.raises(AdapterConfigError, match="testnet"):
        OkxAdapter(mock, environment="testnet")


# -- keys that work --------------------------------------------------------------------------------


async def test_connected_trading_key(start: Start) -> None:
    sim = await start(scenario())
    before = datetime.now(UTC)
    facts = await sim.check()
    after = datetime.now(UTC)
    assert facts.cause is C.OK and facts.candidates == () and facts.evidence == []
    assert facts.account_id == ACCOUNT_ID
    assert facts.permissions == READ_PERMISSIONS | TRADING
    assert facts.native_permissions == ("read_only", "trade")
    assert facts.ip_restricted is False and facts.ip_whitelist == ()
    # No IP binding + trade: 14 days of inactivity, counted from this check.
    assert facts.expiry_kind == "inactivity"
    assert near(facts.expires_at, before + timedelta(days=14), after + timedelta(days=14))
    assert facts.label == "bot key"
    assert facts.futures_active is True
    assert facts.account_flags["kyc_level"] == "2" and facts.account_flags["main_uid"] == ACCOUNT_ID
    assert facts.account_flags["account_level"] == "2"
    # Nothing failed: one round only, no clock or status question.
    assert set(facts.outcomes) == {Probe.INTROSPECTION, Probe.BALANCE}
    assert facts.server_time_offset_ms is None and facts.system_status is None


@pytest.mark.parametrize(
    ("permissions", "whitelist", "expected", "expires"),
    [
        (["read_only"], [], READ_PERMISSIONS, False),
        (["read_only", "trade"], [], READ_PERMISSIONS | TRADING, True),
        (["read_only", "withdraw"], [], READ_PERMISSIONS | FUNDS_OUT, True),
        (["read_only", "trade", "withdraw"], ["127.0.0.0/8"], READ_PERMISSIONS | TRADING | FUNDS_OUT, False),
        (["read_only", "trade"], ["127.0.0.1", "10.0.0.0/24"], READ_PERMISSIONS | TRADING, False),
    ],
)
async def test_permissions_ip_binding_and_inactivity_rule(
    start: Start, permissions: list[str], whitelist: list[str], expected: frozenset[Permission], expires: bool
) -> None:
    sim = await start(scenario(key(permissions=permissions, ip_whitelist=whitelist)))
    facts = await sim.check()
    assert facts.cause is C.OK
    assert facts.permissions == expected
    assert set(facts.native_permissions) == {"read_only", *permissions}
    assert facts.ip_restricted is bool(whitelist)
    assert facts.ip_whitelist == tuple(whitelist)
    assert (facts.expires_at is not None) is expires
    assert facts.expiry_kind == ("inactivity" if expires else None)


async def test_key_bound_to_the_sending_address(start: Start) -> None:
    sim = await start(scenario(key(ip_whitelist=["127.0.0.2"])), egress_ips=("127.0.0.2",))
    facts = await sim.check()
    assert facts.cause is C.OK
    assert facts.ip_restricted is True and facts.ip_whitelist == ("127.0.0.2",)
    assert facts.expires_at is None


async def test_inactivity_period_is_a_setting(start: Start) -> None:
    sim = await start(scenario())
    before = datetime.now(UTC)
    facts = await sim.check(settings=OkxSettings(inactivity_expiry_days=30))
    assert near(facts.expires_at, before + timedelta(days=30), datetime.now(UTC) + timedelta(days=30))


async def test_key_near_inactivity_expiry_is_renewed_by_the_check(start: Start) -> None:
    sim = await start(scenario(key(last_used_at="-13d")))
    before = datetime.now(UTC)
    facts = await sim.check()
    assert facts.cause is C.OK
    assert near(facts.expires_at, before + timedelta(days=14), datetime.now(UTC) + timedelta(days=14))
    # The simulator agrees the check was a use of the key.
    used = sim.cluster.sim("okx").spec.accounts[0].keys[0].last_used_at
    assert used is not None and used >= before - timedelta(seconds=1)


# -- futures and deposit addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("opened", "needs_futures", "cause"),
    [
        (False, True, C.FUTURES_NOT_OPENED),
        (False, False, C.OK),
        (True, True, C.OK),
    ],
)
async def test_futures_account(start: Start, opened: bool, needs_futures: bool, cause: Cause) -> None:
    sim = await start(scenario(account={"futures_opened": opened}))
    facts = await sim.check(needs_futures=needs_futures)
    assert facts.cause is cause
    assert facts.futures_active is opened
    # The permission exists either way; whether it is usable is futures_active.
    assert facts.permissions is not None and P.FUTURES_TRADE in facts.permissions
    if cause is C.FUTURES_NOT_OPENED:
        assert any("acctLv 1" in e for e in facts.evidence)


@pytest.mark.parametrize(("currency", "exists"), [("BTC", True), ("ETH", False)])
async def test_deposit_address(start: Start, currency: str, exists: bool) -> None:
    sim = await start(scenario())
    facts = await sim.check(deposit_currency=currency)
    assert facts.cause is C.OK
    assert facts.deposit_addresses == {currency: exists}
    assert Probe.DEPOSIT_ADDRESS in facts.outcomes


async def test_no_deposit_probe_unless_asked(start: Start) -> None:
    sim = await start(scenario())
    facts = await sim.check()
    assert facts.deposit_addresses == {}
    assert Probe.DEPOSIT_ADDRESS not in facts.outcomes


# -- keys that do not work -------------------------------------------------------------------------


async def test_unknown_key(start: Start) -> None:
    sim = await start(scenario())
    facts = await sim.check(credentials=creds(api_key=str(uuid.uuid4())))
    assert facts.cause is C.UNKNOWN_KEY
    assert facts.candidates == (C.UNKNOWN_KEY, C.KEY_EXPIRED)
    assert facts.outcomes[Probe.INTROSPECTION].code == "50111"
    assert facts.account_id is None and facts.permissions is None
    # Something failed: the clock was asked, the status was not (the cause is not temporary).
    assert facts.server_time_offset_ms is not None and abs(facts.server_time_offset_ms) < 2000
    assert Probe.SYSTEM_STATUS not in facts.outcomes


@pytest.mark.parametrize("api_key", ["not-a-uuid-key", KEY.upper(), KEY[:-1]])
async def test_malformed_key(start: Start, api_key: str) -> None:
    sim = await start(scenario())
    facts = await sim.check(credentials=creds(api_key=api_key))
    assert facts.cause is C.MALFORMED_KEY
    # The outcome carries the deciding cause, so its code reaches the finding.
    assert facts.outcomes[Probe.INTROSPECTION].cause is C.MALFORMED_KEY
    assert facts.outcomes[Probe.INTROSPECTION].code == "50111"
    assert any("UUID" in e for e in facts.evidence)


async def test_deleted_key(start: Start) -> None:
    sim = await start(scenario(key(deleted=True)))
    assert (await sim.check()).cause is C.UNKNOWN_KEY


@pytest.mark.parametrize(
    ("credentials", "cause", "code"),
    [
        (creds(secret=OTHER_SECRET), C.BAD_SIGNATURE, "50113"),
        (creds(passphrase="canary-pass-77"), C.BAD_PASSPHRASE, "50105"),
        (creds(passphrase=None), C.BAD_PASSPHRASE, "50104"),
    ],
    ids=["wrong-secret", "wrong-passphrase", "no-passphrase"],
)
async def test_wrong_secret_or_passphrase(
    start: Start, credentials: ApiCredentials, cause: Cause, code: str
) -> None:
    sim = await start(scenario())
    facts = await sim.check(credentials=credentials)
    assert facts.cause is cause
    assert facts.outcomes[Probe.INTROSPECTION].code == code
    assert facts.outcomes[Probe.BALANCE].cause is cause


@pytest.mark.parametrize("offset_ms", [120_000, -90_000])
async def test_clock_skew_and_measured_offset(start: Start, offset_ms: int) -> None:
    sim = await start(scenario(clock_offset_ms=offset_ms))
    facts = await sim.check()
    assert facts.cause is C.CLOCK_SKEW
    assert facts.server_time_offset_ms is not None
    assert abs(facts.server_time_offset_ms - offset_ms) < 2000
    assert any(f"{offset_ms / 1000:+.0f}" in e for e in facts.evidence)


async def test_ip_not_allowed(start: Start) -> None:
    sim = await start(scenario(key(ip_whitelist=["127.0.0.2"])), egress_ips=("127.0.0.3",))
    facts = await sim.check()
    assert facts.cause is C.IP_NOT_ALLOWED
    assert facts.outcomes[Probe.INTROSPECTION].code == "50110"
    assert any("127.0.0.3" in e for e in facts.evidence)  # OKX names the address it saw


async def test_ip_not_allowed_asks_again_from_the_other_addresses(start: Start) -> None:
    sim = await start(scenario(key(ip_whitelist=["127.0.0.2"])), egress_ips=("127.0.0.3", "127.0.0.2"))
    facts = await sim.check()
    assert facts.cause is C.IP_NOT_ALLOWED
    assert "account/config answered from 127.0.0.2" in facts.evidence


@pytest.mark.parametrize(
    ("key_extra", "settings", "candidates"),
    [
        ({"last_used_at": "-20d", "created_at": "-60d"}, {}, (C.UNKNOWN_KEY, C.KEY_EXPIRED)),
        ({"expires_at": "-1h"}, {}, (C.UNKNOWN_KEY, C.KEY_EXPIRED)),
        (
            {"expires_at": "-1h"},
            {"expired_key_code": "50119"},
            (C.UNKNOWN_KEY, C.WRONG_ENVIRONMENT, C.KEY_EXPIRED),
        ),
    ],
    ids=["inactive-14-days", "expired", "expired-answered-50119"],
)
async def test_expired_key_answers_like_an_unknown_one(
    start: Start, key_extra: dict[str, Any], settings: dict[str, Any], candidates: tuple[Cause, ...]
) -> None:
    sim = await start(scenario(key(**key_extra), settings=settings))
    facts = await sim.check()
    assert facts.cause is C.UNKNOWN_KEY
    assert facts.candidates == candidates
    assert facts.expires_at is None


@pytest.mark.parametrize(
    ("account", "settings", "cause", "code"),
    [
        ({"frozen": True}, {}, C.ACCOUNT_FROZEN, "50007"),
        ({"banned": True}, {"banned_code": "50012"}, C.ACCOUNT_BANNED, "50012"),
        ({"api_disabled": True}, {}, C.API_DISABLED, "50100"),
        ({"kyc_required": True, "kyc_level": 0}, {}, C.KYC_REQUIRED, "50060"),
        ({"region_restricted": True}, {}, C.REGION_RESTRICTED, "50051"),
        ({"region_restricted": True}, {"region_restricted_code": "50121"}, C.REGION_RESTRICTED, "50121"),
    ],
)
async def test_restricted_accounts(
    start: Start, account: dict[str, Any], settings: dict[str, Any], cause: Cause, code: str
) -> None:
    sim = await start(scenario(account=account, settings=settings))
    facts = await sim.check()
    assert facts.cause is cause
    assert facts.outcomes[Probe.INTROSPECTION].code == code
    assert facts.permissions is None


async def test_banned_account_with_the_default_code_is_not_told_from_frozen(start: Start) -> None:
    sim = await start(scenario(account={"banned": True}))
    facts = await sim.check()
    # 50007 "User blocked." is both; the adapter says so rather than guessing silently.
    assert facts.cause is C.ACCOUNT_FROZEN
    assert facts.candidates == (C.ACCOUNT_FROZEN, C.ACCOUNT_BANNED)
    assert any("frozen or banned" in e for e in facts.evidence)


# -- environments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["eea", "us"])
async def test_key_of_another_site(start: Start, site: str) -> None:
    sim = await start(scenario(key(environment=site)))
    elsewhere = await sim.check("mainnet")
    assert elsewhere.cause is C.UNKNOWN_KEY  # 50119: the engine looks the key up on the other sites
    assert C.WRONG_ENVIRONMENT in elsewhere.candidates
    assert elsewhere.outcomes[Probe.INTROSPECTION].code == "50119"
    home = await sim.check(site)
    assert home.cause is C.OK and home.account_id == ACCOUNT_ID


async def test_demo_key(start: Start) -> None:
    sim = await start(scenario(key(environment="demo")))
    live = await sim.check("mainnet")
    assert live.cause is C.WRONG_ENVIRONMENT
    assert any("belongs to demo trading" in e for e in live.evidence)
    demo = await sim.check("demo")  # only passes with the x-simulated-trading header
    assert demo.cause is C.OK
    # Demo keys never expire, bound or not.
    assert demo.ip_restricted is False and demo.expires_at is None


async def test_live_key_on_demo(start: Start) -> None:
    sim = await start(scenario())
    facts = await sim.check("demo")
    assert facts.cause is C.WRONG_ENVIRONMENT
    assert any("belongs to live trading" in e for e in facts.evidence)


# -- the exchange failing to answer --------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [True, False])
async def test_rate_limited(start: Start, retry_after: bool) -> None:
    limits = {"account_config_requests": 1, "account_config_window_s": 3600}
    sim = await start(scenario(limits=limits, settings={"rate_limit_retry_after": retry_after}))
    assert (await sim.check()).cause is C.OK
    # Without a default wait, a value can only come from the simulator's header.
    facts = await sim.check(settings=OkxSettings(rate_limit_wait_s=None) if retry_after else None)
    assert facts.cause is C.RATE_LIMITED
    limited = facts.outcomes[Probe.INTROSPECTION]
    assert (limited.http_status, limited.code) == (429, "50011")
    if retry_after:  # the rest of the simulator's hour-long window
        assert limited.retry_after_s is not None and 1 <= limited.retry_after_s <= 3600
    else:  # OKX documents no Retry-After: one of its 2 s windows (setting)
        assert limited.retry_after_s == OkxSettings().rate_limit_wait_s == 2.0
    assert facts.system_status == "normal"  # a temporary cause: the status was asked


async def test_maintenance(start: Start) -> None:
    sim = await start(scenario(maintenance=[{"start": "-1h", "end": "+1h"}]))
    facts = await sim.check()
    assert facts.cause is C.MAINTENANCE
    assert facts.outcomes[Probe.INTROSPECTION].code == "50001"
    assert facts.system_status == "maintenance"
    assert any("ongoing maintenance" in e for e in facts.evidence)


async def test_injected_server_errors(start: Start) -> None:
    sim = await start(scenario(faults={"error_rate": 1.0}))
    facts = await sim.check()
    assert facts.cause is C.SERVER_ERROR
    assert facts.outcomes[Probe.INTROSPECTION].code == "50026"
    # The clock and status questions failed too: unknown, not guessed.
    assert facts.server_time_offset_ms is None and facts.system_status is None


async def test_timeouts(start: Start) -> None:
    faults = {"timeout_rate": 1.0, "timeout_s": 2}
    sim = await start(scenario(faults=faults), timeouts=Timeouts(connect=1.0, total=0.3))
    facts = await sim.check()
    assert facts.cause is C.TIMEOUT
    assert {o.cause for o in facts.outcomes.values()} == {C.TIMEOUT}
    assert facts.server_time_offset_ms is None


# -- the demo scenario: every key of it shows its intended state ----------------------------------------

EXPECTED_BY_INTENT: Mapping[str, frozenset[Cause]] = {
    "connected": frozenset({C.OK}),
    "secret_mismatch": frozenset({C.BAD_SIGNATURE}),
    "passphrase_invalid": frozenset({C.BAD_PASSPHRASE}),
    "clock_skew": frozenset({C.CLOCK_SKEW}),
    "ip_not_allowed": frozenset({C.IP_NOT_ALLOWED}),
    "invalid_key": frozenset({C.UNKNOWN_KEY, C.WRONG_ENVIRONMENT}),
    "account_restricted": frozenset(
        {C.ACCOUNT_FROZEN, C.ACCOUNT_BANNED, C.API_DISABLED, C.KYC_REQUIRED, C.REGION_RESTRICTED}
    ),
    "withdrawal_enabled": frozenset({C.OK}),
    "incorrect_permissions": frozenset({C.OK}),
    "inactive_futures": frozenset({C.FUTURES_NOT_OPENED}),
}


async def test_demo_scenario_keys(start: Start) -> None:
    scn = load_scenario(DEMO_SCENARIO)
    okx = scn.exchanges["okx"]
    okx.limits = {"public_time_requests": 1000}  # many failing keys ask the time in a row
    sim = await start(scn)
    wrong: list[str] = []
    for account in okx.accounts:
        for k in account.keys:
            intent = k.intent or "connected"
            assert intent in EXPECTED_BY_INTENT, intent
            given = creds(k.api_key, k.client_secret or k.secret, k.client_passphrase or k.passphrase)
            facts = await sim.check(credentials=given, needs_futures=intent == "inactive_futures")
            if facts.cause not in EXPECTED_BY_INTENT[intent]:
                wrong.append(f"{k.label}: {facts.cause} {facts.evidence}")
            granted = facts.permissions or frozenset()
            if intent == "withdrawal_enabled" and P.WITHDRAW not in granted:
                wrong.append(f"{k.label}: withdraw missing from {sorted(granted)}")
            if intent == "incorrect_permissions" and P.SPOT_TRADE in granted:
                wrong.append(f"{k.label}: a read-only key shows spot_trade")
    assert wrong == []


# -- classify(): the code table on raw answers --------------------------------------------------------

# (HTTP status the reference gives, code, cause): every code of the reference's OKX section.
REFERENCE_CODES: list[tuple[int, str, Cause]] = [
    (401, "50103", C.MALFORMED_KEY),
    (401, "50104", C.BAD_PASSPHRASE),
    (401, "50105", C.BAD_PASSPHRASE),
    (401, "50106", C.UNEXPECTED),
    (401, "50107", C.UNEXPECTED),
    (401, "50111", C.UNKNOWN_KEY),
    (401, "50101", C.WRONG_ENVIRONMENT),
    (401, "50119", C.UNKNOWN_KEY),
    (200, "50119", C.UNKNOWN_KEY),
    (401, "50112", C.UNEXPECTED),
    (401, "50102", C.CLOCK_SKEW),
    (401, "50113", C.BAD_SIGNATURE),
    (401, "50114", C.UNEXPECTED),
    (401, "50110", C.IP_NOT_ALLOWED),
    (403, "50035", C.PERMISSION_DENIED),
    (200, "50120", C.PERMISSION_DENIED),
    (200, "50030", C.PERMISSION_DENIED),
    (400, "50100", C.API_DISABLED),
    (200, "50007", C.ACCOUNT_FROZEN),
    (200, "50012", C.ACCOUNT_BANNED),
    (200, "50009", C.ACCOUNT_FROZEN),
    (200, "50027", C.ACCOUNT_FROZEN),
    (200, "50029", C.ACCOUNT_FROZEN),
    (200, "50060", C.KYC_REQUIRED),
    (200, "51732", C.KYC_REQUIRED),
    (200, "59113", C.KYC_REQUIRED),
    (200, "50051", C.REGION_RESTRICTED),
    (200, "50059", C.REGION_RESTRICTED),
    (200, "50121", C.REGION_RESTRICTED),
    (200, "51155", C.REGION_RESTRICTED),
    (200, "51010", C.FUTURES_NOT_OPENED),
    (429, "50011", C.RATE_LIMITED),
    (200, "50011", C.RATE_LIMITED),
    (429, "50013", C.RATE_LIMITED),
    (200, "50061", C.RATE_LIMITED),
    (503, "50001", C.MAINTENANCE),
    (410, "50005", C.SERVER_ERROR),
    (500, "50026", C.SERVER_ERROR),
    (405, "50115", C.UNEXPECTED),
]


def adapter() -> OkxAdapter:
    return OkxAdapter(MockTransport(lambda *_: RawResponse(500)))


def test_every_code_of_the_table_is_tested_here() -> None:
    assert set(okx_module.CODES) == {code for _, code, _ in REFERENCE_CODES}


@pytest.mark.parametrize(("status", "code", "cause"), REFERENCE_CODES)
def test_classify_reference_codes(status: int, code: str, cause: Cause) -> None:
    raw = RawResponse.from_json(status, {"code": code, "msg": f"message of {code}", "data": []})
    outcome = adapter().classify(Probe.INTROSPECTION, raw)
    assert outcome.cause is cause
    assert (outcome.http_status, outcome.code, outcome.message) == (status, code, f"message of {code}")


@pytest.mark.parametrize(
    ("raw", "settings", "retry_after"),
    [
        (RawResponse.from_json(429, {"code": "50011"}, headers={"Retry-After": "3"}), OkxSettings(), 3.0),
        (RawResponse.from_json(429, {"code": "50011"}), OkxSettings(), 2.0),
        (RawResponse.from_json(200, {"code": "50011", "msg": "Rate limit reached."}), OkxSettings(), 2.0),
        (RawResponse(429, {}, b"Too Many Requests"), OkxSettings(rate_limit_wait_s=5.0), 5.0),
        (RawResponse.from_json(429, {"code": "50011"}), OkxSettings(rate_limit_wait_s=None), None),
    ],
    ids=["header", "default", "http-200", "text-body", "no-default"],
)
def test_rate_limit_retry_after(raw: RawResponse, settings: OkxSettings, retry_after: float | None) -> None:
    outcome = OkxAdapter(MockTransport(lambda *_: raw), settings=settings).classify(Probe.BALANCE, raw)
    assert outcome.cause is C.RATE_LIMITED and outcome.retry_after_s == retry_after


def test_code_overrides_replace_table_entries() -> None:
    raw = RawResponse.from_json(429, {"code": "50013", "msg": "Systems are busy. Please try again later."})
    overridden = OkxAdapter(
        MockTransport(lambda *_: raw), settings=OkxSettings(code_overrides={"50013": C.SERVER_ERROR})
    )
    assert overridden.classify(Probe.BALANCE, raw).cause is C.SERVER_ERROR
    assert adapter().classify(Probe.BALANCE, raw).cause is C.RATE_LIMITED


@pytest.mark.parametrize(
    ("raw", "cause", "code"),
    [
        (RawResponse(418), C.IP_BANNED, None),
        (RawResponse(429, {"Retry-After": "7"}, b"Too Many Requests"), C.RATE_LIMITED, None),
        (RawResponse(502, {"Content-Type": "text/html"}, b"<html>Bad gateway</html>"), C.SERVER_ERROR, None),
        (RawResponse.from_json(500, {"code": "59998", "msg": "new"}), C.SERVER_ERROR, "59998"),
        (RawResponse(404, {"Content-Type": "text/html"}, b"<html>Not found</html>"), C.UNEXPECTED, None),
        (RawResponse.from_json(200, {"code": "59999", "msg": "Something new"}), C.UNEXPECTED, "59999"),
        (RawResponse.from_json(200, {"code": "0", "msg": "", "data": []}), C.UNEXPECTED, "0"),
    ],
    ids=["418", "429-text", "502-html", "500-unknown-code", "404-html", "unknown-code", "ok-without-data"],
)
def test_classify_http_level_and_unknown_answers(raw: RawResponse, cause: Cause, code: str | None) -> None:
    outcome = adapter().classify(Probe.INTROSPECTION, raw)
    assert outcome.cause is cause and outcome.code == code
    if cause is C.UNEXPECTED:
        assert outcome.message  # the raw code or the HTTP status stays readable
    if raw.status == 429:
        assert outcome.retry_after_s == 7.0


def test_classify_parses_success_bodies() -> None:
    a = adapter()
    config = {"code": "0", "msg": "", "data": [{"uid": "42", "perm": "read_only"}]}
    assert a.classify(Probe.INTROSPECTION, RawResponse.from_json(200, config)).data["uid"] == "42"
    ts = {"code": "0", "msg": "", "data": [{"ts": "1597026383085"}]}
    assert a.classify(Probe.SERVER_TIME, RawResponse.from_json(200, ts)).data["ts"] == "1597026383085"
    empty = a.classify(Probe.DEPOSIT_ADDRESS, RawResponse.from_json(200, {"code": "0", "data": []}))
    assert empty.ok and empty.data == {"items": []}


# -- with a mock transport: concurrency, status reading, secrets ----------------------------------------

CONFIG_OK = {
    "code": "0",
    "msg": "",
    "data": [{"uid": ACCOUNT_ID, "perm": "read_only,trade", "ip": "", "acctLv": "2"}],
}
BALANCE_OK = {"code": "0", "msg": "", "data": [{"details": [], "totalEq": "0"}]}
DEPOSIT_OK = {"code": "0", "msg": "", "data": [{"addr": "bc1qx", "ccy": "BTC"}]}
MAINTENANCE = {"code": "50001", "msg": "Service temporarily unavailable. Please try again later.", "data": []}


def status_body(env: str) -> dict[str, Any]:
    entry = {"state": "ongoing", "env": env, "title": "Trading system upgrade", "begin": "1", "end": ""}
    return {"code": "0", "msg": "", "data": [entry]}


def time_body() -> dict[str, Any]:
    return {"code": "0", "msg": "", "data": [{"ts": str(int(time.time() * 1000))}]}


class Meeting:
    """Holds requests until `expected` are in flight at once; fails the test if they never are."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = 0
        self.all_in = asyncio.Event()

    async def attend(self) -> None:
        self.in_flight += 1
        if self.in_flight >= self.expected:
            self.all_in.set()
        try:
            await asyncio.wait_for(self.all_in.wait(), timeout=5)
        except TimeoutError:
            pytest.fail(f"only {self.in_flight} of {self.expected} probes were in flight together")


async def test_probes_of_each_round_run_concurrently() -> None:
    first, second = Meeting(3), Meeting(2)

    async def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path.startswith("/api/v5/public") or path.startswith("/api/v5/system"):
            await second.attend()
            return RawResponse.from_json(200, time_body() if "time" in path else status_body("1"))
        await first.attend()
        return RawResponse.from_json(503, MAINTENANCE)

    mock = MockTransport(handler)
    facts = await OkxAdapter(mock).check(CheckRequest(creds(), deposit_currency="BTC"))
    assert facts.cause is C.MAINTENANCE and facts.system_status == "maintenance"
    assert len(mock.sent) == 5


@pytest.mark.parametrize(
    ("environment", "status_env", "expected"),
    [("mainnet", "1", "maintenance"), ("mainnet", "2", "normal"), ("demo", "2", "maintenance")],
)
async def test_maintenance_of_the_other_trading_environment_is_ignored(
    environment: str, status_env: str, expected: str
) -> None:
    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path.endswith("/system/status"):
            return RawResponse.from_json(200, status_body(status_env))
        if path.endswith("/public/time"):
            return RawResponse.from_json(200, time_body())
        return RawResponse.from_json(
            500, {"code": "50026", "msg": "System error. Try again later", "data": []}
        )

    mock = MockTransport(handler)
    facts = await OkxAdapter(mock, environment=environment).check(CheckRequest(creds()))
    assert facts.cause is C.SERVER_ERROR and facts.system_status == expected
    demo_headers = {s.headers.get("x-simulated-trading") for s in mock.sent}
    assert demo_headers == ({"1"} if environment == "demo" else {None})


async def test_second_round_only_when_something_failed() -> None:
    answers = {"/api/v5/account/config": CONFIG_OK, "/api/v5/account/balance": BALANCE_OK}
    mock = MockTransport(lambda m, url, h, b: RawResponse.from_json(200, answers[urlsplit(url).path]))
    facts = await OkxAdapter(mock).check(CheckRequest(creds()))
    assert facts.cause is C.OK
    assert sorted(urlsplit(s.url).path for s in mock.sent) == sorted(answers)


CANARIES = (KEY, SECRET, PASSPHRASE)


async def test_no_credential_survives_an_exchange_that_echoes_them() -> None:
    echo = f"refused key={KEY} secret={SECRET} passphrase={PASSPHRASE}"

    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path.endswith("/public/time"):
            return RawResponse.from_json(200, time_body())
        if path.endswith("/asset/deposit-address"):
            return RawResponse.from_json(429, {"code": "50011", "msg": echo, "data": []})
        if path.endswith("/account/balance"):
            return RawResponse.from_json(200, {"code": "59999", "msg": echo, "data": []})
        return RawResponse.from_json(401, {"code": "50113", "msg": echo, "data": []})

    facts = await OkxAdapter(MockTransport(handler)).check(CheckRequest(creds(), deposit_currency="BTC"))
    assert facts.cause is C.BAD_SIGNATURE
    assert "<hidden>" in (facts.outcomes[Probe.INTROSPECTION].message or "")
    shown = [repr(facts), *map(repr, facts.outcomes.values()), *facts.evidence, json.dumps(facts.evidence)]
    for text in shown:
        for canary in CANARIES:
            assert canary not in text


async def test_no_secret_in_the_facts_of_a_working_key(start: Start) -> None:
    sim = await start(scenario())
    facts = await sim.check(deposit_currency="BTC")
    assert facts.cause is C.OK
    for text in [repr(facts), *map(repr, facts.outcomes.values())]:
        assert SECRET not in text and PASSPHRASE not in text
