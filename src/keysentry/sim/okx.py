"""OKX v5 simulator: the REST endpoints a key check needs, speaking OKX's real wire protocol.

Sources: shared/reference/exchange-api.md section 2 (OKX docs v5, ccxt, observed bodies).
The signature verifier below is written from OKX's documented recipe, never from a client's signer.

A private request is checked in this order; the first failure answers:

    headers present (50103 key, 50106 sign, 50107 timestamp, 50104 passphrase)
    -> timestamp format (50112) -> key format / exists / not expired (50111, setting)
    -> environment: demo header vs demo key (50101), key registered on another site (50119)
    -> timestamp within 30 s of the server clock plus the key's offset (50102)
    -> passphrase (50105) -> signature (50113) -> IP whitelist (50110)
    -> (the key counts as used) -> rate limit per User ID (429 50011)
    -> API frozen (400 50100), account flags (50007/50012/50060/50051/50121)
    -> endpoint permission (50120 or 50030) -> the endpoint.

Public endpoints are limited per IP and need no authentication.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from aiohttp import web

from keysentry.sim.base import ExchangeSim, json_response
from keysentry.sim.ratelimit import FixedWindowCounter
from keysentry.sim.scenario import AccountSpec, ExchangeSpec, KeySpec, ScenarioError

__all__ = ["ERRORS", "ROUTES", "SIMULATOR", "OkxSim", "sign", "verify_signature"]

# -- wire formats (shared key formats of the project) ----------------------------------------

API_KEY_FORMAT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SECRET_FORMAT = re.compile(r"[0-9A-F]{32}")
PASSPHRASE_FORMAT = re.compile(r"[\x20-\x7e]{8,32}")
TIMESTAMP_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
TIMESTAMP_WINDOW_MS = 30_000
DEMO_HEADER = "x-simulated-trading"
# read_only is implied by every OKX key: a key without read access cannot exist there.
PERMISSION_ORDER = ("read_only", "trade", "withdraw")
# USD prices for eqUsd/totalEq in balances; anything else is valued at 0.
USD_PRICES = {"BTC": Decimal(60000), "ETH": Decimal(3000), "USDT": Decimal(1), "USDC": Decimal(1)}
DEPOSIT_CHAINS = {"BTC": "Bitcoin", "ETH": "ERC20", "USDT": "TRC20", "USDC": "ERC20"}
_DERIVATIVE_INST = re.compile(r"-SWAP$|-\d{6}(?:-|$)")


def sign(secret: str, timestamp: str, method: str, request_path: str, body: bytes | str) -> str:
    """Base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath(with ?query) + body)) (doc)."""
    raw = body.encode() if isinstance(body, str) else body
    prehash = timestamp.encode() + method.upper().encode() + request_path.encode() + raw
    return base64.b64encode(hmac.new(secret.encode(), prehash, hashlib.sha256).digest()).decode()


def verify_signature(
    secret: str, timestamp: str, method: str, request_path: str, body: bytes | str, signature: str
) -> bool:
    expected = sign(secret, timestamp, method, request_path, body)
    # Header values may carry undecodable bytes (aiohttp keeps them as surrogates): never a 500.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))


def parse_timestamp_ms(value: str) -> int | None:
    """OK-ACCESS-TIMESTAMP is ISO 8601 UTC with milliseconds (2020-12-08T09:08:57.715Z); else None."""
    if not TIMESTAMP_FORMAT.fullmatch(value):
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:  # well-formed but impossible, e.g. month 13
        return None
    return int(parsed.timestamp() * 1000)


# -- the error table: cause -> HTTP status, code, message (doc wording) ----------------------


@dataclass(frozen=True, slots=True)
class OkxError:
    http: int
    code: str
    msg: str


ERRORS: Mapping[str, OkxError] = {
    "missing_key": OkxError(401, "50103", 'Request header "OK-ACCESS-KEY" cannot be empty.'),
    "missing_passphrase": OkxError(401, "50104", 'Request header "OK-ACCESS-PASSPHRASE" cannot be empty.'),
    "wrong_passphrase": OkxError(401, "50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.'),
    "missing_sign": OkxError(401, "50106", 'Request header "OK-ACCESS-SIGN" cannot be empty.'),
    "missing_timestamp": OkxError(401, "50107", 'Request header "OK-ACCESS-TIMESTAMP" cannot be empty.'),
    "wrong_environment": OkxError(401, "50101", "APIKey does not match current environment."),
    "timestamp_expired": OkxError(401, "50102", "Timestamp request expired."),
    "ip_not_allowed": OkxError(401, "50110", "Your IP {0} is not included in your API key's IP whitelist."),
    "invalid_key": OkxError(401, "50111", "Invalid OK-ACCESS-KEY."),
    "bad_timestamp": OkxError(401, "50112", "Invalid OK-ACCESS-TIMESTAMP."),
    "bad_signature": OkxError(401, "50113", "Invalid signature."),
    "wrong_method": OkxError(405, "50115", "Invalid request method."),
    "key_not_on_site": OkxError(401, "50119", "API key doesn't exist"),
    "key_lacks_permission": OkxError(
        200, "50120", "This API key doesn't have permission to use this function"
    ),
    "endpoint_forbidden": OkxError(200, "50030", "You don't have permission to use this API endpoint"),
    "api_frozen": OkxError(400, "50100", "API frozen, please contact customer service."),
    "user_blocked": OkxError(200, "50007", "User blocked."),
    "account_status_invalid": OkxError(200, "50012", "Account status invalid. Check account status"),
    "kyc_required": OkxError(
        200,
        "50060",
        "For security and compliance purposes, please complete the identity verification process "
        "to continue using our services.",
    ),
    "region_restricted": OkxError(
        200, "50051", "Due to compliance restrictions in your country or region, you cannot use this feature."
    ),
    "region_ip_blocked": OkxError(200, "50121", "You can't access our services through the IP address ({0})"),
    "rate_limited": OkxError(429, "50011", "Too Many Requests"),
    "maintenance": OkxError(503, "50001", "Service temporarily unavailable. Please try again later."),
    "system_error": OkxError(500, "50026", "System error. Try again later"),
    "json_error": OkxError(400, "50002", "Json data format error."),
    "param_empty": OkxError(400, "50014", "Parameter {0} can not be empty."),
    "account_mode": OkxError(
        200, "51010", "You can't complete this request under your current account mode."
    ),
}
_CAUSE_OF_CODE = {e.code: cause for cause, e in ERRORS.items()}

# Settings that pick an error code: the values a scenario may choose from.
_CODE_CHOICES: Mapping[str, frozenset[str]] = {
    "expired_key_code": frozenset({"50111", "50119"}),
    "missing_permission_code": frozenset({"50120", "50030"}),
    "banned_code": frozenset({"50007", "50012"}),
    "region_restricted_code": frozenset({"50051", "50121"}),
}
_WORD_CHOICES: Mapping[str, frozenset[str]] = {
    "compliance_block_scope": frozenset({"all", "trade"}),
    "positions_without_futures": frozenset({"error", "empty"}),
}


# -- the route table --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: str  # name of the OkxSim method answering it
    private: bool
    needs: str | None  # OKX permission needed beyond read_only (always present)
    limit: str  # rate-limit family: default_limits has <limit>_requests and <limit>_window_s


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v5/public/time", "public_time", False, None, "public_time"),
    Route("GET", "/api/v5/system/status", "system_status", False, None, "system_status"),
    Route("GET", "/api/v5/account/config", "account_config", True, None, "account_config"),
    Route("GET", "/api/v5/account/balance", "account_balance", True, None, "account_balance"),
    Route("GET", "/api/v5/account/positions", "account_positions", True, None, "account_positions"),
    Route("GET", "/api/v5/trade/fills", "trade_fills", True, None, "trade_fills"),
    Route("GET", "/api/v5/asset/deposit-address", "deposit_address", True, None, "deposit_address"),
    Route("POST", "/api/v5/trade/order", "trade_order", True, "trade", "trade_order"),
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated private request."""

    key: KeySpec
    account: AccountSpec
    body: bytes
    now_ms: int


