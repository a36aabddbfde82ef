"""Binance simulator: spot `/api/v3`, wallet `/sapi/v1` and USD-M futures `/fapi` on one host.

Written from shared/reference/exchange-api.md section 1 (Binance's own docs plus observed
answers), never from a client library. Three tables drive it: ROUTES (path, API family,
weight, the permission an endpoint needs), ERRORS (cause -> HTTP status, code, message)
and PERMISSION_FLAGS (scenario vocabulary -> the apiRestrictions flag).

A signed request is checked in this order (reference 1.10; the order of the timestamp and
signature checks is the setting `timestamp_before_signature`):

    IP ban / request weight (418, 429)
    -> key format (-2014) -> key lookup (-2015) -> IP whitelist (-2015)
    -> timestamp / recvWindow (-1021) -> signature (-1022)
    -> account flags (451 region, -2015 banned, -2017 API locked, sapi KYC)
    -> endpoint permission (-2015) -> the endpoint itself (frozen: -2010 on order/test)

Unknown key, key of another environment, wrong IP and missing permission are deliberately
the same -2015 answer: Binance cannot tell them apart, and the diagnosis must work around it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from keysentry.sim.base import ExchangeSim, Handler, json_response
from keysentry.sim.ratelimit import FixedWindowCounter
from keysentry.sim.scenario import AccountSpec, ExchangeSpec, KeySpec, ScenarioError

Family = Literal["api", "sapi", "fapi"]
FAMILIES: tuple[Family, ...] = ("api", "sapi", "fapi")

API_KEY_FORMAT = re.compile(r"[A-Za-z0-9]{64}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_RECV_WINDOW = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,3})?")
_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")
RECV_WINDOW_DEFAULT_MS = 5000.0
RECV_WINDOW_MAX_MS = 60000.0
# A request may be at most this far ahead of the server clock (doc timing rule).
FUTURE_TOLERANCE_MS = 1000
MINUTE_S = 60.0


def split_signature(query: str, body: str) -> tuple[str, str | None]:
    """Binance's totalParams (query and body joined without separator) minus the signature, and it.

    `signature` may sit in either part; it is cut out of the raw (still url-encoded) text,
    because the client signed the exact bytes it sent.
    """
    signature: str | None = None
    parts: list[str] = []
    for raw in (query, body):
        kept: list[str] = []
        for item in raw.split("&") if raw else ():
            if item.startswith("signature="):
                signature = unquote(item[len("signature=") :])
            else:
                kept.append(item)
        parts.append("&".join(kept))
    return parts[0] + parts[1], signature


def verify_hmac_signature(secret: str, total_params: str, signature: str) -> bool:
    """HMAC-SHA256(secret, totalParams) as hex; the server compares HMAC hex case-insensitively (doc)."""
    expected = hmac.new(secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace"))


# -- tables ---------------------------------------------------------------------------------------

# apiRestrictions flag -> the scenario's permission name, in the order Binance's example lists them.
PERMISSION_FLAGS: tuple[tuple[str, str], ...] = (
    ("enableReading", "reading"),
    ("enableWithdrawals", "withdrawals"),
    ("enableInternalTransfer", "internal_transfer"),
    ("enableMargin", "margin"),
    ("enableFutures", "futures"),
    ("permitsUniversalTransfer", "universal_transfer"),
    ("enableVanillaOptions", "vanilla_options"),
    ("enableFixApiTrade", "fix_api_trade"),
    ("enableFixReadOnly", "fix_read_only"),
    ("enableSpotAndMarginTrading", "spot_and_margin_trading"),
    ("enablePortfolioMarginTrading", "portfolio_margin"),
)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    family: Family
    weight: int
    signed: bool
    # Binance permission the key needs; None: any valid key of the account.
    permission: str | None
    handler: str
    # (parameter, weight): the weight when that parameter is sent (and not "false").
    weight_if: tuple[str, int] | None = None

    def weight_for(self, params: Mapping[str, str]) -> int:
        if self.weight_if:
            name, weight = self.weight_if
            if params.get(name, "false").lower() != "false":
                return weight
        return self.weight


# fmt: off
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v3/ping", "api", 1, False, None, "_ping"),
    Route("GET", "/api/v3/time", "api", 1, False, None, "_time"),
    Route("GET", "/sapi/v1/system/status", "sapi", 1, False, None, "_system_status"),
    # Any valid key may read its own restrictions, so a diagnosis sees the flags of a weak key.
    Route("GET", "/sapi/v1/account/apiRestrictions", "sapi", 1, True, None, "_api_restrictions"),
    Route("GET", "/api/v3/account", "api", 20, True, "reading", "_account"),
    Route("GET", "/sapi/v1/account/status", "sapi", 1, True, "reading", "_account_status"),
    Route("GET", "/sapi/v1/account/apiTradingStatus", "sapi", 1, True, "reading", "_api_trading_status"),
    Route("GET", "/sapi/v1/account/info", "sapi", 1, True, "reading", "_account_info"),
    Route("GET", "/api/v3/myTrades", "api", 20, True, "reading", "_my_trades", ("orderId", 5)),
    Route("GET", "/sapi/v1/capital/deposit/address", "sapi", 10, True, "reading", "_deposit_address"),
    Route("POST", "/api/v3/order/test", "api", 1, True, "spot_and_margin_trading", "_order_test",
          ("computeCommissionRates", 20)),
    Route("GET", "/fapi/v2/account", "fapi", 5, True, "futures", "_futures_account_v2"),
    Route("GET", "/fapi/v3/account", "fapi", 5, True, "futures", "_futures_account_v3"),
    Route("GET", "/fapi/v1/ping", "fapi", 1, False, None, "_ping"),
    Route("GET", "/fapi/v1/time", "fapi", 1, False, None, "_time"),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Err:
    # An int, or the name of the setting that holds it.
    status: int | str
    code: int | str
    msg: str  # str.format template


ERRORS: Mapping[str, Err] = {
    "invalid_key": Err(401, -2015, "Invalid API-key, IP, or permissions for action."),
    "key_format": Err("http_status_malformed_key", -2014, "API-key format invalid."),
    "bad_signature": Err("http_status_bad_signature", -1022, "Signature for this request is not valid."),
    "timestamp_ahead": Err(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."),
    "timestamp_outside": Err(400, -1021, "Timestamp for this request is outside of the recvWindow."),
    "recv_window_too_large": Err(400, -1131, "recvWindow must be less than 60000."),
    "invalid_parameter": Err(400, -1130, "Data sent for parameter '{name}' is not valid."),
    "mandatory_parameter": Err(
        400, -1102, "Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    ),
    "illegal_characters": Err(
        400, -1100, "Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    ),
    "invalid_side": Err(400, -1117, "Invalid side."),
    "invalid_order_type": Err(400, -1116, "Invalid orderType."),
    "account_cannot_trade": Err(
        "http_status_account_cannot_trade", -2010, "This account may not place or cancel orders."
    ),
    "api_keys_locked": Err("http_status_api_keys_locked", -2017, "API Keys are locked on this account."),
    "not_authorized": Err(401, -1002, "You are not authorized to execute this request."),
    "kyc_required": Err(
        "http_status_kyc_required",
        200003903,
        "Your identity verification has been rejected. Please complete identity verification again.",
    ),
    "region_restricted": Err(
        451,
        0,
        "Service unavailable from a restricted location according to 'b. Eligibility' in "
        "https://www.binance.com/en/terms. Please contact customer service if you believe you "
        "received this message in error.",
    ),
    "too_much_weight": Err(
        429,
        -1003,
        "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API.",
    ),
    "ip_banned": Err(
        418,
        -1003,
        "Way too much request weight used; IP banned until {until}. "
        "Please use WebSocket Streams for live updates to avoid bans.",
    ),
    "deposit_address_missing": Err(
        "deposit_address_missing_http_status", "deposit_address_missing_code", "{msg}"
    ),
    "maintenance": Err(
        "http_status_maintenance",
        -1008,
        "Server is currently overloaded with other requests. Please try again in a few minutes.",
    ),
    "sapi_maintenance": Err("http_status_maintenance", 1, "System is under maintenance."),
    "internal_error": Err(500, -1001, "Internal error; unable to process your request. Please try again."),
}

# Settings whose value must be one of these (checked when the simulator starts).
SETTING_CHOICES: Mapping[str, tuple[Any, ...]] = {
    "ip_restricted_key_expiry": ("deleted", "trading_authority"),
    "banned_answer": ("invalid_key", "not_authorized"),
    "api_disabled_answer": ("api_keys_locked", "invalid_key"),
    "recv_window_over_max_code": (-1131, -1130),
}


@dataclass(frozen=True, slots=True)
class Signed:
    """A request that passed authentication: who sent it (kept out of reprs: the key holds its secret)."""

    key: KeySpec = field(repr=False)
    account: AccountSpec = field(repr=False)


@dataclass(frozen=True, slots=True)
class Call:
    request: web.Request
    route: Route
    params: Mapping[str, str]
    ip: str
    auth: Signed | None = field(repr=False)

    @property
    def key(self) -> KeySpec:
        assert self.auth is not None  # only signed routes read the key
        return self.auth.key

    @property
    def account(self) -> AccountSpec:
        assert self.auth is not None
        return self.auth.account


class Refused(Exception):
    """Raised inside the checks with the answer to send; never leaves the simulator."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _amount(value: str) -> str:
    try:
        return f"{Decimal(value):.8f}"
    except InvalidOperation:
        return value


