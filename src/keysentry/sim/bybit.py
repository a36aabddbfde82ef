"""Bybit v5 simulator: the endpoints a key check needs, on api.bybit.com and its sibling sites.

Written from shared/reference/exchange-api.md section 3 (Bybit's v5 docs, observed bodies). The
signature verifier below is our own reading of the documented recipe, never a client's signer.

A private request is checked in this order; the first failure answers:

    per-IP budget (HTTP 403 "access too frequent")
    -> auth headers present (10007) -> timestamp inside recv_window (10002)
    -> key known in this environment and activated (10003) -> signature (10004)
    -> key expiry (33004) -> IP whitelist (10010)
    -> account flags: banned 10008, frozen 10027, API disabled 10005, region 10009, KYC 10024
    -> per-UID endpoint budget (10006) -> endpoint permission (10005) -> futures opened
    -> request parameters (10001)

Errors use Bybit's envelope {"retCode","retMsg","result":{},"retExtInfo":{},"time"} at HTTP 200
(setting error_http_status). Every choice the reference marks (unverified) is a setting.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, ClassVar, Final

from aiohttp import web

from keysentry.sim.base import ExchangeSim, json_response
from keysentry.sim.ratelimit import FixedWindowCounter
from keysentry.sim.scenario import AccountSpec, ExchangeSpec, KeySpec, ScenarioError

API_KEY_FORMAT: Final = re.compile(r"[A-Za-z0-9]{18}")
SECRET_FORMAT: Final = re.compile(r"[A-Za-z0-9]{36}")
DEFAULT_RECV_WINDOW_MS: Final = 5000
# Doc timing rule: server_time - recv_window <= timestamp < server_time + 1000.
FUTURE_TOLERANCE_MS: Final = 1000
NO_EXPIRY: Final = "1970-01-01T00:00:00Z"


# -- signing (the documented recipe, section 3.2) ---------------------------------------------


def origin_string(timestamp: str, api_key: str, recv_window: str, payload: str) -> str:
    """GET signs the query string, POST the raw JSON body, after timestamp + key + recv_window."""
    return timestamp + api_key + recv_window + payload


def expected_signature(secret: str, origin: str) -> str:
    return hmac.new(secret.encode(), origin.encode(), hashlib.sha256).hexdigest()


def verify_signature(secret: str, origin: str, signature: str) -> bool:
    return hmac.compare_digest(expected_signature(secret, origin), signature)


# -- permissions: Bybit's "Group.Item" vocabulary, rendered by query-api ----------------------

# Every group of the documented query-api object, in the order Bybit renders them.
PERMISSION_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "ContractTrade": ("Order", "Position"),
    "Spot": ("SpotTrade",),
    "Wallet": ("AccountTransfer", "SubMemberTransfer", "Withdraw"),
    "Options": ("OptionsTrade",),
    "Derivatives": ("DerivativesTrade",),
    "CopyTrading": ("CopyTrading",),
    "BlockTrade": ("BlockTrade",),
    "Exchange": ("ExchangeHistory",),
    "NFT": ("NFTQueryProductList",),
    "Affiliate": ("Affiliate",),
    "Earn": ("Earn",),
    "FiatP2P": ("FiatP2POrder", "Advertising"),
    "FiatConvertBroker": ("FiatConvertBrokerOrder",),
    "FiatGlobalPay": (),  # shown in the doc example, items never documented
    "FiatBitPay": ("FaitPayOrder",),  # sic, Bybit's spelling
    "BitCard": ("BitCard",),
    "ByXPost": ("ByXPost",),
}
READ_ONLY: Final = "ReadOnly"  # pseudo-permission: renders readOnly 1
PERMISSIONS: Final = frozenset(
    {f"{group}.{item}" for group, items in PERMISSION_GROUPS.items() for item in items} | {READ_ONLY}
)

# Every Bybit key can read; writing needs one of these items and no ReadOnly.
_CONTRACT_TRADE = frozenset({"ContractTrade.Order", "Derivatives.DerivativesTrade"})
TRADE_PERMISSION: Final[Mapping[str, frozenset[str]]] = {
    "spot": frozenset({"Spot.SpotTrade"}),
    "linear": _CONTRACT_TRADE,
    "inverse": _CONTRACT_TRADE,
    "option": frozenset({"Options.OptionsTrade"}),
}
# Reading positions is the futures probe: it needs a contract permission (no ReadOnly restriction).
POSITION_PERMISSION: Final[Mapping[str, frozenset[str]]] = {
    "linear": _CONTRACT_TRADE | {"ContractTrade.Position"},
    "inverse": _CONTRACT_TRADE | {"ContractTrade.Position"},
    "option": frozenset({"Options.OptionsTrade"}),
}
FUTURES_CATEGORIES: Final = frozenset({"linear", "inverse"})
CATEGORIES: Final = frozenset({"spot", "linear", "inverse", "option"})


def render_permissions(granted: Iterable[str]) -> dict[str, list[str]]:
    have = set(granted)
    return {
        group: [item for item in items if f"{group}.{item}" in have]
        for group, items in PERMISSION_GROUPS.items()
    }


# -- errors: cause -> (retCode, HTTP status), both possibly chosen by a setting -----------------


class Cause(StrEnum):
    MISSING_AUTH = "missing_auth"
    BAD_TIMESTAMP = "bad_timestamp"
    INVALID_KEY = "invalid_key"
    BAD_SIGN = "bad_sign"
    EXPIRED = "expired"
    IP_NOT_ALLOWED = "ip_not_allowed"
    BANNED = "banned"
    FROZEN = "frozen"
    API_DISABLED = "api_disabled"
    REGION_RESTRICTED = "region_restricted"
    KYC_REQUIRED = "kyc_required"
    UID_RATE_LIMIT = "uid_rate_limit"
    IP_RATE_LIMIT = "ip_rate_limit"
    NO_PERMISSION = "no_permission"
    FUTURES_NOT_OPENED = "futures_not_opened"
    BAD_PARAM = "bad_param"
    ROUTE_NOT_FOUND = "route_not_found"
    MAINTENANCE = "maintenance"
    SERVER_ERROR = "server_error"


@dataclass(frozen=True, slots=True)
class ErrorRule:
    ret_code: int | str  # the retCode, or the name of the setting that chooses it
    http_status: int | str = "error_http_status"  # likewise


ERRORS: Final[Mapping[Cause, ErrorRule]] = {
    Cause.MISSING_AUTH: ErrorRule(10007, "missing_auth_http_status"),
    Cause.BAD_TIMESTAMP: ErrorRule(10002),
    Cause.INVALID_KEY: ErrorRule(10003),
    Cause.BAD_SIGN: ErrorRule(10004),
    Cause.EXPIRED: ErrorRule("expired_key_ret_code"),
    Cause.IP_NOT_ALLOWED: ErrorRule(10010),
    Cause.BANNED: ErrorRule(10008),
    Cause.FROZEN: ErrorRule("frozen_ret_code"),
    Cause.API_DISABLED: ErrorRule("api_disabled_ret_code"),
    Cause.REGION_RESTRICTED: ErrorRule(10009),
    Cause.KYC_REQUIRED: ErrorRule("kyc_required_ret_code"),
    Cause.UID_RATE_LIMIT: ErrorRule(10006),
    Cause.IP_RATE_LIMIT: ErrorRule(10018),  # only with ip_limit_response: ret_code_10018
    Cause.NO_PERMISSION: ErrorRule(10005),
    Cause.FUTURES_NOT_OPENED: ErrorRule("futures_not_opened_ret_code"),
    Cause.BAD_PARAM: ErrorRule(10001),
    Cause.ROUTE_NOT_FOUND: ErrorRule(10017, "route_not_found_http_status"),
    Cause.MAINTENANCE: ErrorRule("maintenance_ret_code", "maintenance_http_status"),
    Cause.SERVER_ERROR: ErrorRule(10016, "server_error_http_status"),
}

RET_MSG: Final[Mapping[int, str]] = {
    10001: "Request parameter error.",
    10002: (
        "invalid request, please check your server timestamp or recv_window param. "
        "req_timestamp[{req_timestamp}],server_timestamp[{server_timestamp}],recv_window[{recv_window}]"
    ),
    10003: "API key is invalid.",
    10005: "Permission denied, please check your API key permissions.",
    10006: "Too many visits. Exceeded the API Rate Limit.",
    10007: "User authentication failed.",
    10008: "Common banned, please check your account mode",
    10009: (
        "Service Restricted: Access is currently unavailable for your region. "
        "Please contact our support team for further assistance"
    ),
    10010: "Unmatched IP, please check your API key's bound IP addresses.",
    10016: "Server error.",
    10017: "Route not found.",
    10018: "Exceeded the IP Rate Limit.",
    10024: "Compliance rules triggered",
    10027: "Transactions are banned.",
    10028: "The API can only be accessed by unified account users.",
    33004: "Your api key has expired",
    -2015: "Invalid API-key, IP, or permissions for action.",
}
# Both texts were observed for 10004; the newer one (2026) is the default.
SIGN_ERROR_TEXTS: Final[Mapping[str, str]] = {
    "current": "Error sign, please check your signature generation algorithm: origin_string[{origin}]",
    "legacy": "error sign! origin_string[{origin}]",
}
IP_BAN_BODY: Final = "access too frequent"

# Account flags in the order they are checked (all apply to every private endpoint).
ACCOUNT_RESTRICTIONS: Final[tuple[tuple[str, Cause], ...]] = (
    ("banned", Cause.BANNED),
    ("frozen", Cause.FROZEN),
    ("api_disabled", Cause.API_DISABLED),
    ("region_restricted", Cause.REGION_RESTRICTED),
    ("kyc_required", Cause.KYC_REQUIRED),
)

_CODE_SETTINGS: Final = frozenset(r.ret_code for r in ERRORS.values() if isinstance(r.ret_code, str))
_CHOICE_SETTINGS: Final[Mapping[str, frozenset[str]]] = {
    "sign_error_message": frozenset(SIGN_ERROR_TEXTS),
    "ip_limit_response": frozenset({"http_403", "ret_code_10018"}),
}

# -- account rendering ----------------------------------------------------------------------

KYC_LEVELS: Final[Mapping[int, str]] = {0: "LEVEL_DEFAULT", 1: "LEVEL_1", 2: "LEVEL_2", 3: "LEVEL_2"}
# Scenario regions are ISO 3166 alpha-2; query-api's kycRegion is alpha-3.
ISO3: Final[Mapping[str, str]] = {
    "AE": "ARE", "AR": "ARG", "AU": "AUS", "BR": "BRA", "CA": "CAN", "CH": "CHE", "CN": "CHN",
    "DE": "DEU", "ES": "ESP", "FR": "FRA", "GB": "GBR", "GE": "GEO", "HK": "HKG", "ID": "IDN",
    "IN": "IND", "IT": "ITA", "JP": "JPN", "KR": "KOR", "KZ": "KAZ", "MY": "MYS", "NG": "NGA",
    "NL": "NLD", "PH": "PHL", "PL": "POL", "PT": "PRT", "SG": "SGP", "TH": "THA", "TR": "TUR",
    "UA": "UKR", "US": "USA", "VN": "VNM",
}  # fmt: skip
# Illustrative prices for usdValue; the simulator has no market.
USD_PRICES: Final[Mapping[str, Decimal]] = {
    "USDT": Decimal(1), "USDC": Decimal(1), "BTC": Decimal(60000), "ETH": Decimal(3000),
}  # fmt: skip
# coin -> (chain, chainType, contractAddress tail) as the deposit-address endpoint names them.
DEPOSIT_CHAINS: Final[Mapping[str, tuple[str, str, str]]] = {
    "BTC": ("BTC", "BTC", ""),
    "ETH": ("ETH", "Ethereum (ERC20)", ""),
    "USDT": ("ETH", "Ethereum (ERC20)", "831ec7"),
    "USDC": ("ETH", "Ethereum (ERC20)", "06eb48"),
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _uid(account: AccountSpec) -> int:
    return int(account.id) if account.id.isdigit() else zlib.crc32(account.id.encode())


def _positive(value: Any) -> bool:
    try:
        return Decimal(str(value)) > 0
    except (InvalidOperation, ValueError):
        return False


# -- routes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: whose key, and its parameters (query for GET, JSON body for POST)."""

    key: KeySpec
    account: AccountSpec
    params: Mapping[str, Any]
    body_ok: bool = True  # POST body parsed as a JSON object


