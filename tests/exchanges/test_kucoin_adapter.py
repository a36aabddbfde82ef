"""The KuCoin adapter: every state the KuCoin simulator can produce, over real HTTP, and its code table.

Integration tests run the adapter through the real `Transport` against `SimCluster` on loopback;
the code-table and concurrency tests feed raw answers through `MockTransport` or `RawResponse`.
Expected causes come from the reference (shared/reference/exchange-api.md, section 4) and the
simulator's documentation (docs/simulators/kucoin.md), not from the adapter's own tables.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from keysentry.domain import Status
from keysentry.domain.permissions import READ_PERMISSIONS, Permission
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.exchanges import kucoin as kucoin_module
from keysentry.exchanges.base import AdapterConfigError, Cause, CheckRequest, KeyFacts, Probe
from keysentry.exchanges.kucoin import KucoinAdapter, KucoinSettings
from keysentry.exchanges.transport import MockTransport, RawResponse, Timeouts, Transport
from keysentry.sim.kucoin import KucoinSim
from keysentry.sim.scenario import Scenario, load_scenario, parse_scenario
from keysentry.sim.server import SimCluster

P = Permission
C = Cause
ACCOUNT_ID = "165111299"
KEY = "5e0f1a2b3c4d5e6f7a8b9c0d"
SECRET = "7d3c2b1a-9e8f-4a6b-8c5d-0e1f2a3b4c5d"
PASSPHRASE = "Canary-pass-77"
OTHER_SECRET = "00000000-1111-4222-8333-444444444444"
CREATED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FUNDS_OUT = frozenset({P.WITHDRAW, P.TRANSFER})
DEMO_SCENARIO = Path(__file__).parents[2] / "src/keysentry/sim/scenarios/demo-kucoin.yaml"
FAST = Timeouts(connect=2.0, total=5.0)


def key(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "api_key": KEY,
        "secret": SECRET,
        "passphrase": PASSPHRASE,
        "permissions": ["General", "Spot"],
        "ip_whitelist": ["127.0.0.0/8"],
        "created_at": CREATED.isoformat(),
        "label": "bot key",
    }
    return {**spec, **extra}


def scenario(*keys: dict[str, Any], account: Mapping[str, Any] | None = None, **kucoin: Any) -> Scenario:
    acct = {
        "id": ACCOUNT_ID,
        "balances": {"BTC": "0.5", "USDT": "100"},
        "deposit_addresses": {"BTC": "bc1qadapterdeposit000000000000000000000"},
        "keys": list(keys) or [key()],
        **(account or {}),
    }
    return parse_scenario({"seed": 7, "exchanges": {"kucoin": {"accounts": [acct], **kucoin}}})


def creds(
    api_key: str = KEY, secret: str = SECRET, passphrase: str | None = PASSPHRASE, version: int = 2
) -> ApiCredentials:
    pp = Secret(passphrase) if passphrase is not None else None
    return ApiCredentials(api_key, Secret(secret), pp, key_version=version)


class Harness:
    def __init__(self, cluster: SimCluster, transport: Transport) -> None:
        self.cluster = cluster
        self.transport = transport

    async def check(
        self,
        credentials: ApiCredentials | None = None,
        settings: KucoinSettings | None = None,
        **request: Any,
    ) -> KeyFacts:
        adapter = KucoinAdapter(self.transport, base_url=self.cluster.url("kucoin"), settings=settings)
        return await adapter.check(CheckRequest(credentials or creds(), **request))


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """`sim = await start(scenario, egress_ips=..., timeouts=...)`: simulators and a transport."""
    async with contextlib.AsyncExitStack() as stack:

        async def _start(
            scn: Scenario, *, egress_ips: tuple[str, ...] = (), timeouts: Timeouts = FAST
        ) -> Harness:
            cluster = await stack.enter_async_context(SimCluster(scn))
            transport = await stack.enter_async_context(Transport(egress_ips=egress_ips, timeouts=timeouts))
            return Harness(cluster, transport)

        yield _start


# -- environments and base URLs ------------------------------------------------------------------


def test_environments_are_the_simulators_with_kucoin_real_hosts() -> None:
    assert set(KucoinAdapter.environments) == set(KucoinSim.environments) == {"mainnet"}
    families = KucoinAdapter.environments["mainnet"]
    assert families == {"spot": "https://api.kucoin.com", "futures": "https://api-futures.kucoin.com"}
    assert KucoinAdapter.needs_passphrase


def test_base_url_replaces_every_family_and_the_retired_sandbox_is_refused() -> None:
    mock = MockTransport(lambda *_: RawResponse(200))
    adapter = KucoinAdapter(mock, base_url="http://127.0.0.1:9999")
    assert adapter.url("spot", "/api/v1/accounts") == "http://127.0.0.1:9999/api/v1/accounts"
    assert (
        adapter.url("futures", "/api/v1/account-overview") == "http://127.0.0.1:9999/api/v1/account-overview"
    )
    with pytest.raises(AdapterConfigError, match="sandbox"):
        KucoinAdapter(mock, environment="sandbox")


async def test_probes_go_to_their_real_hosts_signed() -> None:
    mock = MockTransport(lambda *_: RawResponse.from_json(200, {"code": "200000", "data": {}}))
    clock = 1_700_000_000_000
    adapter = KucoinAdapter(mock, clock_ms=lambda: clock)
    await adapter.check(CheckRequest(creds(), needs_futures=True, deposit_currency="usdt"))
    urls = {s.url for s in mock.sent[:5]}  # the first round (the empty answers bring a second)
    assert urls == {
        "https://api.kucoin.com/api/v1/user/api-key",
        "https://api.kucoin.com/api/v1/accounts",
        "https://api.kucoin.com/api/v1/hf/orders/test",
        "https://api-futures.kucoin.com/api/v1/account-overview?currency=USDT",
        "https://api.kucoin.com/api/v3/deposit-addresses?currency=USDT",
    }
    # Signed as the reference states it, recomputed here independently of signing.py.
    sent = next(s for s in mock.sent if s.url.endswith("/user/api-key"))
    prehash = f"{clock}GET/api/v1/user/api-key"
    digest = hmac.new(SECRET.encode(), prehash.encode(), hashlib.sha256).digest()
    passphrase = hmac.new(SECRET.encode(), PASSPHRASE.encode(), hashlib.sha256).digest()
    assert sent.headers["KC-API-SIGN"] == base64.b64encode(digest).decode()
    assert sent.headers["KC-API-PASSPHRASE"] == base64.b64encode(passphrase).decode()
    assert (sent.headers["KC-API-KEY"], sent.headers["KC-API-TIMESTAMP"]) == (KEY, str(clock))
    assert sent.headers["KC-API-KEY-VERSION"] == "2"
    order = next(s for s in mock.sent if s.method == "POST")
    assert order.headers["Content-Type"] == "application/json" and order.body is not None
    body = json.loads(order.body)
    assert body["symbol"] == "BTC-USDT" and body["clientOid"]


@pytest.mark.parametrize(
    "probe",
    [
        None,  # the default probe
        {"symbol": "ETH-USDT", "side": "buy", "type": "limit", "price": "1", "size": "0.01"},
        {"clientOid": "first", "symbol": "ETH-USDT"},  # a clientOid of its own is replaced where it stands
        {"symbol": "keysentry-client-oid", "note": "ü"},  # values that look like the body's placeholder
    ],
)
async def test_trade_probe_body_is_the_settings_probe_with_a_fresh_client_oid(
    probe: dict[str, Any] | None,
) -> None:
    mock = MockTransport(lambda *_: RawResponse.from_json(200, {"code": "200000", "data": {}}))
    settings = KucoinSettings() if probe is None else KucoinSettings(trade_probe=probe)
    adapter = KucoinAdapter(mock, settings=settings)
    await adapter.check(CheckRequest(creds()))
    await adapter.check(CheckRequest(creds()))
    bodies = [s.body for s in mock.sent if s.method == "POST"]
    assert len(bodies) == 2 and all(b is not None for b in bodies)
    oids = [json.loads(b or b"")["clientOid"] for b in bodies]
    assert len(set(oids)) == 2 and all(len(o) == 32 for o in oids)
    for body, oid in zip(bodies, oids, strict=True):  # the exact bytes signed and sent
        expected = {**settings.trade_probe, "clientOid": oid}
        assert body == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()


# -- keys that work --------------------------------------------------------------------------------


async def test_connected_key(start: Start) -> None:
    sim = await start(scenario(key(permissions=["General", "Spot", "Futures"])))
    facts = await sim.check()
    assert facts.cause is C.OK and facts.candidates == ()
    assert facts.account_id == ACCOUNT_ID
    assert facts.permissions == READ_PERMISSIONS | {P.SPOT_TRADE, P.FUTURES_TRADE}
    assert facts.native_permissions == ("General", "Spot", "Futures")
    # KuCoin masks whitelisted addresses; they are kept as given and the masking is said.
    assert facts.ip_restricted is True and facts.ip_whitelist == ("127.**.0/8",)
    assert any("masked" in e for e in facts.evidence)
    assert facts.expires_at is None and facts.expiry_kind is None  # KuCoin exposes no expiry
    assert facts.created_at == CREATED
    assert facts.label == "bot key"
    assert facts.account_flags == {"is_master": True, "key_version": 2}
    assert facts.futures_active is None  # not asked: the profile did not need futures
    # Nothing failed: one round only, no clock or status question.
    assert set(facts.outcomes) == {Probe.INTROSPECTION, Probe.BALANCE, Probe.TRADE}
    assert facts.server_time_offset_ms is None and facts.system_status is None


@pytest.mark.parametrize(
    ("permissions", "expected"),
    [
        (["General"], READ_PERMISSIONS),
        (["General", "Spot"], READ_PERMISSIONS | {P.SPOT_TRADE}),
        (["General", "Spot", "Futures"], READ_PERMISSIONS | {P.SPOT_TRADE, P.FUTURES_TRADE}),
        (["General", "Spot", "Transfer"], READ_PERMISSIONS | {P.SPOT_TRADE} | FUNDS_OUT),
        (["General", "InnerTransfer"], READ_PERMISSIONS | {P.TRANSFER}),
        (["General", "Margin", "Earn"], READ_PERMISSIONS | {P.MARGIN_TRADE}),
    ],
    ids=["read-only", "spot", "futures", "withdraw", "inner-transfer", "margin-earn"],
)
async def test_permission_combinations(
    start: Start, permissions: list[str], expected: frozenset[Permission]
) -> None:
    sim = await start(scenario(key(permissions=permissions, ip_whitelist=[])))
    facts = await sim.check()
    assert facts.cause is C.OK
    assert facts.permissions == expected
    assert facts.native_permissions == tuple(permissions)
    assert facts.ip_restricted is False and facts.ip_whitelist == ()
    assert not any("masked" in e for e in facts.evidence)
    trade = facts.outcomes[Probe.TRADE]
    # The trade probe agrees with the permission list: refused exactly when Spot is missing.
    assert trade.ok is ("Spot" in permissions)
    if not trade.ok:
        assert trade.code == "400007" and any("orders/test" in e for e in facts.evidence)


async def test_whitelist_shown_in_clear_when_the_exchange_does(start: Start) -> None:
    scn = scenario(
        key(ip_whitelist=["127.0.0.2", "10.0.0.0/24"]), settings={"ip_whitelist_rendering": "plain"}
    )
    sim = await start(scn, egress_ips=("127.0.0.2",))
    facts = await sim.check()
    assert facts.cause is C.OK
    assert facts.ip_whitelist == ("127.0.0.2", "10.0.0.0/24") and facts.ip_restricted is True
    assert not any("masked" in e for e in facts.evidence)


@pytest.mark.parametrize("empty", ["null", "omit"])
async def test_no_whitelist_however_it_is_rendered(start: Start, empty: str) -> None:
    sim = await start(scenario(key(ip_whitelist=[]), settings={"empty_ip_whitelist": empty}))
    facts = await sim.check()
    assert facts.ip_restricted is False and facts.ip_whitelist == ()


async def test_version_1_key_sends_its_passphrase_in_clear(start: Start) -> None:
    sim = await start(scenario(key(key_version=1)))
    facts = await sim.check(credentials=creds(version=1))
    assert facts.cause is C.OK and facts.account_flags["key_version"] == 1
    wrong = await sim.check(credentials=creds(passphrase="Canary-pass-78", version=1))
    assert wrong.cause is C.BAD_PASSPHRASE
    assert any("version 1" in e for e in wrong.evidence)


# -- futures and deposit addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("opened", "needs_futures", "cause", "active"),
    [
        (False, True, C.FUTURES_NOT_OPENED, False),
        (False, False, C.OK, None),
        (True, True, C.OK, True),
    ],
)
async def test_futures_account(
    start: Start, opened: bool, needs_futures: bool, cause: Cause, active: bool | None
) -> None:
    sim = await start(scenario(key(permissions=["General", "Futures"]), account={"futures_opened": opened}))
    facts = await sim.check(needs_futures=needs_futures)
    assert facts.cause is cause
    assert facts.futures_active is active
    assert (Probe.FUTURES in facts.outcomes) is needs_futures
    assert facts.permissions is not None and P.FUTURES_TRADE in facts.permissions
    if cause is C.FUTURES_NOT_OPENED:
        # The outcome carries the deciding cause, so its code reaches the finding.
        futures = facts.outcomes[Probe.FUTURES]
        assert (futures.cause, futures.code, futures.http_status) == (C.FUTURES_NOT_OPENED, "400007", 403)
        assert any("no futures account" in e for e in facts.evidence)


async def test_futures_needed_but_the_key_lacks_the_permission(start: Start) -> None:
    sim = await start(scenario(key(permissions=["General", "Spot"])))
    facts = await sim.check(needs_futures=True)
    # The engine says what is missing from the permissions; the adapter does not guess the account.
    assert facts.cause is C.OK and facts.futures_active is None
    assert facts.permissions is not None and P.FUTURES_TRADE not in facts.permissions
    assert facts.outcomes[Probe.FUTURES].code == "400007"


async def test_futures_account_answering_empty_counts_as_active(start: Start) -> None:
    scn = scenario(
        key(permissions=["General", "Futures"]),
        account={"futures_opened": False},
        settings={"futures_not_opened": "empty_account"},
    )
    facts = await (await start(scn)).check(needs_futures=True)
    assert facts.cause is C.OK and facts.futures_active is True


@pytest.mark.parametrize(("currency", "exists"), [("BTC", True), ("ETH", False), ("btc", True)])
async def test_deposit_address(start: Start, currency: str, exists: bool) -> None:
    sim = await start(scenario())
    facts = await sim.check(deposit_currency=currency)
    assert facts.cause is C.OK
    assert facts.deposit_addresses == {currency.upper(): exists}


async def test_no_deposit_or_futures_probe_unless_asked(start: Start) -> None:
    facts = await (await start(scenario())).check()
    assert facts.deposit_addresses == {}
    assert Probe.DEPOSIT_ADDRESS not in facts.outcomes and Probe.FUTURES not in facts.outcomes


# -- keys that do not work -------------------------------------------------------------------------


async def test_unknown_key(start: Start) -> None:
    sim = await start(scenario())
    facts = await sim.check(credentials=creds(api_key="0123456789abcdef01234567"))
    assert facts.cause is C.UNKNOWN_KEY
    assert facts.candidates == (C.UNKNOWN_KEY, C.KEY_EXPIRED)
    intro = facts.outcomes[Probe.INTROSPECTION]
    assert (intro.code, intro.http_status) == ("400003", 401)
    assert facts.account_id is None and facts.permissions is None
    assert any("deletes keys" in e for e in facts.evidence)
    # Something failed: the clock was asked, the status was not (the cause is not temporary).
    assert facts.server_time_offset_ms is not None and abs(facts.server_time_offset_ms) < 2000
    assert Probe.SYSTEM_STATUS not in facts.outcomes


@pytest.mark.parametrize("api_key", ["not-a-kucoin-key", KEY.upper(), KEY[:-1], KEY + "0"])
async def test_malformed_key(start: Start, api_key: str) -> None:
    sim = await start(scenario())
    facts = await sim.check(credentials=creds(api_key=api_key))
    assert facts.cause is C.MALFORMED_KEY and facts.candidates == ()
    intro = facts.outcomes[Probe.INTROSPECTION]
    assert (intro.cause, intro.code) == (C.MALFORMED_KEY, "400003")
    assert any("24" in e for e in facts.evidence)


@pytest.mark.parametrize("state", [{"deleted": True}, {"enabled": False}])
async def test_deleted_or_disabled_key(start: Start, state: dict[str, Any]) -> None:
    sim = await start(scenario(key(**state)))
    assert (await sim.check()).cause is C.UNKNOWN_KEY


async def test_wrong_secret(start: Start) -> None:
    facts = await (await start(scenario())).check(credentials=creds(secret=OTHER_SECRET))
    assert facts.cause is C.BAD_SIGNATURE and facts.candidates == ()
    assert {o.code for p, o in facts.outcomes.items() if p is not Probe.SERVER_TIME} == {"400005"}
    assert any("the key exists" in e for e in facts.evidence)


async def test_wrong_passphrase(start: Start) -> None:
    facts = await (await start(scenario())).check(credentials=creds(passphrase="canary-pass-77"))
    assert facts.cause is C.BAD_PASSPHRASE and facts.candidates == ()
    assert facts.outcomes[Probe.INTROSPECTION].code == "400004"
    assert any("the secret is right" in e for e in facts.evidence)


async def test_passphrase_checked_first_leaves_the_secret_in_doubt(start: Start) -> None:
    sim = await start(scenario(settings={"passphrase_before_signature": True}))
    settings = KucoinSettings(passphrase_checked_first=True)
    facts = await sim.check(credentials=creds(secret=OTHER_SECRET), settings=settings)
    # The v2 passphrase header is HMAC'd with the (wrong) secret, so KuCoin answers 400004.
    assert facts.cause is C.BAD_PASSPHRASE
    assert facts.candidates == (C.BAD_PASSPHRASE, C.BAD_SIGNATURE)
    assert facts.outcomes[Probe.INTROSPECTION].code == "400004"


async def test_missing_passphrase_is_said_without_asking() -> None:
    mock = MockTransport(lambda *_: RawResponse(500))
    facts = await KucoinAdapter(mock).check(CheckRequest(creds(passphrase=None)))
    assert facts.cause is C.BAD_PASSPHRASE and mock.sent == []
    assert any("no passphrase" in e for e in facts.evidence)


@pytest.mark.parametrize("api_key", ["5e0f1a2b 3c4d5e6f7a8b9c0d", "5e0f1a2b\r\nX-Evil: 1", "", "clé"])
async def test_key_no_header_can_carry_is_not_sent(api_key: str) -> None:
    mock = MockTransport(lambda *_: RawResponse(500))
    facts = await KucoinAdapter(mock).check(CheckRequest(creds(api_key=api_key)))
    assert facts.cause is C.MALFORMED_KEY and mock.sent == []


@pytest.mark.parametrize("offset_ms", [120_000, -90_000])
async def test_clock_skew_and_measured_offset(start: Start, offset_ms: int) -> None:
    sim = await start(scenario(clock_offset_ms=offset_ms))
    facts = await sim.check()
    assert facts.cause is C.CLOCK_SKEW
    assert facts.outcomes[Probe.INTROSPECTION].code == "400002"
    assert facts.server_time_offset_ms is not None
    assert abs(facts.server_time_offset_ms - offset_ms) < 2000
    assert any(f"{offset_ms / 1000:+.0f}" in e and "5 s" in e for e in facts.evidence)


async def test_small_offset_within_the_window_works(start: Start) -> None:
    facts = await (await start(scenario(clock_offset_ms=3000))).check()
    assert facts.cause is C.OK


async def test_ip_not_allowed(start: Start) -> None:
    sim = await start(scenario(key(ip_whitelist=["127.0.0.2"])), egress_ips=("127.0.0.3",))
    facts = await sim.check()
    assert facts.cause is C.IP_NOT_ALLOWED
    intro = facts.outcomes[Probe.INTROSPECTION]
    assert (intro.code, intro.egress_ip) == ("400006", "127.0.0.3")
    assert any("127.0.0.3" in e and "400006" in e for e in facts.evidence)
    assert facts.account_id is None


async def test_ip_not_allowed_asks_again_from_the_other_addresses(start: Start) -> None:
    sim = await start(scenario(key(ip_whitelist=["127.0.0.2"])), egress_ips=("127.0.0.3", "127.0.0.2"))
    facts = await sim.check()
    assert facts.cause is C.IP_NOT_ALLOWED
    assert "user/api-key answered from 127.0.0.2 but 400006 from 127.0.0.3" in facts.evidence
    # What the key is, learnt from the address it accepts.
    assert facts.account_id == ACCOUNT_ID and facts.ip_whitelist == ("127.**.2",)


async def test_ip_not_allowed_from_every_address(start: Start) -> None:
    sim = await start(scenario(key(ip_whitelist=["10.1.2.3"])), egress_ips=("127.0.0.3", "127.0.0.2"))
    facts = await sim.check()
    assert facts.cause is C.IP_NOT_ALLOWED and facts.account_id is None
    assert any("from 127.0.0.2" in e and "400006" in e for e in facts.evidence)


async def test_whitelisted_sending_address_works(start: Start) -> None:
    sim = await start(scenario(key(ip_whitelist=["127.0.0.2"])), egress_ips=("127.0.0.2",))
    facts = await sim.check()
    assert facts.cause is C.OK and facts.ip_whitelist == ("127.**.2",)


async def test_expired_key_reads_as_unknown(start: Start) -> None:
    facts = await (await start(scenario(key(expires_at="-1h")))).check()
    assert facts.cause is C.UNKNOWN_KEY and C.KEY_EXPIRED in facts.candidates
    assert facts.expires_at is None


async def test_expired_key_that_loses_its_trade_rights(start: Start) -> None:
    scn = scenario(key(expires_at="-1h"), settings={"expired_key_behaviour": "trade_disabled"})
    facts = await (await start(scn)).check()
    assert facts.cause is C.OK
    assert facts.permissions == READ_PERMISSIONS  # the engine reports spot_trade missing
    assert facts.expires_at is None


async def test_key_about_to_expire_shows_no_expiry(start: Start) -> None:
    # KuCoin keeps an expiry (if any) to itself: expires_soon cannot be told on KuCoin.
    facts = await (await start(scenario(key(expires_at="+2d")))).check()
    assert facts.cause is C.OK and facts.expires_at is None and facts.expiry_kind is None


INTRO, TRADE, BALANCE = Probe.INTROSPECTION, Probe.TRADE, Probe.BALANCE


@pytest.mark.parametrize(
    ("account", "settings", "cause", "probe", "code"),
    [
        ({"frozen": True}, {}, C.ACCOUNT_FROZEN, INTRO, "411100"),
        ({"banned": True}, {}, C.ACCOUNT_BANNED, INTRO, "400700"),
        ({"banned": True}, {"banned_code": "411100"}, C.ACCOUNT_FROZEN, INTRO, "411100"),
        ({"api_disabled": True}, {}, C.API_DISABLED, INTRO, "400007"),
        ({"api_disabled": True}, {"api_disabled_code": "411100"}, C.ACCOUNT_FROZEN, INTRO, "411100"),
        ({"kyc_required": True, "kyc_level": 0}, {}, C.KYC_REQUIRED, TRADE, "400303"),
        ({"kyc_required": True}, {"kyc_required_scope": "all"}, C.KYC_REQUIRED, INTRO, "400303"),
        ({"region_restricted": True}, {}, C.REGION_RESTRICTED, TRADE, "400500"),
        ({"region_restricted": True}, {"region_restricted_scope": "all"}, C.REGION_RESTRICTED, BALANCE,
         "400500"),
    ],
    ids=["frozen", "banned", "banned-411100", "api-disabled", "api-disabled-411100", "kyc", "kyc-all",
         "region", "region-all"],
)  # fmt: skip
async def test_restricted_accounts(
    start: Start, account: dict[str, Any], settings: dict[str, Any], cause: Cause, probe: Probe, code: str
) -> None:
    sim = await start(scenario(account=account, settings=settings))
    facts = await sim.check()
    assert facts.cause is cause
    assert facts.outcomes[probe].code == code
    if probe is Probe.TRADE:
        # Reads still work for these accounts: the key is known, the account is what is refused.
        assert facts.account_id == ACCOUNT_ID and facts.outcomes[Probe.INTROSPECTION].ok
    if cause is C.API_DISABLED:
        assert any("every KuCoin key" in e for e in facts.evidence)


async def test_kyc_also_blocks_the_deposit_address(start: Start) -> None:
    scn = scenario(key(permissions=["General"]), account={"kyc_required": True})
    facts = await (await start(scn)).check(deposit_currency="BTC")
    assert facts.cause is C.KYC_REQUIRED
    assert facts.outcomes[Probe.DEPOSIT_ADDRESS].code == "400303" and facts.deposit_addresses == {}


# -- environments ------------------------------------------------------------------------------------


async def test_key_of_another_environment(start: Start) -> None:
    sim = await start(scenario())
    sim.cluster.sim("kucoin").spec.accounts[0].keys[0].environment = "sandbox"
    facts = await sim.check()
    # The sandbox is retired: its keys never existed on mainnet, and there is no other adapter to try.
    assert facts.cause is C.UNKNOWN_KEY
    assert facts.outcomes[Probe.INTROSPECTION].code == "400003"
    sim.cluster.sim("kucoin").spec.accounts[0].keys[0].environment = "mainnet"
    assert (await sim.check()).cause is C.OK


# -- the exchange failing to answer --------------------------------------------------------------------


@pytest.mark.parametrize("retry_after_header", [False, True])
async def test_rate_limited(start: Start, retry_after_header: bool) -> None:
    # user/api-key (20) and accounts (5) share the management pool: one check fits, a second does not.
    limits = {"management_quota": 25, "window_s": 3600}
    sim = await start(scenario(limits=limits, settings={"send_retry_after": retry_after_header}))
    assert (await sim.check()).cause is C.OK
    facts = await sim.check()
    assert facts.cause is C.RATE_LIMITED
    limited = facts.outcomes[Probe.INTROSPECTION]
    assert (limited.http_status, limited.code) == (429, "429000")
    # The rest of the simulator's hour-long window, from Retry-After or gw-ratelimit-reset (ms).
    assert limited.retry_after_s is not None and 3500 <= limited.retry_after_s <= 3600
    if retry_after_header:
        assert limited.retry_after_s == int(limited.retry_after_s)
    assert facts.outcomes[Probe.TRADE].ok  # another pool
    assert facts.system_status == "normal"  # a temporary cause: the status was asked


@pytest.mark.parametrize("status", ["close", "cancelonly"])
async def test_maintenance(start: Start, status: str) -> None:
    scn = scenario(maintenance=[{"start": "-1h", "end": "+1h"}], settings={"maintenance_status": status})
    facts = await (await start(scn)).check()
    assert facts.cause is C.MAINTENANCE
    assert facts.outcomes[Probe.INTROSPECTION].http_status == 503
    assert facts.system_status == "maintenance"
    assert any(repr(status) in e for e in facts.evidence)
    # Time and status stay reachable during maintenance.
    assert facts.server_time_offset_ms is not None


async def test_injected_server_errors(start: Start) -> None:
    facts = await (await start(scenario(faults={"error_rate": 1.0}))).check()
    assert facts.cause is C.SERVER_ERROR
    assert facts.outcomes[Probe.INTROSPECTION].code == "500000"
    # The clock and status questions failed too: unknown, not guessed.
    assert facts.server_time_offset_ms is None and facts.system_status is None


async def test_timeouts(start: Start) -> None:
    faults = {"timeout_rate": 1.0, "timeout_s": 2}
    sim = await start(scenario(faults=faults), timeouts=Timeouts(connect=1.0, total=0.3))
    facts = await sim.check()
    assert facts.cause is C.TIMEOUT
    assert {o.cause for o in facts.outcomes.values()} == {C.TIMEOUT}
    assert facts.server_time_offset_ms is None


async def test_futures_account_not_answering_makes_a_futures_check_temporary() -> None:
    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path.endswith("/account-overview"):
            return RawResponse.from_json(500, {"code": "500000", "msg": "Internal Server Error"})
        return RawResponse.from_json(200, ANSWERS.get(path, {"code": "200000", "data": {}}))

    facts = await KucoinAdapter(MockTransport(handler)).check(CheckRequest(creds(), needs_futures=True))
    assert facts.cause is C.SERVER_ERROR and facts.account_id == ACCOUNT_ID


async def test_deposit_probe_not_answering_only_leaves_the_address_unknown() -> None:
    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path.endswith("/deposit-addresses"):
            return RawResponse.from_json(500, {"code": "500000", "msg": "Internal Server Error"})
        return RawResponse.from_json(200, ANSWERS.get(path, {"code": "200000", "data": {}}))

    facts = await KucoinAdapter(MockTransport(handler)).check(CheckRequest(creds(), deposit_currency="BTC"))
    assert facts.cause is C.OK and facts.deposit_addresses == {}
    assert any("deposit-addresses" in e and "server_error" in e for e in facts.evidence)


# -- the demo scenario: every key of it shows its intended state ----------------------------------------

EXPECTED_BY_INTENT: Mapping[str, frozenset[Cause]] = {
    "connected": frozenset({C.OK}),
    "already_connected": frozenset({C.OK}),
    "secret_mismatch": frozenset({C.BAD_SIGNATURE}),
    "passphrase_invalid": frozenset({C.BAD_PASSPHRASE}),
    "clock_skew": frozenset({C.CLOCK_SKEW}),
    "ip_not_allowed": frozenset({C.IP_NOT_ALLOWED}),
    "invalid_key": frozenset({C.UNKNOWN_KEY}),
    "account_restricted": frozenset(
        {C.ACCOUNT_FROZEN, C.ACCOUNT_BANNED, C.API_DISABLED, C.KYC_REQUIRED, C.REGION_RESTRICTED}
    ),
    "withdrawal_enabled": frozenset({C.OK}),
    "incorrect_permissions": frozenset({C.OK}),
    "inactive_futures": frozenset({C.FUTURES_NOT_OPENED}),
}


async def test_demo_scenario_keys(start: Start) -> None:
    scn = load_scenario(DEMO_SCENARIO)
    sim = await start(scn)
    wrong: list[str] = []
    restricted: set[Cause] = set()
    for account in scn.exchanges["kucoin"].accounts:
        for k in account.keys:
            intent = k.intent or "connected"
            given = creds(k.api_key, k.client_secret or k.secret, k.client_passphrase or k.passphrase)
            facts = await sim.check(credentials=given, needs_futures=intent == "inactive_futures")
            if facts.cause not in EXPECTED_BY_INTENT[intent]:
                wrong.append(f"{k.label}: {facts.cause} {facts.evidence}")
            if intent == "account_restricted":
                restricted.add(facts.cause)
            granted = facts.permissions or frozenset()
            if intent == "withdrawal_enabled" and not granted >= FUNDS_OUT:
                wrong.append(f"{k.label}: withdraw/transfer missing from {sorted(granted)}")
            if intent == "incorrect_permissions" and P.SPOT_TRADE in granted:
                wrong.append(f"{k.label}: a read-only key shows spot_trade")
            if intent in {"connected", "already_connected"} and facts.account_id != account.id:
                wrong.append(f"{k.label}: account id {facts.account_id}")
    assert wrong == []
    assert restricted == EXPECTED_BY_INTENT["account_restricted"]  # one key per reason


@pytest.mark.parametrize(
    ("intent", "profile", "status"),
    [
        ("connected", "trading", Status.CONNECTED),
        ("withdrawal_enabled", "trading", Status.WITHDRAWAL_ENABLED),
        ("incorrect_permissions", "trading", Status.INCORRECT_PERMISSIONS),
        ("incorrect_permissions", "read-only", Status.CONNECTED),
        ("inactive_futures", "futures-trading", Status.INACTIVE_FUTURES),
        ("passphrase_invalid", "trading", Status.PASSPHRASE_INVALID),
    ],
)
async def test_engine_statuses_of_demo_keys(start: Start, intent: str, profile: str, status: Status) -> None:
    from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
    from keysentry.diagnosis.profiles import get_profile

    scn = load_scenario(DEMO_SCENARIO)
    sim = await start(scn)
    k = next(k for a in scn.exchanges["kucoin"].accounts for k in a.keys if k.intent == intent)
    given = creds(k.api_key, k.client_secret or k.secret, k.client_passphrase or k.passphrase)
    options = CheckOptions(profile=get_profile(profile), base_url=sim.cluster.url("kucoin"))
    diagnosis = await DiagnosisEngine(sim.transport).diagnose_credentials("kucoin", given, options)
    assert diagnosis.status is status, [f.code for f in diagnosis.findings]


# -- classify(): the code table on raw answers --------------------------------------------------------

# (HTTP status the reference or simulator gives, code, cause): every code of the reference's KuCoin section.
REFERENCE_CODES: list[tuple[int, str, Cause]] = [
    (401, "400001", C.UNEXPECTED),
    (401, "400002", C.CLOCK_SKEW),
    (401, "400003", C.UNKNOWN_KEY),
    (401, "400004", C.BAD_PASSPHRASE),
    (401, "400005", C.BAD_SIGNATURE),
    (401, "400006", C.IP_NOT_ALLOWED),
    (403, "400006", C.IP_NOT_ALLOWED),
    (403, "400007", C.PERMISSION_DENIED),
    (403, "411100", C.ACCOUNT_FROZEN),
    (403, "400700", C.ACCOUNT_BANNED),
    (400, "400303", C.KYC_REQUIRED),
    (200, "400303", C.KYC_REQUIRED),
    (400, "200009", C.KYC_REQUIRED),
    (400, "400500", C.REGION_RESTRICTED),
    (400, "126037", C.REGION_RESTRICTED),
    (400, "126046", C.REGION_RESTRICTED),
    (400, "130315", C.REGION_RESTRICTED),
    (429, "429000", C.RATE_LIMITED),
    (500, "500000", C.SERVER_ERROR),
]


def adapter(settings: KucoinSettings | None = None) -> KucoinAdapter:
    return KucoinAdapter(MockTransport(lambda *_: RawResponse(500)), settings=settings)


def test_every_code_of_the_table_is_tested_here() -> None:
    assert set(kucoin_module.CODES) == {code for _, code, _ in REFERENCE_CODES}


@pytest.mark.parametrize(("status", "code", "cause"), REFERENCE_CODES)
def test_classify_reference_codes(status: int, code: str, cause: Cause) -> None:
    raw = RawResponse.from_json(status, {"code": code, "msg": f"message of {code}"})
    outcome = adapter().classify(Probe.BALANCE, raw)
    assert outcome.cause is cause
    assert (outcome.http_status, outcome.code, outcome.message) == (status, code, f"message of {code}")


@pytest.mark.parametrize(
    ("probe", "cause"),
    [
        (Probe.INTROSPECTION, C.API_DISABLED),
        (Probe.BALANCE, C.PERMISSION_DENIED),
        (Probe.TRADE, C.PERMISSION_DENIED),
    ],
)
def test_access_denied_depends_on_the_probe(probe: Probe, cause: Cause) -> None:
    raw = RawResponse.from_json(403, {"code": "400007", "msg": "Access Denied"})
    assert adapter().classify(probe, raw).cause is cause


@pytest.mark.parametrize(
    ("headers", "settings", "retry_after"),
    [
        ({"gw-ratelimit-reset": "1500"}, KucoinSettings(), 1.5),
        ({"gw-ratelimit-reset": "1500", "Retry-After": "3"}, KucoinSettings(), 3.0),
        ({"gw-ratelimit-reset": "2"}, KucoinSettings(rate_limit_reset_unit_s=1.0), 2.0),
        ({}, KucoinSettings(), None),
    ],
    ids=["reset-ms", "retry-after-wins", "reset-seconds-setting", "none"],
)
def test_rate_limit_retry_after(
    headers: dict[str, str], settings: KucoinSettings, retry_after: float | None
) -> None:
    raw = RawResponse.from_json(429, {"code": "429000", "msg": "Too Many Requests"}, headers=headers)
    outcome = adapter(settings).classify(Probe.INTROSPECTION, raw)
    assert outcome.cause is C.RATE_LIMITED and outcome.retry_after_s == retry_after


def test_code_overrides_replace_table_entries() -> None:
    raw = RawResponse.from_json(403, {"code": "400700", "msg": "Transaction restricted"})
    overridden = adapter(KucoinSettings(code_overrides={"400700": C.ACCOUNT_FROZEN}))
    assert overridden.classify(Probe.BALANCE, raw).cause is C.ACCOUNT_FROZEN
    assert adapter().classify(Probe.BALANCE, raw).cause is C.ACCOUNT_BANNED


@pytest.mark.parametrize(
    ("raw", "cause", "code"),
    [
        (RawResponse.from_json(503, {"code": "503000", "msg": "Unavailable"}), C.MAINTENANCE, "503000"),
        (RawResponse(503, {"Content-Type": "text/html"}, b"<html>maintenance</html>"), C.MAINTENANCE, None),
        (RawResponse(418), C.IP_BANNED, None),
        (RawResponse(429, {"gw-ratelimit-reset": "700"}, b"Too Many Requests"), C.RATE_LIMITED, None),
        (RawResponse(502, {"Content-Type": "text/html"}, b"<html>Bad gateway</html>"), C.SERVER_ERROR, None),
        (RawResponse.from_json(404, {"code": "404000", "msg": "URL Not Found"}), C.UNEXPECTED, "404000"),
        (RawResponse.from_json(400, {"code": "400100", "msg": "Parameter Error"}), C.UNEXPECTED, "400100"),
        (RawResponse(404, {"Content-Type": "text/html"}, b"<html>Not found</html>"), C.UNEXPECTED, None),
        (RawResponse.from_json(200, {"code": "999999", "msg": "Something new"}), C.UNEXPECTED, "999999"),
        (RawResponse.from_json(200, {"code": "200000"}), C.UNEXPECTED, "200000"),
    ],
    ids=["503-code", "503-html", "418", "429-text", "502-html", "404-code", "400100", "404-html",
         "unknown-code", "ok-without-data"],
)  # fmt: skip
def test_classify_http_level_and_unknown_answers(raw: RawResponse, cause: Cause, code: str | None) -> None:
    outcome = adapter().classify(Probe.INTROSPECTION, raw)
    assert outcome.cause is cause and outcome.code == code
    if cause is C.UNEXPECTED:
        assert outcome.message  # the raw code or the HTTP status stays readable
    if raw.status == 429:
        assert outcome.retry_after_s == pytest.approx(0.7)


def test_classify_parses_success_bodies() -> None:
    a = adapter()
    info = {"code": "200000", "data": {"uid": 42, "apiKey": KEY, "permission": "General"}}
    parsed = a.classify(Probe.INTROSPECTION, RawResponse.from_json(200, info))
    assert parsed.ok and parsed.data == {"uid": 42, "permission": "General"}  # the key itself left out
    ts = a.classify(Probe.SERVER_TIME, RawResponse.from_json(200, {"code": "200000", "data": 1729100692873}))
    assert ts.data == {"server_ms": 1729100692873.0}
    accounts = a.classify(Probe.BALANCE, RawResponse.from_json(200, {"code": "200000", "data": []}))
    assert accounts.ok and accounts.data == {"items": []}
    status = {"code": "200000", "data": {"status": "open", "msg": ""}}
    assert a.classify(Probe.SYSTEM_STATUS, RawResponse.from_json(200, status)).data["status"] == "open"
    wrong_shape = a.classify(
        Probe.SERVER_TIME, RawResponse.from_json(200, {"code": "200000", "data": "soon"})
    )
    assert wrong_shape.cause is C.UNEXPECTED


# -- with a mock transport: concurrency, status reading, secrets ----------------------------------------

ANSWERS: Mapping[str, Any] = {
    "/api/v1/user/api-key": {
        "code": "200000",
        "data": {"uid": int(ACCOUNT_ID), "apiKey": KEY, "permission": "General,Spot", "ipWhitelist": ""},
    },
    "/api/v1/accounts": {"code": "200000", "data": []},
    "/api/v1/hf/orders/test": {"code": "200000", "data": {"orderId": "670fd33bf9406e0007ab3945"}},
    "/api/v3/deposit-addresses": {"code": "200000", "data": [{"address": "bc1qx", "currency": "BTC"}]},
}
MAINTENANCE = {"code": "503000", "msg": "Service Unavailable -- We're temporarily offline for maintenance."}


def time_body() -> dict[str, Any]:
    return {"code": "200000", "data": int(time.time() * 1000)}


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
    first, second = Meeting(5), Meeting(2)

    async def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path in {"/api/v1/timestamp", "/api/v1/status"}:
            await second.attend()
            status = {"code": "200000", "data": {"status": "close", "msg": "upgrade"}}
            return RawResponse.from_json(200, time_body() if path.endswith("timestamp") else status)
        await first.attend()
        return RawResponse.from_json(503, MAINTENANCE)

    mock = MockTransport(handler)
    facts = await KucoinAdapter(mock).check(CheckRequest(creds(), needs_futures=True, deposit_currency="BTC"))
    assert facts.cause is C.MAINTENANCE and facts.system_status == "maintenance"
    assert len(mock.sent) == 7


@pytest.mark.parametrize(
    ("status", "expected", "cause"),
    [
        ("close", "maintenance", C.MAINTENANCE),
        ("cancelonly", "maintenance", C.MAINTENANCE),
        ("open", "normal", C.SERVER_ERROR),
    ],
)
async def test_status_turns_server_errors_into_maintenance(status: str, expected: str, cause: Cause) -> None:
    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path == "/api/v1/status":
            return RawResponse.from_json(200, {"code": "200000", "data": {"status": status, "msg": ""}})
        if path == "/api/v1/timestamp":
            return RawResponse.from_json(200, time_body())
        return RawResponse.from_json(500, {"code": "500000", "msg": "Internal Server Error"})

    facts = await KucoinAdapter(MockTransport(handler)).check(CheckRequest(creds()))
    assert facts.system_status == expected and facts.cause is cause


async def test_second_round_only_when_something_failed() -> None:
    mock = MockTransport(lambda m, url, h, b: RawResponse.from_json(200, ANSWERS[urlsplit(url).path]))
    facts = await KucoinAdapter(mock).check(CheckRequest(creds(), deposit_currency="BTC"))
    assert facts.cause is C.OK and facts.deposit_addresses == {"BTC": True}
    assert sorted(urlsplit(s.url).path for s in mock.sent) == sorted(ANSWERS)


async def test_trade_probe_refusal_takes_spot_trade_away() -> None:
    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        if method == "POST":
            return RawResponse.from_json(403, {"code": "400007", "msg": "Access Denied"})
        return RawResponse.from_json(200, ANSWERS[urlsplit(url).path])

    facts = await KucoinAdapter(MockTransport(handler)).check(CheckRequest(creds()))
    assert facts.cause is C.OK and facts.permissions == READ_PERMISSIONS
    assert "user/api-key lists Spot but hf/orders/test answered 400007" in facts.evidence


def leaks(text: str, **canaries: str) -> list[str]:
    """Names of the canaries found in `text`, whole or as any run of 12 of their characters."""
    found = []
    for name, value in canaries.items():
        runs = {value[i : i + 12] for i in range(max(1, len(value) - 11))}
        if any(run in text for run in runs):
            found.append(name)
    return found


CANARIES = {"secret": SECRET, "passphrase": PASSPHRASE, "api_key": KEY}


async def test_no_credential_survives_an_exchange_that_echoes_them() -> None:
    digest = hmac.new(SECRET.encode(), PASSPHRASE.encode(), hashlib.sha256).digest()
    header = base64.b64encode(digest).decode()  # the v2 passphrase header replays like the passphrase
    echo = f"refused key={KEY} secret={SECRET} passphrase={PASSPHRASE} header={header} " + "x" * 290

    def handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        path = urlsplit(url).path
        if path.endswith("/timestamp"):
            return RawResponse.from_json(200, time_body())
        if path.endswith("/deposit-addresses"):
            return RawResponse.from_json(429, {"code": "429000", "msg": echo})
        if path.endswith("/accounts"):
            return RawResponse.from_json(200, {"code": "999999", "msg": echo})
        if method == "POST":
            return RawResponse.from_json(400, {"code": "400100", "msg": echo})
        # The echo cut off within the secret: what is left of it must go too.
        return RawResponse.from_json(401, {"code": "400005", "msg": echo[: echo.index(SECRET) + 20]})

    facts = await KucoinAdapter(MockTransport(handler)).check(CheckRequest(creds(), deposit_currency="BTC"))
    assert facts.cause is C.BAD_SIGNATURE
    assert "<hidden>" in (facts.outcomes[Probe.BALANCE].message or "")
    shown = [repr(facts), *map(repr, facts.outcomes.values()), *facts.evidence, json.dumps(facts.evidence)]
    for text in shown:
        assert leaks(text, header=header, **CANARIES) == []


async def test_no_secret_in_the_facts_of_a_working_key(start: Start) -> None:
    sim = await start(scenario())
    facts = await sim.check(deposit_currency="BTC", needs_futures=True)
    assert facts.cause is C.OK
    for text in [repr(facts), *map(repr, facts.outcomes.values()), *facts.evidence]:
        assert leaks(text, **CANARIES) == []