class BinanceSim(ExchangeSim):
    name = "binance"
    environments: ClassVar[Mapping[str, str]] = {
        "mainnet": "Binance (api.binance.com, fapi.binance.com)",
        "testnet": "Binance Spot Test Network (testnet.binance.vision)",
        "us": "Binance.US (api.binance.us)",
    }
    permissions: ClassVar[frozenset[str]] = frozenset(perm for _, perm in PERMISSION_FLAGS)
    default_settings: ClassVar[Mapping[str, Any]] = {
        # HTTP statuses the reference marks unverified.
        "http_status_malformed_key": 401,
        "http_status_bad_signature": 400,
        "http_status_account_cannot_trade": 400,
        "http_status_api_keys_locked": 401,
        "http_status_kyc_required": 400,
        "http_status_maintenance": 503,
        # API families whose -2015 message ends in ", request ip: <ip>" (observed on sapi/fapi).
        "invalid_key_ip_suffix_families": ["sapi", "fapi"],
        "timestamp_before_signature": True,
        # recvWindow above 60000: -1131 (ccxt comment) or -1130 (newer docs).
        "recv_window_over_max_code": -1131,
        # apiRestrictions.tradingAuthorityExpirationTime (may be deprecated).
        "trading_authority_expiration_field": True,
        # expires_at of a key WITH an IP whitelist: "deleted" (the key is gone, -2015) or
        # "trading_authority" (like an unrestricted key: only spot trading lapses).
        "ip_restricted_key_expiry": "deleted",
        "banned_answer": "invalid_key",
        "api_disabled_answer": "api_keys_locked",
        # GET /sapi/v1/account/status data for a frozen account (only "Normal" is documented).
        "frozen_account_status": "Frozen",
        # A coin without a deposit address on the account.
        "deposit_address_missing_http_status": 400,
        "deposit_address_missing_code": -4018,
        "deposit_address_missing_msg": "We don't have this asset.",
        "sapi_ip_weight_header": "X-SAPI-USED-IP-WEIGHT-1M",
        "sapi_uid_weight_header": "X-SAPI-USED-UID-WEIGHT-1M",
        # Signed sapi requests also count against the account's UID budget.
        "sapi_uid_accounting": True,
        # After the first 429 of a window, this many further 429s, then the IP is banned (418).
        "ban_after_rejected_requests": 5,
        "ban_initial_s": 120,
        "ban_max_s": 3 * 86400,
        # Which API families each environment serves (the spot testnet has /api only).
        "families_by_environment": {
            "mainnet": ["api", "sapi", "fapi"],
            "testnet": ["api"],
            "us": ["api", "sapi"],
        },
    }
    default_limits: ClassVar[Mapping[str, float]] = {
        "api_ip_weight_per_minute": 6000,
        "fapi_ip_weight_per_minute": 2400,
        "sapi_ip_weight_per_minute": 12000,
        "sapi_uid_weight_per_minute": 180000,
    }
    status_paths: ClassVar[frozenset[str]] = frozenset(
        {"/sapi/v1/system/status", "/api/v3/time", "/fapi/v1/time"}
    )

    def __init__(self, spec: ExchangeSpec, environment: str, *, seed: int = 0) -> None:
        super().__init__(spec, environment, seed=seed)
        for name, choices in SETTING_CHOICES.items():
            if self.setting(name) not in choices:
                raise ScenarioError(
                    f"exchanges.binance.settings.{name}: {self.setting(name)!r} is not one of "
                    f"{', '.join(map(repr, choices))}"
                )
        for account in spec.accounts:
            for key in account.keys:
                self._check_key_format(key)
        self._weights = {family: FixedWindowCounter(MINUTE_S) for family in FAMILIES}
        self._uid_weight = FixedWindowCounter(MINUTE_S)
        self._rejections = FixedWindowCounter(MINUTE_S)
        self._banned_until_ms: dict[str, int] = {}
        self._bans: dict[str, int] = {}
        self._ip_verdicts: dict[tuple[str, tuple[str, ...]], bool] = {}

    @staticmethod
    def _check_key_format(key: KeySpec) -> None:
        where = f"exchanges.binance: key {key.label or key.api_key[:6]!r}"
        for name in ("api_key", "secret", "client_secret"):
            value = getattr(key, name)
            if value is not None and not API_KEY_FORMAT.fullmatch(value):
                # Never echo a secret: name the field and the rule only.
                raise ScenarioError(f"{where}: {name} must be 64 characters A-Z, a-z, 0-9 (Binance's format)")
        if key.passphrase is not None or key.client_passphrase is not None:
            raise ScenarioError(
                f"{where}: Binance keys have no passphrase; remove passphrase/client_passphrase"
            )

    # -- plumbing -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._endpoint(route))

    def _endpoint(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(route, request)

        return handle

    def error(self, cause: str, headers: Mapping[str, str] | None = None, **fmt: Any) -> web.Response:
        err = ERRORS[cause]
        status = self.setting(err.status) if isinstance(err.status, str) else err.status
        code = self.setting(err.code) if isinstance(err.code, str) else err.code
        return json_response({"code": code, "msg": err.msg.format(**fmt)}, status, headers)

    def maintenance_response(self, request: web.Request) -> web.StreamResponse:
        return self.error("sapi_maintenance" if request.path.startswith("/sapi/") else "maintenance")

    def server_error_response(self, request: web.Request) -> web.StreamResponse:
        return self.error("internal_error")

    async def _serve(self, route: Route, request: web.Request) -> web.StreamResponse:
        served = self.setting("families_by_environment").get(self.environment, FAMILIES)
        if route.family not in served:
            raise web.HTTPNotFound()
        query = request.rel_url.raw_query_string
        body = (await request.read()).decode("utf-8", "replace") if request.method == "POST" else ""
        params = dict(parse_qsl(f"{query}&{body}", keep_blank_values=True))
        ip = self.peer_ip(request)
        now_ms = self.now_ms()
        headers: dict[str, str] = {}
        try:
            self._charge_ip(route, ip, route.weight_for(params), now_ms, headers)
            auth = self._authenticate(route, request, ip, query, body, params, now_ms, headers)
            call = Call(request, route, params, ip, auth)
            answer = getattr(self, route.handler)(call)
        except Refused as refused:
            refused.response.headers.update(headers)
            return refused.response
        return json_response(answer, headers=headers)

    def reset_limits(self) -> None:
        """Forget used weight, 429 counts and bans (the admin endpoint's reset-limits)."""
        for counter in (*self._weights.values(), self._uid_weight, self._rejections):
            counter.reset()
        self._banned_until_ms.clear()
        self._bans.clear()

    # -- request weight and bans ----------------------------------------------------------------

    def _charge_ip(self, route: Route, ip: str, weight: int, now_ms: int, headers: dict[str, str]) -> None:
        now_s = now_ms / 1000
        counter = self._weights[route.family]
        header = self.setting("sapi_ip_weight_header") if route.family == "sapi" else "X-MBX-USED-WEIGHT-1M"
        until = self._banned_until_ms.get(ip, 0)
        if now_ms < until:
            headers[header] = str(int(counter.used(ip, now_s)))
            headers["Retry-After"] = str(math.ceil((until - now_ms) / 1000))
            raise Refused(self.error("ip_banned", until=until))
        used = counter.add(ip, weight, now_s)
        headers[header] = str(int(used))
        limit = self.limit(f"{route.family}_ip_weight_per_minute")
        if used <= limit:
            return
        rejected = self._rejections.add(ip, 1, now_s)
        if rejected > 1 + self.setting("ban_after_rejected_requests"):
            # Repeat offenders get longer bans: 2 minutes doubling up to 3 days (doc range).
            self._bans[ip] = offences = self._bans.get(ip, 0) + 1
            duration_s = min(self.setting("ban_initial_s") * 2 ** (offences - 1), self.setting("ban_max_s"))
            until = now_ms + int(duration_s * 1000)
            self._banned_until_ms[ip] = until
            headers["Retry-After"] = str(math.ceil(duration_s))
            raise Refused(self.error("ip_banned", until=until))
        headers["Retry-After"] = str(math.ceil(counter.seconds_to_reset(now_s)))
        raise Refused(self.error("too_much_weight", limit=f"{limit:g}"))

    def _charge_uid(
        self, route: Route, account: AccountSpec, weight: int, now_ms: int, h: dict[str, str]
    ) -> None:
        if route.family != "sapi" or not self.setting("sapi_uid_accounting"):
            return
        now_s = now_ms / 1000
        used = self._uid_weight.add(account.id, weight, now_s)
        h[self.setting("sapi_uid_weight_header")] = str(int(used))
        limit = self.limit("sapi_uid_weight_per_minute")
        if used > limit:
            h["Retry-After"] = str(math.ceil(self._uid_weight.seconds_to_reset(now_s)))
            raise Refused(self.error("too_much_weight", limit=f"{limit:g}"))

    # -- authentication -----------------------------------------------------------------------

    def _invalid_key(self, route: Route, ip: str) -> Refused:
        if route.family in self.setting("invalid_key_ip_suffix_families"):
            msg = ERRORS["invalid_key"].msg.removesuffix(".") + f", request ip: {ip}"
            return Refused(json_response({"code": -2015, "msg": msg}, 401))
        return Refused(self.error("invalid_key"))

    def _authenticate(
        self,
        route: Route,
        request: web.Request,
        ip: str,
        query: str,
        body: str,
        params: Mapping[str, str],
        now_ms: int,
        headers: dict[str, str],
    ) -> Signed | None:
        if not route.signed:
            return None
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if not API_KEY_FORMAT.fullmatch(api_key):
            raise Refused(self.error("key_format"))
        found = self.lookup(api_key)
        now = self.now()
        if found is None or found.other_environment or not found.key.enabled:
            raise self._invalid_key(route, ip)
        key, account = found.key, found.account
        if self._key_gone(key, now) or not self._allows_ip(key, ip):
            raise self._invalid_key(route, ip)
        # A key's demo clock offset shifts the server clock only for requests signed with it.
        server_ms = now_ms + key.clock_offset_ms
        if self.setting("timestamp_before_signature"):
            self._check_timestamp(params, server_ms)
            self._check_signature(key, query, body)
        else:
            self._check_signature(key, query, body)
            self._check_timestamp(params, server_ms)
        self._charge_uid(route, account, route.weight_for(params), now_ms, headers)
        self._check_account(route, account, ip)
        if route.permission and route.permission not in self._effective_permissions(key, account, now):
            raise self._invalid_key(route, ip)
        return Signed(key, account)

    def _check_timestamp(self, params: Mapping[str, str], server_ms: int) -> None:
        raw = params.get("timestamp", "")
        if not raw:
            raise Refused(self.error("mandatory_parameter", name="timestamp"))
        if not _DIGITS.fullmatch(raw):
            raise Refused(self.error("illegal_characters", name="timestamp", legal="^[0-9]{1,20}$"))
        timestamp = float(raw)
        if timestamp >= 1e14:  # microseconds (doc: timestamp in ms or µs)
            timestamp /= 1000
        recv_window = RECV_WINDOW_DEFAULT_MS
        raw_window = params.get("recvWindow")
        if raw_window:
            if not _RECV_WINDOW.fullmatch(raw_window):
                raise Refused(self.error("invalid_parameter", name="recvWindow"))
            recv_window = float(raw_window)
            if recv_window > RECV_WINDOW_MAX_MS:
                if self.setting("recv_window_over_max_code") == -1130:
                    raise Refused(self.error("invalid_parameter", name="recvWindow"))
                raise Refused(self.error("recv_window_too_large"))
        # The doc's rule: process if timestamp < serverTime + 1s and serverTime - timestamp <= recvWindow.
        if timestamp >= server_ms + FUTURE_TOLERANCE_MS:
            raise Refused(self.error("timestamp_ahead"))
        if server_ms - timestamp > recv_window:
            raise Refused(self.error("timestamp_outside"))

    def _check_signature(self, key: KeySpec, query: str, body: str) -> None:
        total_params, signature = split_signature(query, body)
        if not signature:
            raise Refused(self.error("mandatory_parameter", name="signature"))
        if not verify_hmac_signature(key.secret, total_params, signature):
            raise Refused(self.error("bad_signature"))

    def _check_account(self, route: Route, account: AccountSpec, ip: str) -> None:
        # Real Binance decides the region by the caller's IP; the scenario models it per account.
        if account.region_restricted:
            raise Refused(self.error("region_restricted"))
        if account.banned:
            if self.setting("banned_answer") == "invalid_key":
                raise self._invalid_key(route, ip)
            raise Refused(self.error("not_authorized"))
        if account.api_disabled:
            if self.setting("api_disabled_answer") == "invalid_key":
                raise self._invalid_key(route, ip)
            raise Refused(self.error("api_keys_locked"))
        if account.kyc_required and route.family == "sapi":
            raise Refused(self.error("kyc_required"))

    def _allows_ip(self, key: KeySpec, ip: str) -> bool:
        if not key.ip_whitelist:
            return True
        # Parsing the whitelist is the costliest step of a request; the verdict is cached by
        # the whitelist's content, so an admin change to the whitelist is seen at once.
        cache_key = (ip, tuple(key.ip_whitelist))
        verdict = self._ip_verdicts.get(cache_key)
        if verdict is None:
            if len(self._ip_verdicts) > 4096:
                self._ip_verdicts.clear()
            verdict = self._ip_verdicts[cache_key] = key.allows_ip(ip)
        return verdict

    # -- key state ------------------------------------------------------------------------------

    def _key_gone(self, key: KeySpec, now: datetime) -> bool:
        """A whitelisted key past expires_at no longer exists (setting ip_restricted_key_expiry)."""
        return (
            bool(key.ip_whitelist)
            and key.is_expired(now)
            and self.setting("ip_restricted_key_expiry") == "deleted"
        )

    def _has_trading_authority_expiry(self, key: KeySpec) -> bool:
        """expires_at is the end of spot trading authority (the 2021 rule for keys without whitelist)."""
        return key.expires_at is not None and (
            not key.ip_whitelist or self.setting("ip_restricted_key_expiry") == "trading_authority"
        )

    def _effective_permissions(self, key: KeySpec, account: AccountSpec, now: datetime) -> set[str]:
        perms = set(key.permissions)
        if self._has_trading_authority_expiry(key) and key.is_expired(now):
            perms.discard("spot_and_margin_trading")
        if not account.futures_opened:
            # Doc: the Futures API cannot be used if the key predates the futures account.
            perms.discard("futures")
        if not key.ip_whitelist:
            perms.discard("withdrawals")  # doc: withdrawals require an IP restriction
        return perms

    # -- endpoints --------------------------------------------------------------------------------

    def _ping(self, call: Call) -> Any:
        return {}

    def _time(self, call: Call) -> Any:
        return {"serverTime": self.now_ms()}

    def _system_status(self, call: Call) -> Any:
        if self.spec.in_maintenance(self.now()):
            return {"status": 1, "msg": "system_maintenance"}
        return {"status": 0, "msg": "normal"}

    def _api_restrictions(self, call: Call) -> Any:
        key = call.key
        perms = self._effective_permissions(key, call.account, self.now())
        body: dict[str, Any] = {"ipRestrict": bool(key.ip_whitelist), "createTime": _ms(key.created_at)}
        body.update((flag, perm in perms) for flag, perm in PERMISSION_FLAGS)
        if (
            self.setting("trading_authority_expiration_field")
            and key.expires_at is not None
            and "spot_and_margin_trading" in key.permissions
            and self._has_trading_authority_expiry(key)
        ):
            # Kept after it passes, so a client can tell a lapsed authority from one never granted.
            body["tradingAuthorityExpirationTime"] = _ms(key.expires_at)
        return body

    def _account(self, call: Call) -> Any:
        account = call.account
        omit_zero = call.params.get("omitZeroBalances", "false").lower() == "true"
        balances = [
            {"asset": asset, "free": _amount(free), "locked": "0.00000000"}
            for asset, free in account.balances.items()
            if not (omit_zero and _amount(free) == "0.00000000")
        ]
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": "0.00100000",
                "taker": "0.00100000",
                "buyer": "0.00000000",
                "seller": "0.00000000",
            },
            "canTrade": not account.frozen,
            "canWithdraw": not account.frozen,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": _ms(call.key.created_at),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": int(account.id) if account.id.isdigit() else account.id,
        }

    def _account_status(self, call: Call) -> Any:
        return {"data": self.setting("frozen_account_status") if call.account.frozen else "Normal"}

    def _api_trading_status(self, call: Call) -> Any:
        return {
            "data": {
                "isLocked": False,
                "plannedRecoverTime": 0,
                "triggerCondition": {"GCR": 150, "IFER": 150, "UFR": 300},
                "indicators": {},
                "updateTime": 0,
            }
        }

    def _account_info(self, call: Call) -> Any:
        return {
            "vipLevel": 0,
            "isMarginEnabled": True,
            "isFutureEnabled": call.account.futures_opened,
            "isOptionsEnabled": False,
            "isPortfolioMarginRetailEnabled": False,
        }

    def _require_symbol(self, call: Call) -> str:
        symbol = call.params.get("symbol", "")
        if not symbol:
            raise Refused(self.error("mandatory_parameter", name="symbol"))
        if not _SYMBOL.fullmatch(symbol):
            raise Refused(self.error("illegal_characters", name="symbol", legal="^[A-Z0-9-_.]{1,20}$"))
        return symbol

    def _my_trades(self, call: Call) -> Any:
        self._require_symbol(call)
        return []  # scenarios carry no trade history; an empty list is Binance's answer for none

    def _deposit_address(self, call: Call) -> Any:
        coin = call.params.get("coin", "")
        if not coin:
            raise Refused(self.error("mandatory_parameter", name="coin"))
        addresses = {c.upper(): a for c, a in call.account.deposit_addresses.items()}
        address = addresses.get(coin.upper())
        if address is None:
            raise Refused(
                self.error("deposit_address_missing", msg=self.setting("deposit_address_missing_msg"))
            )
        return {"address": address, "coin": coin.upper(), "tag": "", "url": ""}

    def _order_test(self, call: Call) -> Any:
        """Validates like a real order and places nothing (doc: not sent to the matching engine)."""
        self._require_symbol(call)
        for name in ("side", "type"):
            if not call.params.get(name):
                raise Refused(self.error("mandatory_parameter", name=name))
        if call.params["side"] not in ("BUY", "SELL"):
            raise Refused(self.error("invalid_side"))
        order_type = call.params["type"]
        if order_type not in ORDER_TYPES:
            raise Refused(self.error("invalid_order_type"))
        for name in ORDER_TYPES[order_type]:
            if not call.params.get(name):
                raise Refused(self.error("mandatory_parameter", name=name))
        if call.account.frozen:
            raise Refused(self.error("account_cannot_trade"))
        if call.params.get("computeCommissionRates", "false").lower() == "true":
            return {
                "standardCommissionForOrder": {"maker": "0.00100000", "taker": "0.00100000"},
                "taxCommissionForOrder": {"maker": "0.00000000", "taker": "0.00000000"},
                "discount": {
                    "enabledForAccount": True,
                    "enabledForSymbol": True,
                    "discountAsset": "BNB",
                    "discount": "0.25000000",
                },
            }
        return {}

    def _futures_account_v3(self, call: Call) -> Any:
        zero = "0.00000000"
        return {
            **{name: zero for name in FUTURES_TOTALS},
            "assets": [
                {
                    "asset": "USDT",
                    **{name: zero for name in FUTURES_ASSET_FIELDS},
                    "marginAvailable": True,
                    "updateTime": 0,
                }
            ],
            "positions": [],
        }

    def _futures_account_v2(self, call: Call) -> Any:
        trade = not call.account.frozen
        head = {"feeTier": 0, "feeBurn": False, "canTrade": trade, "canDeposit": True, "canWithdraw": trade}
        return {
            **head,
            "updateTime": 0,
            "multiAssetsMargin": False,
            "tradeGroupId": -1,
            **self._futures_account_v3(call),
        }