PublicHandler = Callable[["BybitSim", web.Request], web.Response]
PrivateHandler = Callable[["BybitSim", web.Request, Caller], web.Response]


@dataclass(frozen=True, slots=True)
class PublicRoute:
    method: str
    path: str
    handler: PublicHandler


@dataclass(frozen=True, slots=True)
class PrivateRoute:
    method: str
    path: str
    handler: PrivateHandler
    limit: str  # the default_limits entry counting this endpoint per UID
    window: str = "uid_window_s"
    limit_by_category: Mapping[str, str] = field(default_factory=dict)


# -- the simulator ----------------------------------------------------------------------------


class BybitSim(ExchangeSim):
    name = "bybit"
    environments: ClassVar[Mapping[str, str]] = {
        "mainnet": "api.bybit.com (also api.bytick.com)",
        "testnet": "api-testnet.bybit.com",
        "demo": "api-demo.bybit.com (demo trading)",
        "eu": "api.bybit.eu (Bybit EU)",
        "nl": "api.bybit.nl (Bybit Netherlands)",
        "tr": "api.bybit.tr (Bybit Turkey)",
        "kz": "api.bybit.kz (Bybit Kazakhstan)",
        "ge": "api.bybitgeorgia.ge (Bybit Georgia)",
        "ae": "api.bybit.ae (Bybit UAE)",
        "id": "api.bybit.id (Bybit Indonesia)",
    }
    permissions: ClassVar[frozenset[str]] = PERMISSIONS
    default_settings: ClassVar[Mapping[str, Any]] = {
        "error_http_status": 200,
        "missing_auth_http_status": 401,
        "sign_error_message": "current",
        "expired_key_ret_code": 33004,
        "frozen_ret_code": 10027,
        "api_disabled_ret_code": 10005,
        "kyc_required_ret_code": 10024,
        "futures_not_opened_ret_code": 10005,
        "unbound_ips": ("*",),
        "unbound_key_validity_days": 90,
        "no_expiry_deadline_day": -2,
        "route_not_found_http_status": 404,
        "ip_limit_response": "http_403",
        "ip_ban_retry_after": False,
        "maintenance_http_status": 503,
        "maintenance_ret_code": 10016,
        "server_error_http_status": 500,
    }
    default_limits: ClassVar[Mapping[str, float]] = {
        "ip_requests": 600,
        "ip_window_s": 5,
        "ip_ban_s": 600,
        "uid_window_s": 1,
        "uid_query_api": 10,
        "uid_wallet_balance": 50,
        "uid_account_info": 50,
        "uid_execution_list": 50,
        "uid_position_list": 50,
        "uid_order_create": 10,
        "uid_order_create_spot": 20,
        "uid_deposit_address": 300,
        "uid_deposit_address_window_s": 60,
    }
    status_paths: ClassVar[frozenset[str]] = frozenset({"/v5/system/status", "/v5/market/time"})

    def __init__(self, spec: ExchangeSpec, environment: str, *, seed: int = 0) -> None:
        super().__init__(spec, environment, seed=seed)
        self._check_scenario()
        self._counters: dict[float, FixedWindowCounter] = {}
        self._ip_banned_until: dict[str, float] = {}

    def _check_scenario(self) -> None:
        where = f"exchanges.{self.name}"
        for name in _CODE_SETTINGS & set(self.spec.settings):
            if self.spec.settings[name] not in RET_MSG:
                raise ScenarioError(
                    f"{where}.settings.{name}: {self.spec.settings[name]!r} is not a retCode this "
                    f"simulator knows; use one of: {', '.join(map(str, sorted(RET_MSG)))}"
                )
        for name, choices in _CHOICE_SETTINGS.items():
            if self.setting(name) not in choices:
                raise ScenarioError(f"{where}.settings.{name}: use one of: {', '.join(sorted(choices))}")
        for account in self.spec.accounts:
            if not account.id.isdigit():
                raise ScenarioError(f"{where}: account id {account.id!r} must be a number (Bybit's UID)")
            for key in account.keys:
                label = key.label or key.api_key[:6]
                if not API_KEY_FORMAT.fullmatch(key.api_key):
                    raise ScenarioError(f"{where}: key {label!r}: a Bybit api_key is 18 letters or digits")
                for what, value in (("secret", key.secret), ("client_secret", key.client_secret)):
                    if value is not None and not SECRET_FORMAT.fullmatch(value):
                        raise ScenarioError(f"{where}: key {label!r}: a Bybit {what} is 36 letters or digits")

    # -- routes -------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        for pub in PUBLIC_ROUTES:
            app.router.add_route(pub.method, pub.path, self._public_endpoint(pub))
        for priv in PRIVATE_ROUTES:
            app.router.add_route(priv.method, priv.path, self._private_endpoint(priv))
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    def _public_endpoint(self, route: PublicRoute) -> Callable[[web.Request], Any]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            blocked = self._ip_gate(request)
            return blocked if blocked is not None else route.handler(self, request)

        return endpoint

    def _private_endpoint(self, route: PrivateRoute) -> Callable[[web.Request], Any]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            blocked = self._ip_gate(request)
            if blocked is not None:
                return blocked
            body = await request.text() if request.method == "POST" else ""
            caller = self._authenticate(request, body)
            if isinstance(caller, web.Response):
                return caller
            limited, headers = self._uid_budget(route, caller)
            response = limited if limited is not None else route.handler(self, request, caller)
            response.headers.update(headers)
            return response

        return endpoint

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        blocked = self._ip_gate(request)
        return blocked if blocked is not None else self.fail(Cause.ROUTE_NOT_FOUND)

    # -- envelopes ----------------------------------------------------------------------------

    def ok(self, result: Any, message: str = "OK") -> web.Response:
        body = {"retCode": 0, "retMsg": message, "result": result, "retExtInfo": {}, "time": self.now_ms()}
        return json_response(body)

    def ret_code(self, cause: Cause) -> int:
        rule = ERRORS[cause]
        code = self.setting(rule.ret_code) if isinstance(rule.ret_code, str) else rule.ret_code
        return int(code)

    def fail(self, cause: Cause, headers: Mapping[str, str] | None = None, **fmt: Any) -> web.Response:
        rule = ERRORS[cause]
        code = self.ret_code(cause)
        status = self.setting(rule.http_status) if isinstance(rule.http_status, str) else rule.http_status
        # .get: the admin endpoint may patch settings past the checks made at start.
        if code == 10004:
            template = SIGN_ERROR_TEXTS.get(self.setting("sign_error_message"), SIGN_ERROR_TEXTS["current"])
        else:
            template = RET_MSG.get(code, "")
        body = {
            "retCode": code,
            "retMsg": template.format(**fmt) if fmt else template,
            "result": {},
            "retExtInfo": {},
            "time": self.now_ms(),
        }
        return json_response(body, status=int(status), headers=headers)

    def maintenance_response(self, request: web.Request) -> web.StreamResponse:
        return self.fail(Cause.MAINTENANCE)

    def server_error_response(self, request: web.Request) -> web.StreamResponse:
        return self.fail(Cause.SERVER_ERROR)

    # -- rate limits ----------------------------------------------------------------------------

    def reset_limits(self) -> None:
        self._counters.clear()
        self._ip_banned_until.clear()

    def _counter(self, interval_s: float) -> FixedWindowCounter:
        # One counter per window length, so a scenario may change a window at run time.
        counter = self._counters.get(interval_s)
        if counter is None:
            counter = self._counters[interval_s] = FixedWindowCounter(interval_s)
        return counter

    def _ip_gate(self, request: web.Request) -> web.Response | None:
        """600 requests per 5 s per IP over every endpoint; past it the IP is banned for a while."""
        ip = self.peer_ip(request)
        now_s = self.now_ms() / 1000  # the exchange's clock: windows align with its seconds
        until = self._ip_banned_until.get(ip)
        if until is not None:
            if now_s < until:
                return self._ip_blocked(until - now_s)
            del self._ip_banned_until[ip]
        used = self._counter(self.limit("ip_window_s")).add(("ip", ip), 1, now_s)
        if used <= self.limit("ip_requests"):
            return None
        ban_s = self.limit("ip_ban_s")
        if ban_s > 0:
            self._ip_banned_until[ip] = now_s + ban_s
        return self._ip_blocked(ban_s)

    def _ip_blocked(self, wait_s: float) -> web.Response:
        headers = {"Retry-After": str(math.ceil(wait_s))} if self.setting("ip_ban_retry_after") else None
        if self.setting("ip_limit_response") == "ret_code_10018":
            return self.fail(Cause.IP_RATE_LIMIT, headers=headers)
        return web.Response(status=403, text=IP_BAN_BODY, headers=headers)

    def _uid_budget(self, route: PrivateRoute, caller: Caller) -> tuple[web.Response | None, dict[str, str]]:
        """Per-UID, per-endpoint requests per window, reported in X-Bapi-Limit* on every answer."""
        category = caller.params.get("category")
        limit_name = (
            route.limit_by_category.get(category, route.limit) if isinstance(category, str) else route.limit
        )
        limit = int(self.limit(limit_name))
        counter = self._counter(self.limit(route.window))
        now_ms = self.now_ms()
        used = counter.add((caller.account.id, limit_name), 1, now_ms / 1000)
        exceeded = used > limit
        # Doc: the reset timestamp is when the limit resets once exceeded, otherwise just "now".
        reset_ms = now_ms + math.ceil(counter.seconds_to_reset(now_ms / 1000) * 1000) if exceeded else now_ms
        headers = {
            "X-Bapi-Limit": str(limit),
            "X-Bapi-Limit-Status": str(max(0, limit - int(used))),
            "X-Bapi-Limit-Reset-Timestamp": str(reset_ms),
        }
        return (self.fail(Cause.UID_RATE_LIMIT) if exceeded else None), headers

    # -- authentication ---------------------------------------------------------------------------

    def key_expiry(self, key: KeySpec) -> datetime | None:
        """Doc: "No ip bound api key will be invalid after 90 days"; an explicit expiry wins."""
        if key.expires_at is not None:
            return key.expires_at
        if key.ip_whitelist:
            return None
        return key.created_at + timedelta(days=float(self.setting("unbound_key_validity_days")))

    def _authenticate(self, request: web.Request, body: str) -> Caller | web.Response:
        headers = request.headers
        api_key = headers.get("X-BAPI-API-KEY", "")
        ts_raw = headers.get("X-BAPI-TIMESTAMP", "")
        signature = headers.get("X-BAPI-SIGN", "")
        if not (api_key and ts_raw and signature):
            return self.fail(Cause.MISSING_AUTH)
        recv_raw = headers.get("X-BAPI-RECV-WINDOW", "")
        found = self.lookup(api_key) if API_KEY_FORMAT.fullmatch(api_key) else None

        # The per-key offset is a demo aid: that key alone sees a skewed exchange clock.
        server_ms = self.now_ms() + (found.key.clock_offset_ms if found else 0)
        try:
            timestamp = int(ts_raw)
            recv_window = int(recv_raw) if recv_raw else DEFAULT_RECV_WINDOW_MS
        except ValueError:
            timestamp, recv_window = -1, DEFAULT_RECV_WINDOW_MS
        if not server_ms - recv_window <= timestamp < server_ms + FUTURE_TOLERANCE_MS:
            return self.fail(
                Cause.BAD_TIMESTAMP,
                req_timestamp=ts_raw,
                server_timestamp=server_ms,
                recv_window=recv_raw or DEFAULT_RECV_WINDOW_MS,
            )
        # A key of another environment is unknown here, exactly like a deleted one.
        if found is None or found.other_environment or not found.key.enabled:
            return self.fail(Cause.INVALID_KEY)
        key, account = found.key, found.account

        payload = body if request.method == "POST" else request.rel_url.raw_query_string
        origin = origin_string(ts_raw, api_key, recv_raw, payload)
        if not verify_signature(key.secret, origin, signature):
            return self.fail(Cause.BAD_SIGN, origin=origin)
        expiry = self.key_expiry(key)
        if expiry is not None and expiry <= self.now():
            return self.fail(Cause.EXPIRED)
        if not key.allows_ip(self.peer_ip(request)):
            return self.fail(Cause.IP_NOT_ALLOWED)
        for flag, cause in ACCOUNT_RESTRICTIONS:
            if getattr(account, flag):
                return self.fail(cause)

        if request.method != "POST":
            return Caller(key, account, request.rel_url.query)
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return Caller(key, account, {}, body_ok=False)
        return Caller(key, account, params)

    def _may(self, key: KeySpec, needed: frozenset[str], *, write: bool) -> bool:
        if write and READ_ONLY in key.permissions:
            return False
        return not needed.isdisjoint(key.permissions)

    # -- public handlers ------------------------------------------------------------------------

    def server_time(self, request: web.Request) -> web.Response:
        now_ms = self.now_ms()
        result = {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}
        return self.ok(result)

    def system_status(self, request: web.Request) -> web.Response:
        now = self.now()
        wanted_id, wanted_state = request.query.get("id"), request.query.get("state")
        entries = []
        for i, window in enumerate(self.spec.maintenance):
            if window.end is not None and window.end <= now:
                state = "completed"
            else:
                state = "ongoing" if window.start <= now else "scheduled"
            entry_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bybit-maintenance/{i}/{_ms(window.start)}"))
            if wanted_id not in (None, entry_id) or wanted_state not in (None, state):
                continue
            entries.append(
                {
                    "id": entry_id,
                    "title": "System maintenance",
                    "state": state,
                    "begin": str(_ms(window.start)),
                    "end": str(_ms(window.end)) if window.end is not None else "0",  # 0: open-ended
                    "href": "",
                    "serviceTypes": [1, 2, 3, 4, 5],
                    "product": [1, 2, 3, 4],
                    "uidSuffix": [],
                    "maintainType": 1,
                    "env": 1,
                }
            )
        return self.ok({"list": entries}, message="")

    # -- private handlers -----------------------------------------------------------------------

    def query_api(self, request: web.Request, caller: Caller) -> web.Response:
        key, account = caller.key, caller.account
        expiry = self.key_expiry(key)
        if expiry is None:
            deadline_day = int(self.setting("no_expiry_deadline_day"))
        else:
            deadline_day = max(0, math.floor((expiry - self.now()).total_seconds() / 86400))
        uid = _uid(account)
        result = {
            "id": str(zlib.crc32(key.api_key.encode())),
            "note": key.label,
            "apiKey": key.api_key,
            "readOnly": 1 if READ_ONLY in key.permissions else 0,
            "secret": "",
            "permissions": render_permissions(key.permissions),
            "ips": list(key.ip_whitelist) or list(self.setting("unbound_ips")),
            "type": 1,
            "deadlineDay": deadline_day,
            "expiredAt": _iso(expiry) if expiry is not None else NO_EXPIRY,
            "createdAt": _iso(key.created_at),
            "unified": 0,
            "uta": 1,
            "userID": uid,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
            "rsaPublicKey": "",
            "isMaster": True,
            "parentUid": "0",
            "kycLevel": KYC_LEVELS.get(account.kyc_level, "LEVEL_2"),
            "kycRegion": ISO3.get(account.region.upper(), account.region.upper()),
            # Doc example shows "0" next to a small userID; the string form is for ids past int32.
            "userIDInt64": str(uid) if uid >= 2**31 else "0",
            "inviterIDInt64": "0",
            "affiliateIDInt64": "0",
        }
        return self.ok(result, message="")

    def account_info(self, request: web.Request, caller: Caller) -> web.Response:
        result = {
            "unifiedMarginStatus": 5,
            "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": str(_ms(caller.key.created_at)),
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
        }
        return self.ok(result, message="success")

    def wallet_balance(self, request: web.Request, caller: Caller) -> web.Response:
        if caller.params.get("accountType") != "UNIFIED":
            return self.fail(Cause.BAD_PARAM)
        wanted = {c.strip().upper() for c in str(caller.params.get("coin", "")).split(",") if c.strip()}
        coins, total = [], Decimal(0)
        for coin, amount_text in caller.account.balances.items():
            amount = Decimal(amount_text)
            if (wanted and coin not in wanted) or (not wanted and amount == 0):
                continue
            usd = amount * USD_PRICES.get(coin, Decimal(0))
            total += usd
            coins.append(
                {
                    "coin": coin, "equity": amount_text, "usdValue": str(usd), "walletBalance": amount_text,
                    "locked": "0", "spotHedgingQty": "0", "borrowAmount": "0", "availableToBorrow": "",
                    "availableToWithdraw": "", "accruedInterest": "0", "totalOrderIM": "0",
                    "totalPositionIM": "0", "totalPositionMM": "0", "unrealisedPnl": "0",
                    "cumRealisedPnl": "0", "bonus": "0", "marginCollateral": True, "collateralSwitch": True,
                }
            )  # fmt: skip
        account = {
            "accountType": "UNIFIED", "accountLTV": "0", "accountIMRate": "0", "accountMMRate": "0",
            "totalEquity": str(total), "totalWalletBalance": str(total), "totalMarginBalance": str(total),
            "totalAvailableBalance": str(total), "totalPerpUPL": "0", "totalInitialMargin": "0",
            "totalMaintenanceMargin": "0", "coin": coins,
        }  # fmt: skip
        return self.ok({"list": [account]})

    def execution_list(self, request: web.Request, caller: Caller) -> web.Response:
        category = caller.params.get("category")
        if category not in CATEGORIES:
            return self.fail(Cause.BAD_PARAM)
        # The scenario model holds no trades: history reads succeed with an empty page.
        return self.ok({"nextPageCursor": "", "category": category, "list": []})

    def deposit_address(self, request: web.Request, caller: Caller) -> web.Response:
        coin = caller.params.get("coin")
        if not coin or coin != coin.upper():
            return self.fail(Cause.BAD_PARAM)
        address = caller.account.deposit_addresses.get(coin)
        chain, chain_type, contract = DEPOSIT_CHAINS.get(coin, (coin, coin, ""))
        wanted_chain = caller.params.get("chainType")
        chains = []
        if address and wanted_chain in (None, chain):
            chains.append(
                {
                    "chainType": chain_type,
                    "addressDeposit": address,
                    "tagDeposit": "",
                    "chain": chain,
                    "batchReleaseLimit": "-1",
                    "contractAddress": contract,
                }
            )
        return self.ok({"coin": coin, "chains": chains}, message="success")

    def position_list(self, request: web.Request, caller: Caller) -> web.Response:
        category = caller.params.get("category")
        needed = POSITION_PERMISSION.get(category) if isinstance(category, str) else None
        if needed is None:
            return self.fail(Cause.BAD_PARAM)
        if not self._may(caller.key, needed, write=False):
            return self.fail(Cause.NO_PERMISSION)
        if category in FUTURES_CATEGORIES and not caller.account.futures_opened:
            return self.fail(Cause.FUTURES_NOT_OPENED)
        # Doc: linear needs either symbol or settleCoin.
        if category == "linear" and not (caller.params.get("symbol") or caller.params.get("settleCoin")):
            return self.fail(Cause.BAD_PARAM)
        return self.ok({"list": [], "nextPageCursor": "", "category": category})

    def order_create(self, request: web.Request, caller: Caller) -> web.Response:
        """The trade-permission probe: a bad qty passes the permission check and is refused with 10001."""
        params = caller.params
        category = params.get("category")
        needed = TRADE_PERMISSION.get(category) if isinstance(category, str) else None
        if not caller.body_ok or needed is None:
            return self.fail(Cause.BAD_PARAM)
        if not self._may(caller.key, needed, write=True):
            return self.fail(Cause.NO_PERMISSION)
        if category in FUTURES_CATEGORIES and not caller.account.futures_opened:
            return self.fail(Cause.FUTURES_NOT_OPENED)
        if not (
            params.get("symbol") and params.get("side") in ("Buy", "Sell") and _positive(params.get("qty"))
        ):
            return self.fail(Cause.BAD_PARAM)
        # Nothing is kept: the simulator has no order book, it only answers like an accepted order.
        order_id = str(uuid.uuid4())
        return self.ok({"orderId": order_id, "orderLinkId": str(params.get("orderLinkId", ""))})