Endpoint = Callable[[web.Request, Caller | None], Awaitable[web.Response]]


def _ok(data: list[Any]) -> web.Response:
    return json_response({"code": "0", "msg": "", "data": data})


class OkxSim(ExchangeSim):
    name = "okx"
    environments: ClassVar[Mapping[str, str]] = {
        "mainnet": "www.okx.com (global site)",
        "demo": "demo trading (same REST API, header x-simulated-trading: 1)",
        "eea": "my.okx.com (EEA site)",
        "us": "app.okx.com (US site)",
    }
    permissions: ClassVar[frozenset[str]] = frozenset(PERMISSION_ORDER)
    default_settings: ClassVar[Mapping[str, Any]] = {
        # Doc wording ends with a dot; the observed body has none.
        "invalid_key_message": "Invalid OK-ACCESS-KEY",
        # A key removed by expiry answers like a deleted key: 50111 or 50119 (undocumented which).
        "expired_key_code": "50111",
        "inactivity_expiry_days": 14,
        # 50119 for a key of another site: doc table says HTTP 200, observed 401 (ccxt#23779).
        "other_site_http_status": 401,
        # Which code a key without `trade` gets on /trade/order, and at which HTTP status.
        "missing_permission_code": "50120",
        "missing_permission_http_status": 200,
        # HTTP status of the account-state codes 50007/50012/50060/50051/50121 (doc table: 200).
        "account_restriction_http_status": 200,
        "banned_code": "50007",
        "region_restricted_code": "50051",
        # KYC and region blocks on every private endpoint ("all") or only on trading ("trade").
        "compliance_block_scope": "all",
        # /account/positions on a spot-mode (acctLv 1) account: a 51010 error or an empty list.
        "positions_without_futures": "error",
        # No Retry-After is documented for OKX.
        "rate_limit_retry_after": False,
        # Order of `perm` in account/config (the doc example shows read_only,withdraw,trade).
        "perm_order": "read_only,trade,withdraw",
    }
    default_limits: ClassVar[Mapping[str, float]] = {
        "public_time_requests": 10,
        "public_time_window_s": 2,
        "system_status_requests": 1,
        "system_status_window_s": 5,
        "account_config_requests": 5,
        "account_config_window_s": 2,
        "account_balance_requests": 10,
        "account_balance_window_s": 2,
        "account_positions_requests": 10,
        "account_positions_window_s": 2,
        "trade_fills_requests": 60,
        "trade_fills_window_s": 2,
        "deposit_address_requests": 6,
        "deposit_address_window_s": 1,
        "trade_order_requests": 60,
        "trade_order_window_s": 2,
    }
    status_paths: ClassVar[frozenset[str]] = frozenset({"/api/v5/system/status", "/api/v5/public/time"})

    def __init__(self, spec: ExchangeSpec, environment: str, *, seed: int = 0) -> None:
        super().__init__(spec, environment, seed=seed)
        self._check_settings()
        self._check_key_formats()
        # The demo port is the same REST host as the global site: only the header makes a request demo.
        self.site = "mainnet" if environment == "demo" else environment
        self._counters: dict[str, FixedWindowCounter] = {}

    def _check_settings(self) -> None:
        for name, choices in {**_CODE_CHOICES, **_WORD_CHOICES}.items():
            value = str(self.setting(name))  # YAML reads an unquoted 50119 as a number
            if value not in choices:
                raise ScenarioError(
                    f"exchanges.okx.settings.{name}: {value!r} is not one of {', '.join(sorted(choices))}"
                )
        order = str(self.setting("perm_order")).split(",")
        if sorted(order) != sorted(PERMISSION_ORDER):
            raise ScenarioError(
                f"exchanges.okx.settings.perm_order: list each of {', '.join(PERMISSION_ORDER)} once"
            )

    def _check_key_formats(self) -> None:
        checks = (
            ("api_key", API_KEY_FORMAT, "a lowercase UUID (8-4-4-4-12 hex)"),
            ("secret", SECRET_FORMAT, "32 uppercase hex characters"),
            ("client_secret", SECRET_FORMAT, "32 uppercase hex characters"),
            ("passphrase", PASSPHRASE_FORMAT, "8-32 printable ASCII characters"),
            ("client_passphrase", PASSPHRASE_FORMAT, "8-32 printable ASCII characters"),
        )
        for account in self.spec.accounts:
            for key in account.keys:
                who = key.label or key.api_key[:8]
                if key.passphrase is None:
                    raise ScenarioError(f"exchanges.okx: key {who!r} needs a passphrase (OKX keys have one)")
                for field, pattern, expected in checks:
                    value = getattr(key, field)
                    if value is not None and not pattern.fullmatch(value):
                        raise ScenarioError(f"exchanges.okx: key {who!r}: {field} must be {expected}")

    def reset_limits(self) -> None:
        self._counters.clear()

    def _cause_for(self, setting: str) -> str:
        """The error cause a code-choosing setting names; the default if the admin set another value."""
        value = str(self.setting(setting))
        if value not in _CODE_CHOICES[setting]:
            value = self.default_settings[setting]
        return _CAUSE_OF_CODE[value]

    # -- answers ----------------------------------------------------------------------------

    def _error(
        self,
        cause: str,
        *params: str,
        http: int | None = None,
        msg: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        e = ERRORS[cause]
        text = msg or e.msg
        body = {"code": e.code, "msg": text.format(*params) if params else text, "data": []}
        return json_response(body, status=int(http or e.http), headers=headers)

    def maintenance_response(self, request: web.Request) -> web.StreamResponse:
        return self._error("maintenance")

    def server_error_response(self, request: web.Request) -> web.StreamResponse:
        return self._error("system_error")

    # -- routing and the private pipeline ----------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._endpoint(route))
            # Other methods on a known path get OKX's 405 body rather than aiohttp's text.
            app.router.add_route("*", route.path, self._wrong_method)

    async def _wrong_method(self, request: web.Request) -> web.Response:
        return self._error("wrong_method")

    def _endpoint(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        answer: Endpoint = getattr(self, route.handler)

        async def handle(request: web.Request) -> web.Response:
            if not route.private:
                limited = self._rate_limited(route.limit, self.peer_ip(request))
                return limited or await answer(request, None)
            caller = await self._authenticate(request)
            if isinstance(caller, web.Response):
                return caller
            refusal = (
                self._rate_limited(route.limit, caller.account.id)
                or self._restriction(caller.account, self.peer_ip(request), route)
                or self._permission(caller.key, route)
            )
            return refusal or await answer(request, caller)

        return handle

    async def _authenticate(self, request: web.Request) -> Caller | web.Response:
        h = request.headers
        api_key = h.get("OK-ACCESS-KEY", "")
        signature = h.get("OK-ACCESS-SIGN", "")
        timestamp = h.get("OK-ACCESS-TIMESTAMP", "")
        passphrase = h.get("OK-ACCESS-PASSPHRASE", "")
        for value, cause in (
            (api_key, "missing_key"),
            (signature, "missing_sign"),
            (timestamp, "missing_timestamp"),
            (passphrase, "missing_passphrase"),
        ):
            if not value:
                return self._error(cause)
        ts_ms = parse_timestamp_ms(timestamp)
        if ts_ms is None:
            return self._error("bad_timestamp")
        now_ms = self.now_ms()
        now = self.now()
        found = self._live_key(api_key, now)
        if isinstance(found, web.Response):
            return found
        key, account = found

        demo = h.get(DEMO_HEADER) == "1"
        if demo != (key.environment == "demo"):
            return self._error("wrong_environment")
        if not demo and key.environment != self.site:
            return self._error("key_not_on_site", http=self.setting("other_site_http_status"))
        if abs(now_ms + key.clock_offset_ms - ts_ms) > TIMESTAMP_WINDOW_MS:
            return self._error("timestamp_expired")
        given = passphrase.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, (key.passphrase or "").encode()):
            return self._error("wrong_passphrase")
        body = await request.read()
        if not verify_signature(key.secret, timestamp, request.method, request.raw_path, body, signature):
            return self._error("bad_signature")
        ip = self.peer_ip(request)
        if not key.allows_ip(ip):
            return self._error("ip_not_allowed", ip)
        # Only authenticated calls count as use for the 14-day inactivity rule (doc).
        key.last_used_at = now
        return Caller(key, account, body, now_ms)

    def _live_key(self, api_key: str, now: datetime) -> tuple[KeySpec, AccountSpec] | web.Response:
        if not API_KEY_FORMAT.fullmatch(api_key):
            return self._error("invalid_key", msg=self.setting("invalid_key_message"))
        found = self.lookup(api_key)
        if found is None or not found.key.enabled:
            return self._error("invalid_key", msg=self.setting("invalid_key_message"))
        if self._is_gone(found.key, now):
            cause = self._cause_for("expired_key_code")
            if cause == "invalid_key":
                return self._error(cause, msg=self.setting("invalid_key_message"))
            return self._error(cause, http=self.setting("other_site_http_status"))
        return found.key, found.account

    def _is_gone(self, key: KeySpec, now: datetime) -> bool:
        """An OKX key past its expiry is deleted: by expires_at, or by the 14-day inactivity rule."""
        if key.is_expired(now):
            return True
        # Demo keys and IP-bound keys never expire; neither do keys that cannot trade or withdraw.
        if key.environment == "demo" or key.ip_whitelist:
            return False
        if "trade" not in key.permissions and "withdraw" not in key.permissions:
            return False
        since = key.last_used_at or key.created_at
        return now - since > timedelta(days=float(self.setting("inactivity_expiry_days")))

    def _rate_limited(self, family: str, subject: str) -> web.Response | None:
        window = float(self.limit(f"{family}_window_s"))
        counter = self._counters.get(family)
        if counter is None or counter.interval_s != window:  # a scenario may change limits at run time
            counter = self._counters[family] = FixedWindowCounter(window)
        now_s = self.now_ms() / 1000
        if counter.add(subject, 1, now_s) <= self.limit(f"{family}_requests"):
            return None
        headers = None
        if self.setting("rate_limit_retry_after"):
            headers = {"Retry-After": str(max(1, math.ceil(counter.seconds_to_reset(now_s))))}
        return self._error("rate_limited", headers=headers)

    def _restriction(self, account: AccountSpec, ip: str, route: Route) -> web.Response | None:
        if account.api_disabled:
            return self._error("api_frozen")
        http = self.setting("account_restriction_http_status")
        if account.frozen:
            return self._error("user_blocked", http=http)
        if account.banned:
            return self._error(self._cause_for("banned_code"), http=http)
        if self.setting("compliance_block_scope") == "trade" and route.needs != "trade":
            return None
        if account.kyc_required:
            return self._error("kyc_required", http=http)
        if account.region_restricted:
            return self._error(self._cause_for("region_restricted_code"), ip, http=http)
        return None

    def _permission(self, key: KeySpec, route: Route) -> web.Response | None:
        if route.needs is None or route.needs in key.permissions:
            return None
        cause = self._cause_for("missing_permission_code")
        return self._error(cause, http=self.setting("missing_permission_http_status"))

    # -- endpoints ----------------------------------------------------------------------------

    async def public_time(self, request: web.Request, caller: Caller | None) -> web.Response:
        return _ok([{"ts": str(self.now_ms())}])

    async def system_status(self, request: web.Request, caller: Caller | None) -> web.Response:
        wanted = request.query.get("state")
        now = self.now()
        demo = request.headers.get(DEMO_HEADER) == "1"
        entries = []
        for window in self.spec.maintenance:
            if window.end is not None and window.end <= now:
                state = "completed"
            else:
                state = "ongoing" if window.start <= now else "scheduled"
            # Without ?state= OKX lists what is scheduled, ongoing or about to open (doc).
            if (wanted is None and state == "completed") or (wanted is not None and state != wanted):
                continue
            entries.append(
                {
                    "begin": str(int(window.start.timestamp() * 1000)),
                    "end": str(int(window.end.timestamp() * 1000)) if window.end else "",
                    "href": "",
                    "preOpenBegin": "",
                    "scheDesc": "",
                    "serviceType": "5",
                    "state": state,
                    "maintType": "1",
                    "env": "2" if demo else "1",
                    "system": "unified",
                    "title": "Trading system upgrade",
                }
            )
        return _ok(entries)

    async def account_config(self, request: web.Request, caller: Caller | None) -> web.Response:
        assert caller is not None
        key, account = caller.key, caller.account
        granted = {"read_only", *key.permissions}
        perm = ",".join(p for p in str(self.setting("perm_order")).split(",") if p in granted)
        return _ok(
            [
                {
                    "acctLv": "2" if account.futures_opened else "1",
                    "acctStpMode": "cancel_maker",
                    "autoLoan": False,
                    "ctIsoMode": "automatic",
                    "enableSpotBorrow": False,
                    "greeksType": "PA",
                    "feeType": "0",
                    "ip": ",".join(key.ip_whitelist),
                    "type": "0",
                    "kycLv": str(account.kyc_level),
                    "label": key.label,
                    "level": "Lv1",
                    "levelTmp": "",
                    "liquidationGear": "-1",
                    "mainUid": account.id,
                    "mgnIsoMode": "automatic",
                    "opAuth": "0",
                    "perm": perm,
                    "posMode": "net_mode",
                    "roleType": "0",
                    "spotBorrowAutoRepay": False,
                    "spotOffsetType": "",
                    "spotRoleType": "0",
                    "spotTraderInsts": [],
                    "stgyType": "0",
                    "traderInsts": [],
                    "uid": account.id,
                    "settleCcy": "USDC",
                    "settleCcyList": ["USD", "USDC", "USDG"],
                }
            ]
        )

    async def account_balance(self, request: web.Request, caller: Caller | None) -> web.Response:
        assert caller is not None
        wanted = {c for c in request.query.get("ccy", "").split(",") if c}
        u_time = str(caller.now_ms)
        details, total = [], Decimal(0)
        for ccy, amount in caller.account.balances.items():
            if wanted and ccy not in wanted:
                continue
            try:
                eq = Decimal(amount)
            except InvalidOperation:
                eq = Decimal(0)
            usd = eq * USD_PRICES.get(ccy, Decimal(0))
            total += usd
            details.append(_balance_detail(ccy, amount, _plain(usd), u_time))
        return _ok(
            [
                {
                    "adjEq": "",
                    "availEq": "",
                    "borrowFroz": "",
                    "details": details,
                    "imr": "",
                    "isoEq": "",
                    "mgnRatio": "",
                    "mmr": "",
                    "notionalUsd": "",
                    "ordFroz": "",
                    "totalEq": _plain(total),
                    "uTime": u_time,
                    "upl": "",
                }
            ]
        )

    async def account_positions(self, request: web.Request, caller: Caller | None) -> web.Response:
        assert caller is not None
        if not caller.account.futures_opened and self.setting("positions_without_futures") == "error":
            return self._error("account_mode")
        return _ok([])  # the simulator holds no positions

    async def trade_fills(self, request: web.Request, caller: Caller | None) -> web.Response:
        return _ok([])  # no trades are ever executed here

    async def deposit_address(self, request: web.Request, caller: Caller | None) -> web.Response:
        assert caller is not None
        ccy = request.query.get("ccy", "")
        if not ccy:
            return self._error("param_empty", "ccy")
        addr = caller.account.deposit_addresses.get(ccy)
        if addr is None:
            return _ok([])
        chain = f"{ccy}-{DEPOSIT_CHAINS.get(ccy, 'ERC20')}"
        return _ok(
            [
                {
                    "addr": addr,
                    "ccy": ccy,
                    "chain": chain,
                    "ctAddr": "",
                    "selected": True,
                    "to": "6",
                    "verifiedName": "",
                }
            ]
        )

    async def trade_order(self, request: web.Request, caller: Caller | None) -> web.Response:
        """The trade-permission probe: validates like OKX, and never places anything."""
        assert caller is not None
        try:
            order = json.loads(caller.body or b"{}")
        except ValueError:
            return self._error("json_error")
        if not isinstance(order, dict):
            return self._error("json_error")
        for field in ("instId", "tdMode", "side", "ordType", "sz"):
            if not order.get(field):
                return self._error("param_empty", field)
        inst_id, side = str(order["instId"]), str(order["side"])
        if _DERIVATIVE_INST.search(inst_id) and not caller.account.futures_opened:
            s_code, s_msg = ERRORS["account_mode"].code, ERRORS["account_mode"].msg
        elif not _positive_decimal(order["sz"]):
            s_code, s_msg = "51000", "Parameter sz error"
        else:
            # Any valid order is refused, so a probe can never trade.
            base, _, quote = inst_id.partition("-")
            ccy = (quote.split("-")[0] or "USDT") if side == "buy" else base
            s_code, s_msg = "51008", f"Order failed. Insufficient {ccy} balance in account."
        item = {
            "clOrdId": str(order.get("clOrdId", "")),
            "ordId": "",
            "sCode": s_code,
            "sMsg": s_msg,
            "tag": str(order.get("tag", "")),
            "ts": str(caller.now_ms),
        }
        t = str(caller.now_ms * 1000)
        body = {"code": "1", "msg": "All operations failed", "data": [item], "inTime": t, "outTime": t}
        return json_response(body)


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f") if d else "0"


def _positive_decimal(value: Any) -> bool:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return False
    return d.is_finite() and d > 0


def _balance_detail(ccy: str, amount: str, eq_usd: str, u_time: str) -> dict[str, Any]:
    return {
        "availBal": amount,
        "availEq": amount,
        "borrowFroz": "",
        "cashBal": amount,
        "ccy": ccy,
        "crossLiab": "",
        "disEq": eq_usd,
        "eq": amount,
        "eqUsd": eq_usd,
        "fixedBal": "0",
        "frozenBal": "0",
        "imr": "",
        "interest": "",
        "isoEq": "",
        "isoLiab": "",
        "isoUpl": "",
        "liab": "",
        "maxLoan": "",
        "mgnRatio": "",
        "mmr": "",
        "notionalLever": "",
        "ordFrozen": "0",
        "rewardBal": "0",
        "spotInUseAmt": "",
        "spotIsoBal": "0",
        "stgyEq": "0",
        "twap": "0",
        "uTime": u_time,
        "upl": "",
        "uplLiab": "",
    }


SIMULATOR = OkxSim