# Parameters a test order of each type must carry besides symbol, side and type.
ORDER_TYPES: Mapping[str, tuple[str, ...]] = {
    "LIMIT": ("timeInForce", "quantity", "price"),
    "MARKET": (),
    "STOP_LOSS": ("quantity",),
    "STOP_LOSS_LIMIT": ("timeInForce", "quantity", "price"),
    "TAKE_PROFIT": ("quantity",),
    "TAKE_PROFIT_LIMIT": ("timeInForce", "quantity", "price"),
    "LIMIT_MAKER": ("quantity", "price"),
}
FUTURES_TOTALS = (
    "totalInitialMargin", "totalMaintMargin", "totalWalletBalance", "totalUnrealizedProfit",
    "totalMarginBalance", "totalPositionInitialMargin", "totalOpenOrderInitialMargin",
    "totalCrossWalletBalance", "totalCrossUnPnl", "availableBalance", "maxWithdrawAmount",
)  # fmt: skip
FUTURES_ASSET_FIELDS = (
    "walletBalance", "unrealizedProfit", "marginBalance", "maintMargin", "initialMargin",
    "positionInitialMargin", "openOrderInitialMargin", "crossWalletBalance", "crossUnPnl",
    "availableBalance", "maxWithdrawAmount",
)  # fmt: skip

SIMULATOR = BinanceSim