PUBLIC_ROUTES: Final[tuple[PublicRoute, ...]] = (
    PublicRoute("GET", "/v5/market/time", BybitSim.server_time),
    PublicRoute("GET", "/v5/system/status", BybitSim.system_status),
)
PRIVATE_ROUTES: Final[tuple[PrivateRoute, ...]] = (
    PrivateRoute("GET", "/v5/user/query-api", BybitSim.query_api, "uid_query_api"),
    PrivateRoute("GET", "/v5/account/info", BybitSim.account_info, "uid_account_info"),
    PrivateRoute("GET", "/v5/account/wallet-balance", BybitSim.wallet_balance, "uid_wallet_balance"),
    PrivateRoute("GET", "/v5/execution/list", BybitSim.execution_list, "uid_execution_list"),
    PrivateRoute(
        "GET",
        "/v5/asset/deposit/query-address",
        BybitSim.deposit_address,
        "uid_deposit_address",
        window="uid_deposit_address_window_s",
    ),
    PrivateRoute("GET", "/v5/position/list", BybitSim.position_list, "uid_position_list"),
    PrivateRoute(
        "POST",
        "/v5/order/create",
        BybitSim.order_create,
        "uid_order_create",
        limit_by_category={"spot": "uid_order_create_spot"},
    ),
)

SIMULATOR = BybitSim
