"""Issue 3 acceptance: every status of the contract on each exchange, over real HTTP, against the simulators.

Each cell is one key (or one exchange-wide condition) built into a scenario here, checked by
the diagnosis engine through the real transport, and judged on its headline status, severity,
reason, missing permissions, expiry and key findings. `CANNOT_OCCUR` names the combinations
an exchange cannot produce, with the reason; `test_every_status_is_covered` keeps the two
tables complete and apart.

Clusters (module-scoped, one event loop for the module):
- `matrix`: one account per cell, every exchange, the environments wrong-environment cells need;
- `live`: a healthy and a banned key per exchange, whose exchange-wide state (maintenance,
  faults, rate limits, settings) a cell changes through the admin endpoint and restores after.

Egress: the engine sends from 127.0.0.2 and can re-ask from 127.0.0.3 (`TWO`); Binance's -2015
cells also run with 127.0.0.2 alone (`ONE`), where an IP block cannot be told from an unknown key.

Secrets and passphrases are canaries (tests/canary.py): every diagnosis, its JSON and its repr
are scanned for them, and the conftest fixture scans every log record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

import canary
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain import Diagnosis, Status
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster

# The clusters are module-scoped, so the tests that use them share the module's event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")

EXCHANGES = ("binance", "okx", "bybit", "kucoin")
TWO = ("127.0.0.2", "127.0.0.3")
ONE = ("127.0.0.2",)
S = Status

# Written out here rather than taken from the domain, so a changed severity fails this test.
SEVERITY: Mapping[Status, str] = {
    S(name): severity
    for severity, names in {
        "error": "invalid_key secret_mismatch passphrase_invalid clock_skew ip_not_allowed expired "
        "account_restricted already_connected withdrawal_enabled incorrect_permissions inactive_futures",
        "warning": "temporary_issue expires_soon",
        "ok": "connected",
        "unknown": "unchecked",
    }.items()
    for name in names.split()
}
# Statuses after which the key is known to work: the account id must then be known.
WORKING = frozenset(
    {S.CONNECTED, S.EXPIRES_SOON, S.WITHDRAWAL_ENABLED, S.INCORRECT_PERMISSIONS, S.INACTIVE_FUTURES}
)

_STORE = (
    "needs the store (issue 4): the same account connected twice is decided at connect time, not by a check"
)
_NEVER = "never produced by a check: it is the state of a key no one has checked yet"
_NO_PASSPHRASE = "{} keys have no passphrase"
CANNOT_OCCUR: Mapping[tuple[str, Status], str] = {
    ("binance", S.PASSPHRASE_INVALID): _NO_PASSPHRASE.format("Binance"),
    ("bybit", S.PASSPHRASE_INVALID): _NO_PASSPHRASE.format("Bybit"),
    ("okx", S.EXPIRES_SOON): "OKX exposes no expiry; its only rule (14 days unused without an IP binding) "
    "restarts with every check, so it is never reported as an expiry",
    ("okx", S.EXPIRED): "OKX deletes an expired key and then answers 50111 like for an unknown key: "
    "invalid_key (cell okx/invalid_key/past_expiry)",
    ("kucoin", S.EXPIRES_SOON): "KuCoin exposes no expiry (GET /api/v1/user/api-key has no such field)",
    ("kucoin", S.EXPIRED): "KuCoin deletes expired keys and answers 400003 like for an unknown key: "
    "invalid_key (cell kucoin/invalid_key/past_expiry)",
    **{(ex, S.ALREADY_CONNECTED): _STORE for ex in EXCHANGES},
    **{(ex, S.UNCHECKED): _NEVER for ex in EXCHANGES},
}

# What a key of each exchange has unless a cell says otherwise: it works and meets `trading`.
HEALTHY: Mapping[str, Mapping[str, Any]] = {
    "binance": {"permissions": ["reading", "spot_and_margin_trading"], "ip_whitelist": ["127.0.0.0/8"]},
    "okx": {"permissions": ["read_only", "trade"], "ip_whitelist": ["127.0.0.0/8"]},
    "bybit": {"permissions": ["Spot.SpotTrade"], "ip_whitelist": ["127.0.0.0/8"]},
    "kucoin": {"permissions": ["General", "Spot"], "ip_whitelist": ["127.0.0.0/8"]},
}
ENVIRONMENTS: Mapping[str, list[str]] = {
    "binance": ["mainnet", "testnet"],
    "okx": ["mainnet", "demo", "eea"],
    "bybit": ["mainnet", "testnet"],
    "kucoin": ["mainnet"],
}
# Public endpoints the adapters ask after a failure, limited per IP: raised so the cells
# (all from 127.0.0.2) do not rate-limit one another.
LIMITS: Mapping[str, Mapping[str, float]] = {
    "okx": {"public_time_requests": 10_000, "system_status_requests": 10_000},
}
ADDRESSES = {
    "USDT": "0x5aB0C1d2E3f405162738495A6b7C8d9E0f1A2b3C",
    "BTC": "bc1qmatrix0000000000000000000000000000000",
}
NO_WHITELIST: dict[str, Any] = {"ip_whitelist": []}
FUTURES = "futures-trading"


@dataclass(frozen=True)
class Cell:
    """One key and what checking it must give."""

    exchange: str
    status: Status
    name: str
    key: Mapping[str, Any] = field(default_factory=dict)  # scenario key fields over HEALTHY
    account: Mapping[str, Any] = field(default_factory=dict)  # scenario account fields
    profile: str = "trading"
    reason: str | None = None
    missing: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()  # finding codes that must be present
    absent: frozenset[str] = frozenset({"ambiguous_refusal"})  # finding codes that must not be
    expires: timedelta | None = None  # expected expires_at, from the scenario's load time
    expires_in_days: int | None = None
    granted: frozenset[str] = frozenset()  # permissions that must be among those read
    wrong_secret: bool = False  # the client sends a secret of the right format that is not the key's
    wrong_passphrase: bool = False
    egress: tuple[str, ...] = TWO
    checked_in: str = "mainnet"
    details: Mapping[str, Any] = field(default_factory=dict)  # expected details of the headline finding

    @property
    def id(self) -> str:
        return f"{self.exchange}/{self.status.value}/{self.name}"


def cells() -> list[Cell]:
    ip_elsewhere = {"ip_whitelist": ["10.11.12.13"]}
    only_second_egress = {"ip_whitelist": ["127.0.0.3"]}
    out: list[Cell] = []
    for ex in EXCHANGES:
        out += [
            Cell(ex, S.CONNECTED, "ip_restricted", absent=frozenset({"no_ip_restriction", "ambiguous_refusal"})),
            _old_key(ex),
            _deleted(ex),
            Cell(ex, S.SECRET_MISMATCH, "secret_of_another_key", wrong_secret=True, codes=frozenset({"secret_mismatch"})),
            Cell(ex, S.CLOCK_SKEW, "exchange_clock_2_min_ahead", key={"clock_offset_ms": 120_000}, codes=frozenset({"clock_skew"})),
            Cell(ex, S.ACCOUNT_RESTRICTED, "frozen", account={"frozen": True}, reason="frozen"),
            Cell(ex, S.ACCOUNT_RESTRICTED, "api_disabled", account={"api_disabled": True}, reason="api_disabled"),
            Cell(ex, S.ACCOUNT_RESTRICTED, "kyc_required", account={"kyc_required": True, "kyc_level": 0}, reason="kyc_required"),
            Cell(ex, S.ACCOUNT_RESTRICTED, "region_restricted", account={"region": "US", "region_restricted": True}, reason="region_restricted"),
            Cell(ex, S.INCORRECT_PERMISSIONS, "read_only_key", missing=frozenset({"spot_trade"}), codes=frozenset({"incorrect_permissions"})),
            Cell(ex, S.WITHDRAWAL_ENABLED, "can_withdraw", granted=frozenset({"withdraw"}), codes=frozenset({"withdrawal_enabled"})),
            Cell(ex, S.INACTIVE_FUTURES, "futures_account_not_opened", account={"futures_opened": False}, reason="account_not_opened", profile=FUTURES),
        ]  # fmt: skip
        if ex != "binance":  # Binance answers -2015 to an IP block: its own cells below
            out.append(Cell(ex, S.IP_NOT_ALLOWED, "whitelist_elsewhere", key=ip_elsewhere, codes=frozenset({"ip_not_allowed"})))  # fmt: skip
    read_only = {"binance": ["reading"], "okx": ["read_only"], "bybit": ["ReadOnly"], "kucoin": ["General"]}
    withdraw = {
        "binance": ["reading", "spot_and_margin_trading", "withdrawals"],
        "okx": ["read_only", "trade", "withdraw"],
        "bybit": ["Spot.SpotTrade", "Wallet.Withdraw"],
        "kucoin": ["General", "Spot", "Transfer"],
    }
    with_futures = {
        "binance": ["reading", "spot_and_margin_trading", "futures"],
        "okx": ["read_only", "trade"],
        "bybit": ["Spot.SpotTrade", "ContractTrade.Order", "ContractTrade.Position"],
        "kucoin": ["General", "Spot", "Futures"],
    }
    out = [_with_permissions(c, read_only, withdraw, with_futures) for c in out]
    out += [
        # -- Binance: -2015 and the trading authority ------------------------------------------------
        Cell("binance", S.IP_NOT_ALLOWED, "whitelist_has_only_second_egress", key=only_second_egress,
             codes=frozenset({"ip_not_allowed"})),
        Cell("binance", S.INVALID_KEY, "ip_block_with_one_egress_is_ambiguous", key=only_second_egress, egress=ONE,
             reason="unknown", codes=frozenset({"ambiguous_refusal"}), absent=frozenset(),
             details={"likely": "invalid_key", "candidates": ["ip_not_allowed"]}),
        Cell("binance", S.INVALID_KEY, "whitelist_has_no_egress_is_ambiguous", key=ip_elsewhere,
             reason="unknown", codes=frozenset({"ambiguous_refusal"}), absent=frozenset(),
             details={"likely": "invalid_key", "candidates": ["ip_not_allowed"]}),
        Cell("binance", S.INVALID_KEY, "banned_answers_like_unknown_key", account={"banned": True},
             reason="unknown", codes=frozenset({"ambiguous_refusal"}), absent=frozenset()),
        Cell("binance", S.INVALID_KEY, "not_activated", key={"enabled": False},
             codes=frozenset({"ambiguous_refusal"}), absent=frozenset()),
        Cell("binance", S.INVALID_KEY, "testnet_key_on_mainnet", key={"environment": "testnet"},
             reason="wrong_environment", codes=frozenset({"invalid_key", "wrong_environment"}),
             details={"reason": "wrong_environment"}),
        Cell("binance", S.INVALID_KEY, "mainnet_key_on_testnet", checked_in="testnet",
             reason="wrong_environment", codes=frozenset({"invalid_key", "wrong_environment"})),
        Cell("binance", S.EXPIRED, "trading_authority_lapsed", key={**NO_WHITELIST, "expires_at": "-3d"},
             expires=timedelta(days=-3), expires_in_days=0, codes=frozenset({"expired"})),
        Cell("binance", S.EXPIRES_SOON, "trading_authority_ends_in_5_days", key={**NO_WHITELIST, "expires_at": "+5d"},
             reason="trading_authority", expires=timedelta(days=5), expires_in_days=5,
             codes=frozenset({"expires_soon", "no_ip_restriction"})),
        Cell("binance", S.CONNECTED, "no_whitelist_no_expiry", key=NO_WHITELIST, codes=frozenset({"no_ip_restriction"})),
        Cell("binance", S.INACTIVE_FUTURES, "futures_permission_missing", reason="permission_missing", profile=FUTURES),
        Cell("binance", S.CONNECTED, "market_making_without_deposit_address", profile="market-making",
             account={"deposit_addresses": {}}, codes=frozenset({"missing_deposit_address"})),
        # -- OKX ----------------------------------------------------------------------------------------
        Cell("okx", S.CONNECTED, "no_ip_binding_used_yesterday", key={**NO_WHITELIST, "last_used_at": "-1d"},
             codes=frozenset({"no_ip_restriction"})),
        Cell("okx", S.PASSPHRASE_INVALID, "passphrase_of_another_key", wrong_passphrase=True,
             codes=frozenset({"passphrase_invalid"})),
        Cell("okx", S.IP_NOT_ALLOWED, "whitelist_has_only_second_egress", key=only_second_egress,
             codes=frozenset({"ip_not_allowed"})),
        Cell("okx", S.INVALID_KEY, "past_expiry", key={"expires_at": "-1d"}, reason="unknown"),
        Cell("okx", S.INVALID_KEY, "unused_14_days_without_ip_binding",
             key={**NO_WHITELIST, "last_used_at": "-20d", "created_at": "-60d"}, reason="unknown"),
        Cell("okx", S.INVALID_KEY, "demo_key_on_live", key={"environment": "demo"}, reason="wrong_environment"),
        Cell("okx", S.INVALID_KEY, "eea_key_on_www", key={"environment": "eea"}, reason="wrong_environment",
             codes=frozenset({"wrong_environment"})),
        # 50007 "User blocked" does not say frozen or banned (the live cluster switches to 50012).
        Cell("okx", S.ACCOUNT_RESTRICTED, "banned_answers_user_blocked", account={"banned": True}, reason="frozen"),
        Cell("okx", S.CONNECTED, "market_making_without_deposit_address", profile="market-making",
             account={"deposit_addresses": {}}, codes=frozenset({"missing_deposit_address"})),
        # -- Bybit -------------------------------------------------------------------------------------
        Cell("bybit", S.CONNECTED, "no_ip_bound_created_10_days_ago", key={**NO_WHITELIST, "created_at": "-10d"},
             expires=timedelta(days=80), expires_in_days=80, codes=frozenset({"no_ip_restriction"})),
        Cell("bybit", S.EXPIRES_SOON, "no_ip_bound_created_85_days_ago", key={**NO_WHITELIST, "created_at": "-85d"},
             reason="key", expires=timedelta(days=5), expires_in_days=5, codes=frozenset({"expires_soon"})),
        Cell("bybit", S.EXPIRED, "no_ip_bound_created_95_days_ago", key={**NO_WHITELIST, "created_at": "-95d"},
             codes=frozenset({"expired"})),
        Cell("bybit", S.EXPIRED, "expires_at_passed", key={"expires_at": "-2d"}, codes=frozenset({"expired"})),
        Cell("bybit", S.IP_NOT_ALLOWED, "whitelist_has_only_second_egress", key=only_second_egress,
             codes=frozenset({"ip_not_allowed"})),
        Cell("bybit", S.ACCOUNT_RESTRICTED, "banned", account={"banned": True}, reason="banned"),
        Cell("bybit", S.INVALID_KEY, "testnet_key_on_mainnet", key={"environment": "testnet"},
             reason="wrong_environment", codes=frozenset({"wrong_environment"})),
        Cell("bybit", S.INACTIVE_FUTURES, "futures_permission_missing", reason="permission_missing", profile=FUTURES),
        # -- KuCoin ------------------------------------------------------------------------------------
        Cell("kucoin", S.CONNECTED, "passphrase_sent_in_clear_v1", key={"key_version": 1}),
        Cell("kucoin", S.CONNECTED, "no_whitelist", key=NO_WHITELIST, codes=frozenset({"no_ip_restriction"})),
        Cell("kucoin", S.PASSPHRASE_INVALID, "passphrase_of_another_key", wrong_passphrase=True,
             codes=frozenset({"passphrase_invalid"})),
        Cell("kucoin", S.INVALID_KEY, "past_expiry", key={"expires_at": "-1d"}, reason="unknown"),
        Cell("kucoin", S.ACCOUNT_RESTRICTED, "banned", account={"banned": True}, reason="banned"),
    ]  # fmt: skip
    return out


def _old_key(exchange: str) -> Cell:
    if exchange == "okx":  # account/config tells no creation time: the age cannot be judged
        return Cell(exchange, S.CONNECTED, "old_key", key={"created_at": "-200d"},
                    absent=frozenset({"key_rotation_age", "ambiguous_refusal"}))  # fmt: skip
    return Cell(
        exchange, S.CONNECTED, "old_key", key={"created_at": "-200d"}, codes=frozenset({"key_rotation_age"})
    )


def _deleted(exchange: str) -> Cell:
    if exchange == "binance":  # -2015: unknown key or IP block, told apart by egress (cells below)
        return Cell(exchange, S.INVALID_KEY, "deleted", key={"deleted": True}, reason="unknown",
                    codes=frozenset({"ambiguous_refusal"}), absent=frozenset(),
                    details={"likely": "invalid_key", "candidates": ["ip_not_allowed"]})  # fmt: skip
    return Cell(exchange, S.INVALID_KEY, "deleted", key={"deleted": True}, reason="unknown",
                codes=frozenset({"invalid_key"}))  # fmt: skip


def _with_permissions(cell: Cell, *tables: Mapping[str, list[str]]) -> Cell:
    """The shared cells' permissions, in each exchange's own vocabulary."""
    read_only, withdraw, with_futures = tables
    table = {
        S.INCORRECT_PERMISSIONS: read_only,
        S.WITHDRAWAL_ENABLED: withdraw,
        S.INACTIVE_FUTURES: with_futures,
    }.get(cell.status)
    if table is None:
        return cell
    return replace(cell, key={**cell.key, "permissions": table[cell.exchange]})


CELLS = cells()


# -- scenario -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Creds:
    """What the client sends for one cell, and the account it must find."""

    api_key: str
    secret: str
    passphrase: str | None
    key_version: int
    account_id: str


_ACCOUNT_PREFIX = {"binance": "3549", "okx": "6040123456", "bybit": "2", "kucoin": "1651"}
_ACCOUNT_DIGITS = {"binance": 9, "okx": 18, "bybit": 8, "kucoin": 9}


def _account_id(exchange: str, n: int) -> str:
    prefix = _ACCOUNT_PREFIX[exchange]
    return prefix + str(n).zfill(_ACCOUNT_DIGITS[exchange] - len(prefix))


def _needs_passphrase(exchange: str) -> bool:
    return exchange in {"okx", "kucoin"}


# The keys the input cases garble start with the characters those cases replace.
INPUT_KEY_PREFIX = {"binance": "AceIl0", "bybit": "AceIl0", "okx": "ace0", "kucoin": "ace0"}


def key_spec(
    exchange: str, new_api_key: Callable[..., str], fields: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """A scenario key of `exchange` (healthy unless `fields` say otherwise) with canary secrets."""
    spec: dict[str, Any] = {
        "api_key": new_api_key(exchange, prefix),
        "secret": canary.secret(exchange),
        **HEALTHY[exchange],
        **fields,
    }
    if _needs_passphrase(exchange):
        spec["passphrase"] = canary.passphrase(exchange)
    return spec


def _creds(exchange: str, spec: Mapping[str, Any], account_id: str, cell: Cell | None = None) -> Creds:
    secret = canary.secret(exchange) if cell is not None and cell.wrong_secret else spec["secret"]
    passphrase = spec.get("passphrase")
    if cell is not None and cell.wrong_passphrase:
        passphrase = canary.passphrase(exchange)
    return Creds(spec["api_key"], secret, passphrase, spec.get("key_version", 2), account_id)


def matrix_scenario(new_api_key: Callable[..., str]) -> tuple[dict[str, Any], dict[str, Creds]]:
    exchanges: dict[str, Any] = {
        ex: {"environments": ENVIRONMENTS[ex], "limits": dict(LIMITS.get(ex, {})), "accounts": []}
        for ex in EXCHANGES
    }
    creds: dict[str, Creds] = {}
    for n, cell in enumerate([*CELLS, *(Cell(ex, S.CONNECTED, "input") for ex in EXCHANGES)], 1):
        prefix = INPUT_KEY_PREFIX[cell.exchange] if cell.name == "input" else ""
        spec = key_spec(cell.exchange, new_api_key, {"label": cell.id, **cell.key}, prefix)
        account = {
            "id": _account_id(cell.exchange, n),
            "deposit_addresses": dict(ADDRESSES),
            "balances": {"USDT": "100"},
            **cell.account,
            "keys": [spec],
        }
        exchanges[cell.exchange]["accounts"].append(account)
        creds[cell.id] = _creds(cell.exchange, spec, account["id"], cell)
    return {"seed": 3, "exchanges": exchanges}, creds


@dataclass
class Matrix:
    cluster: SimCluster
    engines: dict[tuple[str, ...], DiagnosisEngine]
    creds: dict[str, Creds]
    loaded_at: datetime

    def options(self, exchange: str, *, profile: str = "trading", egress: tuple[str, ...] = TWO,
                environment: str = "mainnet") -> CheckOptions:  # fmt: skip
        served = [ep for ep in self.cluster.endpoints if ep.exchange == exchange]
        return CheckOptions(
            profile=get_profile(profile),
            environment=environment,
            base_url=self.cluster.url(exchange, environment),
            other_environments={ep.environment: ep.url for ep in served if ep.environment != environment},
            egress_ips=egress,
        )

    async def check(self, exchange: str, creds: Creds, options: CheckOptions, *,
                    api_key: str | None = None, secret: str | None = None,
                    passphrase: str | None = None) -> Diagnosis:  # fmt: skip
        engine = self.engines[options.egress_ips]
        diagnosis = await engine.diagnose(
            exchange,
            creds.api_key if api_key is None else api_key,
            creds.secret if secret is None else secret,
            creds.passphrase if passphrase is None else passphrase,
            options,
            key_version=creds.key_version,
        )
        text = json.dumps(diagnosis.to_json(), ensure_ascii=False) + repr(diagnosis) + str(diagnosis.findings)
        canary.assert_no_leak(text, f"the diagnosis of {exchange}")
        return diagnosis


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def matrix(new_api_key: Callable[..., str]) -> AsyncIterator[Matrix]:
    loaded_at = datetime.now(UTC)
    data, creds = matrix_scenario(new_api_key)
    async with (
        SimCluster(parse_scenario(data, now=loaded_at)) as cluster,
        Transport(egress_ips=TWO) as two,
        Transport(egress_ips=ONE) as one,
    ):
        yield Matrix(cluster, {TWO: DiagnosisEngine(two), ONE: DiagnosisEngine(one)}, creds, loaded_at)


# -- the cells ----------------------------------------------------------------------------------------


def assert_cell(d: Diagnosis, cell: Cell, creds: Creds, loaded_at: datetime) -> None:
    codes = {f.code for f in d.findings}
    shown = f"{d.status.value} (reason {d.reason}) with findings {sorted(codes)}: {d.summary}"
    assert d.status is cell.status, f"{cell.id}: expected {cell.status.value}, got {shown}"
    assert d.severity.value == SEVERITY[cell.status], shown
    if cell.reason is not None:
        assert d.reason == cell.reason, shown
    assert cell.codes <= codes, f"{cell.id}: missing findings {sorted(cell.codes - codes)}; got {shown}"
    assert not cell.absent & codes, (
        f"{cell.id}: unexpected findings {sorted(cell.absent & codes)}; got {shown}"
    )
    assert {p.value for p in d.missing_permissions} == set(cell.missing), shown
    assert d.expires_in_days == cell.expires_in_days, shown
    if cell.expires is None:
        assert d.expires_at is None, shown
    else:
        assert d.expires_at is not None, shown
        assert abs(d.expires_at - (loaded_at + cell.expires)) < timedelta(seconds=2), shown
    assert cell.granted <= {p.value for p in d.permissions}, shown
    if cell.status in WORKING or d.account_id is not None:
        assert d.account_id == creds.account_id, shown
    headline = (
        next(f for f in d.findings if f.status is cell.status) if cell.status is not S.CONNECTED else None
    )
    for name, value in cell.details.items():
        assert headline is not None
        got = headline.details.get(name)
        if isinstance(value, list):
            assert isinstance(got, list) and set(value) <= set(got), f"{cell.id}: details.{name} = {got!r}"
        else:
            assert got == value, f"{cell.id}: details.{name} = {got!r}"
    for f in d.findings:  # every finding a person reads says something and, where it is an error, what to do
        assert f.message.strip(), f.code
        if f.status is not None and f.status is not S.CONNECTED:
            assert f.remedy, f"{cell.id}: {f.code} has no fix"
    assert d.summary and "Traceback" not in d.summary
    assert d.checked_at is not None and d.latency_ms is not None and d.latency_ms > 0


# Cells that fail because of a bug in code this file does not own: strict, so the fix shows as XPASS.
KNOWN_BUGS: Mapping[str, str] = {}  # known bugs as strict xfails: empty since the fixes landed


def _params(items: list[Any]) -> list[Any]:
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[c.id])])
        if c.id in KNOWN_BUGS
        else pytest.param(c, id=c.id)
        for c in items
    ]


@module_loop
@pytest.mark.parametrize("cell", _params(CELLS))
async def test_cell(matrix: Matrix, cell: Cell) -> None:
    options = matrix.options(
        cell.exchange, profile=cell.profile, egress=cell.egress, environment=cell.checked_in
    )
    creds = matrix.creds[cell.id]
    d = await matrix.check(cell.exchange, creds, options)
    assert_cell(d, cell, creds, matrix.loaded_at)
    assert d.environment == cell.checked_in
    if "wrong_environment" in cell.codes:
        found = next(f for f in d.findings if f.code == "wrong_environment")
        key_env = cell.key.get("environment", "mainnet")
        assert found.details.get("found_in") == key_env, found.details
        assert found.details.get("checked_in") == cell.checked_in, found.details


def test_every_status_is_covered() -> None:
    """Each (exchange, status) has a cell or a reason it cannot occur, never both."""
    covered = {(c.exchange, c.status) for c in CELLS} | {(c.exchange, c.status) for c in LIVE_CELLS}
    for ex in EXCHANGES:
        for status in Status:
            has_cell, cannot = (ex, status) in covered, (ex, status) in CANNOT_OCCUR
            assert has_cell != cannot, f"{ex}/{status.value}: " + (
                "both a cell and a reason it cannot occur" if has_cell else "neither a cell nor a reason"
            )
    reasons = {c.reason for c in [*CELLS, *LIVE_CELLS] if c.status is S.ACCOUNT_RESTRICTED}
    assert {"frozen", "banned", "api_disabled", "kyc_required", "region_restricted"} <= reasons


# -- input cleaning through the engine ----------------------------------------------------------------


Transform = Callable[[Creds], tuple[str, str, str | None]]


@dataclass(frozen=True)
class InputCase:
    exchange: str
    name: str
    transform: Transform
    status: Status
    codes: frozenset[str]
    sent: bool = True  # False: cleaning refused the input, nothing went to the exchange

    @property
    def id(self) -> str:
        return f"{self.exchange}/{self.name}"


def _swap_first(value: str, replacements: Mapping[str, str]) -> str:
    """`value` with its first character that has a replacement replaced (each key must have one)."""
    for i, ch in enumerate(value):
        if ch in replacements:
            return value[:i] + replacements[ch] + value[i + 1 :]
    raise AssertionError(f"no character of {sorted(replacements)} to replace")


CYRILLIC = {"a": "а", "e": "е", "c": "с", "A": "А", "E": "Е", "C": "С", "o": "о", "p": "р", "x": "х"}
AMBIGUOUS = {"l": "ӏ", "I": "ӏ"}  # Cyrillic palochka: a lowercase l or a capital I
FULL_WIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}
ZWSP, NBSP = "\u200b", "\u00a0"
ok, sm, ik, pi = S.CONNECTED, S.SECRET_MISMATCH, S.INVALID_KEY, S.PASSPHRASE_INVALID


def _case(
    exchange: str, name: str, transform: Transform, status: Status, *codes: str, sent: bool = True
) -> InputCase:
    return InputCase(exchange, name, transform, status, frozenset(codes), sent)


INPUT_CASES = [
    _case("binance", "trailing_space_in_key", lambda c: (c.api_key + " ", c.secret, None), ok, "input_whitespace_removed"),
    _case("binance", "zero_width_space_in_secret", lambda c: (c.api_key, c.secret[:20] + ZWSP + c.secret[20:], None), ok,
          "input_invisible_removed"),
    _case("binance", "line_break_inside_secret", lambda c: (c.api_key, c.secret[:32] + "\n" + c.secret[32:], None), ok,
          "input_whitespace_removed"),
    _case("binance", "cyrillic_letter_in_key", lambda c: (_swap_first(c.api_key, CYRILLIC), c.secret, None), ok,
          "input_translated_characters"),
    _case("binance", "look_alike_of_two_letters_in_key", lambda c: (_swap_first(c.api_key, AMBIGUOUS), c.secret, None),
          ik, "input_translated_characters", sent=False),
    _case("binance", "passphrase_given", lambda c: (c.api_key, c.secret, canary.passphrase("binance")), ok,
          "input_passphrase_not_needed"),
    _case("binance", "key_equals_secret", lambda c: (c.secret, c.secret, None), ik, "input_key_equals_secret", sent=False),
    # Binance's key and secret share one format: a swap cannot be seen before Binance refuses it.
    _case("binance", "swapped_key_and_secret_undetectable", lambda c: (c.secret, c.api_key, None), ik, "ambiguous_refusal"),
    _case("okx", "nbsp_after_secret", lambda c: (c.api_key, c.secret + NBSP, c.passphrase), ok, "input_whitespace_removed"),
    _case("okx", "swapped_key_and_secret", lambda c: (c.secret, c.api_key, c.passphrase), ok, "input_key_secret_swapped"),
    _case("okx", "passphrase_and_secret_swapped", lambda c: (c.api_key, c.passphrase or "", c.secret), ok,
          "input_passphrase_in_wrong_field"),
    _case("okx", "secret_as_passphrase", lambda c: (c.api_key, c.secret, c.secret), pi,
          "input_passphrase_in_wrong_field", sent=False),
    _case("okx", "passphrase_missing", lambda c: (c.api_key, c.secret, None), pi, "input_passphrase_missing", sent=False),
    _case("okx", "typographic_quotes_around_passphrase", lambda c: (c.api_key, c.secret, f"“{c.passphrase}”"), ok,
          "input_quotes_removed"),
    _case("okx", "full_width_digit_in_key", lambda c: (_swap_first(c.api_key, FULL_WIDTH), c.secret, c.passphrase), ok,
          "input_translated_characters"),
    _case("bybit", "quotes_around_key", lambda c: (f'"{c.api_key}"', c.secret, None), ok, "input_quotes_removed"),
    _case("bybit", "swapped_key_and_secret", lambda c: (c.secret, c.api_key, None), ok, "input_key_secret_swapped"),
    _case("bybit", "secret_cut_short", lambda c: (c.api_key, c.secret[:-1], None), sm, "input_secret_format", sent=False),
    _case("bybit", "binance_key_pasted", lambda c: (canary.binance_secret(), c.secret, None), ik, "input_key_format",
          sent=False),
    _case("kucoin", "cyrillic_letter_in_secret", lambda c: (c.api_key, _swap_first(c.secret, CYRILLIC), c.passphrase), ok,
          "input_translated_characters"),
    _case("kucoin", "swapped_key_and_secret", lambda c: (c.secret, c.api_key, c.passphrase), ok, "input_key_secret_swapped"),
    _case("kucoin", "passphrase_missing", lambda c: (c.api_key, c.secret, ""), pi, "input_passphrase_missing", sent=False),
    _case("kucoin", "tab_before_passphrase", lambda c: (c.api_key, c.secret, "\t" + (c.passphrase or "")), ok,
          "input_whitespace_removed"),
]  # fmt: skip


@module_loop
@pytest.mark.parametrize("case", _params(INPUT_CASES))
async def test_input_cleaning(matrix: Matrix, case: InputCase) -> None:
    creds = matrix.creds[f"{case.exchange}/connected/input"]
    api_key, secret, passphrase = case.transform(creds)
    d = await matrix.check(
        case.exchange,
        creds,
        matrix.options(case.exchange),
        api_key=api_key,
        secret=secret,
        passphrase=passphrase or "",
    )
    codes = {f.code for f in d.findings}
    shown = f"{d.status.value} with findings {sorted(codes)}: {d.summary}"
    assert d.status is case.status, f"{case.id}: {shown}"
    assert case.codes <= codes, f"{case.id}: {shown}"
    cleaning = [f for f in d.findings if f.code.startswith("input_")]
    for f in cleaning:  # the cleaning findings name fields and positions, never characters of a secret
        assert f.details.get("field") in {None, "api_key", "secret", "passphrase"}, f.details
    if case.sent:
        # What was cleaned is what the exchange accepted: the account behind the key answered.
        assert d.latency_ms is not None and d.latency_ms > 0
        if case.status is S.CONNECTED:
            assert d.account_id == creds.account_id, shown
    else:
        assert d.latency_ms == 0.0 and d.account_id is None, f"{case.id}: the input was sent anyway: {shown}"


# -- exchange-wide conditions: the live cluster ------------------------------------------------------


@dataclass(frozen=True)
class LiveCell(Cell):
    """A condition of the whole exchange, set through the admin endpoint for one check."""

    admin: tuple[tuple[str, str, Any], ...] = ()  # (method, path under /admin/{exchange}, body)
    which: str = "healthy"  # the live key checked: healthy or banned
    short_timeout: bool = False


_DOWN = "The exchange could not answer"  # never "invalid": a temporary issue keeps the last known state


def live_cells() -> list[LiveCell]:
    t = S.TEMPORARY_ISSUE
    out: list[LiveCell] = []
    for ex in EXCHANGES:
        out += [
            LiveCell(ex, t, "maintenance", reason="maintenance", admin=(("POST", "maintenance", {"active": True}),)),
            LiveCell(ex, t, "server_errors", reason="server_error", admin=(("PUT", "faults", {"error_rate": 1.0}),)),
            LiveCell(ex, t, "connections_reset", reason="network", admin=(("PUT", "faults", {"reset_rate": 1.0}),)),
            LiveCell(ex, t, "timeouts", reason="timeout", short_timeout=True,
                     admin=(("PUT", "faults", {"timeout_rate": 1.0, "timeout_s": 3}),)),
        ]  # fmt: skip
    out += [
        LiveCell("binance", t, "rate_limited", reason="rate_limited",
                 admin=(("PATCH", "limits", {"api_ip_weight_per_minute": 0, "sapi_ip_weight_per_minute": 0}),)),
        LiveCell("binance", t, "ip_banned", reason="ip_banned",
                 admin=(("PATCH", "settings", {"ban_after_rejected_requests": 0}),
                        ("PATCH", "limits", {"api_ip_weight_per_minute": 0, "sapi_ip_weight_per_minute": 0}))),
        LiveCell("okx", t, "rate_limited", reason="rate_limited",
                 admin=(("PATCH", "limits", {"account_config_requests": 0, "account_balance_requests": 0}),)),
        LiveCell("bybit", t, "rate_limited", reason="rate_limited", admin=(("PATCH", "limits", {"uid_query_api": 0}),)),
        LiveCell("bybit", t, "ip_banned", reason="ip_banned", admin=(("PATCH", "limits", {"ip_requests": 0}),)),
        LiveCell("kucoin", t, "rate_limited", reason="rate_limited",
                 admin=(("PATCH", "limits", {"management_quota": 0, "spot_quota": 0}),)),
        # Settings for what the reference leaves unverified: the other plausible answer.
        LiveCell("binance", S.ACCOUNT_RESTRICTED, "banned_answers_not_authorized", which="banned", reason="banned",
                 admin=(("PATCH", "settings", {"banned_answer": "not_authorized"}),)),
        LiveCell("okx", S.ACCOUNT_RESTRICTED, "banned_answers_account_status_invalid", which="banned", reason="banned",
                 admin=(("PATCH", "settings", {"banned_code": "50012"}),)),
    ]  # fmt: skip
    return out


LIVE_CELLS = live_cells()
_UNDO = {"faults": ("DELETE", None), "maintenance": ("POST", {"active": False})}


@dataclass
class Live:
    cluster: SimCluster
    engine: DiagnosisEngine
    impatient: DiagnosisEngine  # gives up after a fraction of a second
    creds: dict[tuple[str, str], Creds]
    admin: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> None:
        async with self.admin.request(
            method, f"{self.cluster.admin_url}/admin/{path}", json=body
        ) as response:
            assert response.status == 200, f"admin {method} {path}: {response.status} {await response.text()}"

    async def restore(self, exchange: str, changes: tuple[tuple[str, str, Any], ...]) -> None:
        for _, what, body in changes:
            if what in _UNDO:
                method, undo = _UNDO[what]
                await self.call(method, f"{exchange}/{what}", undo)
            else:  # settings and limits: null restores the default
                await self.call("PATCH", f"{exchange}/{what}", dict.fromkeys(body))
        await self.call("POST", f"{exchange}/reset-limits")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(new_api_key: Callable[..., str]) -> AsyncIterator[Live]:
    exchanges: dict[str, Any] = {}
    creds: dict[tuple[str, str], Creds] = {}
    for ex in EXCHANGES:
        accounts: list[dict[str, Any]] = []
        for n, (which, flags) in enumerate((("healthy", {}), ("banned", {"banned": True})), 1):
            spec = key_spec(ex, new_api_key, {"label": which})
            accounts.append({"id": _account_id(ex, 900 + n), "keys": [spec], **flags})
            creds[(ex, which)] = _creds(ex, spec, accounts[-1]["id"])
        exchanges[ex] = {"limits": dict(LIMITS.get(ex, {})), "accounts": accounts}
    scenario = parse_scenario({"seed": 5, "exchanges": exchanges})
    short = Timeouts(connect=1.0, total=0.4)
    async with (
        SimCluster(scenario) as cluster,
        Transport(egress_ips=TWO) as transport,
        Transport(egress_ips=TWO, timeouts=short) as impatient,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {cluster.admin_token}"}) as admin,
    ):
        yield Live(cluster, DiagnosisEngine(transport), DiagnosisEngine(impatient), creds, admin)


@module_loop
@pytest.mark.parametrize("cell", _params(LIVE_CELLS))
async def test_exchange_wide(live: Live, cell: LiveCell) -> None:
    creds = live.creds[(cell.exchange, cell.which)]
    options = CheckOptions(
        profile=get_profile(cell.profile), base_url=live.cluster.url(cell.exchange), egress_ips=TWO
    )
    engine = live.impatient if cell.short_timeout else live.engine

    async def check(engine: DiagnosisEngine) -> Diagnosis:
        return await engine.diagnose(
            cell.exchange,
            creds.api_key,
            creds.secret,
            creds.passphrase,
            options,
            key_version=creds.key_version,
        )

    before = await check(live.engine)
    if cell.which == "healthy":
        assert before.status is S.CONNECTED, (
            f"{cell.id}: the live key is {before.status.value}: {before.summary}"
        )
    for method, what, body in cell.admin:
        await live.call(method, f"{cell.exchange}/{what}", body)
    try:
        d = await check(engine)
    finally:
        await live.restore(cell.exchange, cell.admin)
    canary.assert_no_leak(json.dumps(d.to_json()) + repr(d), f"the diagnosis of {cell.id}")
    codes = sorted(f.code for f in d.findings)
    shown = f"{d.status.value} (reason {d.reason}) with findings {codes}: {d.summary}"
    assert d.status is cell.status, f"{cell.id}: {shown}"
    assert d.severity.value == SEVERITY[cell.status]
    assert d.reason == cell.reason, f"{cell.id}: {shown}"
    if cell.status is S.TEMPORARY_ISSUE:
        # Nothing is concluded about the key: no other status, no permissions, nothing missing.
        assert {f.status for f in d.findings} <= {S.TEMPORARY_ISSUE, None}, shown
        assert not d.missing_permissions and not d.permissions, shown
    # Restored: the key checks as before, so no cell leaks its condition into the next one.
    after = await check(live.engine)
    assert after.status is before.status, f"{cell.id}: after restoring, {after.status.value}: {after.summary}"
