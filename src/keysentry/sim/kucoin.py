"""KuCoin simulator: the spot (api.kucoin.com) and futures (api-futures.kucoin.com) REST families.

Written from shared/reference/exchange-api.md section 4, KuCoin's legacy docs and the universal SDK's
endpoint tables; docs/simulators/kucoin.md explains every choice. Clients replace scheme and host of
every API family with one base URL, so both hosts are served here under their real paths.

A signed request is checked in this order (each step answers with KuCoin's own code):
headers (400001) -> timestamp (400002) -> key (400003) -> signature (400005) -> passphrase (400004)
-> IP whitelist (400006) -> account state (411100 / 400700) -> permission (400007)
-> KYC, region, futures account (400303 / 400500 / 400007) -> request weight (429000).
The signature is checked before the passphrase by default: a v2/v3 passphrase is HMAC'd with the
secret, so with the passphrase first a wrong secret would always read as a wrong passphrase.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aiohttp import web
from multidict import MultiMapping

from keysentry.sim.base import ExchangeSim, json_response
from keysentry.sim.scenario import AccountSpec, ExchangeSpec, KeySpec, ScenarioError

__all__ = ["SIMULATOR", "KucoinSim", "passphrase_header", "prehash", "sign", "verify_signature"]

# -- the signing scheme, as the documentation states it (never a client library's signer) ---------------


def prehash(timestamp: str, method: str, endpoint: str, body: str) -> str:
    """timestamp + METHOD + endpoint (with ?query for GET/DELETE) + body (JSON text or "")."""
    return f"{timestamp}{method.upper()}{endpoint}{body}"


def sign(secret: str, message: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()


def passphrase_header(secret: str, passphrase: str, key_version: int) -> str:
    """Key version 1 sends the passphrase as is; versions 2 and 3 send Base64(HMAC-SHA256(secret, it))."""
    return passphrase if key_version < 2 else sign(secret, passphrase)


def verify_signature(secret: str, timestamp: str, method: str, endpoint: str, body: str, given: str) -> bool:
    expected = sign(secret, prehash(timestamp, method, endpoint, body))
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


# -- declarative tables ---------------------------------------------------------------------------------

SPOT, FUTURES, MANAGEMENT, PUBLIC = "spot", "futures", "management", "public"
TRADE_PERMISSIONS: Final = frozenset({"Spot", "Margin", "Futures"})
TIMESTAMP_WINDOW_MS: Final = 5000  # doc: "Time differs from server time by more than 5 seconds"
API_KEY_RE: Final = re.compile(r"[0-9a-f]{24}")
SECRET_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PASSPHRASE_RE: Final = re.compile(r"[\x20-\x7e]{7,32}")
REQUIRED_HEADERS: Final = ("KC-API-KEY", "KC-API-SIGN", "KC-API-TIMESTAMP", "KC-API-PASSPHRASE")


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    msg: str
    # An int, or the name of the setting holding the HTTP status (the reference leaves most unverified).
    status: int | str
    msg_setting: str | None = None


ERRORS: Final[Mapping[str, ErrorSpec]] = {
    "missing_header": ErrorSpec(
        "400001",
        "Any of KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP, KC-API-PASSPHRASE is missing in your request header.",
        "http_status_missing_header",
    ),
    "invalid_timestamp": ErrorSpec(
        "400002",
        "KC-API-TIMESTAMP Invalid -- Time differs from server time by more than 5 seconds",
        "http_status_invalid_timestamp",
    ),
    "key_not_exists": ErrorSpec("400003", "KC-API-KEY not exists", "http_status_key_not_exists"),
    "passphrase_error": ErrorSpec("400004", "KC-API-PASSPHRASE error", "http_status_passphrase_error"),
    "signature_error": ErrorSpec(
        "400005", "Signature error -- Please check your signature", "http_status_signature_error"
    ),
    "ip_not_allowed": ErrorSpec("400006", "", "http_status_ip_not_allowed", "ip_not_allowed_message"),
    "access_denied": ErrorSpec(
        "400007",
        "Access Denied -- Your API key does not have sufficient permissions to access the URI",
        "http_status_access_denied",
    ),
    "user_frozen": ErrorSpec(
        "411100", "User is frozen -- Please contact us via support center", "http_status_user_frozen"
    ),
    "risk_restricted": ErrorSpec(
        "400700",
        "Transaction restricted, there's a risk problem in your account",
        "http_status_risk_restricted",
    ),
    "kyc_required": ErrorSpec(
        "400303",
        "To enjoy the full range of our products and services, we kindly request you complete "
        "the identity verification process.",
        "http_status_kyc_required",
    ),
    "region_restricted": ErrorSpec(
        "400500",
        "Your located country/region is currently not supported for the trading of this token",
        "http_status_region_restricted",
    ),
    "parameter_error": ErrorSpec(
        "400100",
        "Parameter Error -- You tried to access the resource with invalid parameters",
        "http_status_parameter_error",
    ),
    "unsupported_media_type": ErrorSpec("415000", "Unsupported Media Type", 415),
    "not_found": ErrorSpec("404000", "URL Not Found -- The requested resource could not be found", 404),
    "rate_limited": ErrorSpec("429000", "", 429, "rate_limit_message"),
    "maintenance": ErrorSpec(
        "", "Service Unavailable -- We're temporarily offline for maintenance. Please try again later.", 503
    ),
    "server_error": ErrorSpec(
        "500000", "Internal Server Error -- We had a problem with our server. Try again later.", 500
    ),
}

# Which error an account flag raises, per setting value.
BANNED_CAUSE: Final = {"400700": "risk_restricted", "411100": "user_frozen"}
API_DISABLED_CAUSE: Final = {"400007": "access_denied", "411100": "user_frozen"}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: str  # name of the KucoinSim method building `data`
    permission: str | None  # None: public, no signature
    pool: str  # resource pool charged (per UID; public per IP)
    weight: int
    kind: str = "read"  # read | deposit | trade | futures | futures_trade: which account rules apply


# Permissions, pools and weights from the universal SDK's endpoint tables (ccxt costs agree).
ROUTES: Final = (
    Route("GET", "/api/v1/timestamp", "_server_time", None, PUBLIC, 3),
    Route("GET", "/api/v1/status", "_system_status", None, PUBLIC, 3),
    Route("GET", "/api/v1/user/api-key", "_api_key_info", "General", MANAGEMENT, 20),
    Route("GET", "/api/v1/accounts", "_accounts", "General", MANAGEMENT, 5),
    Route("GET", "/api/v1/hf/accounts/opened", "_hf_opened", "General", SPOT, 30),
    Route("GET", "/api/v1/fills", "_fills", "General", SPOT, 10),
    Route("GET", "/api/v1/hf/fills", "_hf_fills", "General", SPOT, 2),
    Route("GET", "/api/v3/deposit-addresses", "_deposit_addresses_v3", "General", MANAGEMENT, 5, "deposit"),
    Route("GET", "/api/v2/deposit-addresses", "_deposit_addresses_v2", "General", MANAGEMENT, 5, "deposit"),
    Route("GET", "/api/v1/deposit-addresses", "_deposit_address_v1", "General", MANAGEMENT, 5, "deposit"),
    Route("POST", "/api/v1/hf/orders/test", "_order_test_hf", "Spot", SPOT, 1, "trade"),
    Route("POST", "/api/v1/orders/test", "_order_test", "Spot", SPOT, 2, "trade"),
    Route("GET", "/api/v1/account-overview", "_futures_account", "Futures", FUTURES, 5, "futures"),
)
# The futures host has the same path; a contract symbol (XBTUSDTM, no dash) selects it.
FUTURES_ORDER_TEST: Final = Route(
    "POST", "/api/v1/orders/test", "_order_test", "Futures", FUTURES, 2, "futures_trade"
)

# Setting values that are a choice, checked when the simulator starts.
CHOICES: Final[Mapping[str, tuple[Any, ...]]] = {
    "expired_key_behaviour": ("not_exists", "trade_disabled"),
    "banned_code": tuple(BANNED_CAUSE),
    "api_disabled_code": tuple(API_DISABLED_CAUSE),
    "kyc_required_scope": ("trade_and_deposit", "all"),
    "region_restricted_scope": ("trade", "all"),
    "futures_not_opened": ("access_denied", "empty_account"),
    "ip_whitelist_rendering": ("masked", "plain"),
    "empty_ip_whitelist": ("empty_string", "null", "omit"),
    "maintenance_status": ("close", "cancelonly"),
    "passphrase_before_signature": (False, True),
    "send_retry_after": (False, True),
}


def _setting_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be used for setting `name`, or None when it can."""
    allowed = CHOICES.get(name)
    if allowed is not None and (value not in allowed or type(value) is not type(allowed[0])):
        return f"{value!r} is not one of {', '.join(map(repr, allowed))}"
    if name.startswith("http_status_") and not (type(value) is int and 100 <= value <= 599):
        return f"{value!r} is not an HTTP status"
    if name in ("maintenance_code", "ip_not_allowed_message", "rate_limit_message") and not isinstance(
        value, str
    ):
        return f"{value!r} is not text"
    return None


class _Reject(Exception):
    """Ends a request with one of ERRORS; raised only on error paths."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@dataclass(slots=True)
class _Call:
    key: KeySpec
    account: AccountSpec
    permissions: frozenset[str]
    query: MultiMapping[str]
    body: dict[str, Any]


class _Pools:
    """Weight per (caller, pool) in a window that starts at the caller's first request (KuCoin's rule)."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: dict[tuple[str, ...], list[float]] = {}

    def charge(
        self, who: tuple[str, ...], quota: float, weight: float, window_s: float
    ) -> tuple[bool, float, float]:
        """Charge `weight` if it fits; return (allowed, remaining, seconds until the window resets)."""
        now = time.monotonic()
        w = self._windows.get(who)
        if w is None or now >= w[0] + window_s:
            w = self._windows[who] = [now, 0.0]
        allowed = w[1] + weight <= quota
        if allowed:
            w[1] += weight
        return allowed, max(0.0, quota - w[1]), w[0] + window_s - now


def _mask_ip(entry: str) -> str:
    """KuCoin shows whitelisted IPs masked, e.g. 203.0.113.154 -> 203.**.154."""
    addr, sep, prefix = entry.partition("/")
    parts = addr.split(".") if "." in addr else addr.split(":")
    joiner = "." if "." in addr else ":"
    masked = f"{parts[0]}{joiner}**{joiner}{parts[-1]}" if len(parts) > 2 else addr
    return masked + sep + prefix


def _chain_of(address: str) -> tuple[str, str]:
    """(chainId, chainName) guessed from the address shape, enough for a deposit-address answer."""
    if address.startswith("0x"):
        return "eth", "ERC20"
    if address.startswith("T"):
        return "trx", "TRC20"
    return "btc", "BTC"


def _hex_id(*parts: str) -> str:
    return hashlib.sha1(":".join(parts).encode()).hexdigest()[:24]  # noqa: S324 - an id, not a digest


class KucoinSim(ExchangeSim):
    name = "kucoin"
    # KuCoin retired its sandbox (sandbox.kucoin.com); mainnet is the only environment left.
    environments: ClassVar[Mapping[str, str]] = {"mainnet": "KuCoin (api.kucoin.com, api-futures.kucoin.com)"}
    # "Transfer" is the withdrawal permission (the web page calls it "Withdrawal"); InnerTransfer is
    # KuCoin's "Flex Transfer" between the user's own accounts.
    permissions: ClassVar[frozenset[str]] = frozenset(
        {"General", "Spot", "Margin", "Futures", "InnerTransfer", "Transfer", "Earn"}
    )
    default_settings: ClassVar[Mapping[str, Any]] = {
        "http_status_missing_header": 401,
        "http_status_invalid_timestamp": 401,
        "http_status_key_not_exists": 401,
        "http_status_passphrase_error": 401,
        "http_status_signature_error": 401,
        "http_status_ip_not_allowed": 401,
        "http_status_access_denied": 403,
        "http_status_user_frozen": 403,
        "http_status_risk_restricted": 403,
        "http_status_kyc_required": 400,
        "http_status_region_restricted": 400,
        "http_status_parameter_error": 400,
        "ip_not_allowed_message": "The IP address is not in the API whitelist",
        "rate_limit_message": (
            "Too Many Requests -- Trigger the total traffic limit of this interface of KuCoin server, "
            "you can retry the request"
        ),
        "send_retry_after": False,
        "maintenance_code": "503000",
        "maintenance_status": "close",
        "passphrase_before_signature": False,
        "expired_key_behaviour": "not_exists",
        "banned_code": "400700",
        "api_disabled_code": "400007",
        "kyc_required_scope": "trade_and_deposit",
        "region_restricted_scope": "trade",
        "futures_not_opened": "access_denied",
        "ip_whitelist_rendering": "masked",
        "empty_ip_whitelist": "empty_string",
    }
    # VIP0 quotas per 30 s window (docs-new "Rate Limit").
    default_limits: ClassVar[Mapping[str, float]] = {
        "spot_quota": 4000,
        "futures_quota": 2000,
        "management_quota": 2000,
        "public_quota": 2000,
        "window_s": 30,
    }
    status_paths: ClassVar[frozenset[str]] = frozenset({"/api/v1/status", "/api/v1/timestamp"})

    def __init__(self, spec: ExchangeSpec, environment: str, *, seed: int = 0) -> None:
        super().__init__(spec, environment, seed=seed)
        self._check_settings(spec.settings)
        self._check_key_formats(spec)
        self._pools = _Pools()

    # -- start-up checks ---------------------------------------------------------------------------------

    def _check_settings(self, given: Mapping[str, Any]) -> None:
        for name, value in given.items():
            problem = _setting_problem(name, value)
            if problem:
                raise ScenarioError(f"exchanges.kucoin.settings.{name}: {problem}")

    def setting(self, name: str) -> Any:
        # The admin endpoint can set any value at run time; one this simulator cannot use falls back
        # to the default instead of failing every request.
        value = super().setting(name)
        return self.default_settings[name] if _setting_problem(name, value) else value

    def reset_limits(self) -> None:
        self._pools = _Pools()

    def _check_key_formats(self, spec: ExchangeSpec) -> None:
        # A key off KuCoin's formats could never authenticate; say so before anything listens.
        for account in spec.accounts:
            for key in account.keys:
                where = f"exchanges.kucoin: key {key.label or key.api_key[:6]!r}"
                if not API_KEY_RE.fullmatch(key.api_key):
                    raise ScenarioError(f"{where}: api_key must be 24 lowercase hex characters")
                for field, value in (("secret", key.secret), ("client_secret", key.client_secret)):
                    if value is not None and not SECRET_RE.fullmatch(value):
                        raise ScenarioError(f"{where}: {field} must be a lowercase UUID (8-4-4-4-12 hex)")
                for field, value in (
                    ("passphrase", key.passphrase),
                    ("client_passphrase", key.client_passphrase),
                ):
                    if (value is not None or field == "passphrase") and not PASSPHRASE_RE.fullmatch(
                        value or ""
                    ):
                        raise ScenarioError(f"{where}: {field} must be 7-32 printable ASCII characters")

    # -- responses ---------------------------------------------------------------------------------------

    def _error(self, cause: str, headers: Mapping[str, str] | None = None) -> web.Response:
        spec = ERRORS[cause]
        status = spec.status if isinstance(spec.status, int) else int(self.setting(spec.status))
        msg = str(self.setting(spec.msg_setting)) if spec.msg_setting else spec.msg
        return json_response({"code": spec.code, "msg": msg}, status=status, headers=headers)

    def maintenance_response(self, request: web.Request) -> web.StreamResponse:
        spec = ERRORS["maintenance"]
        return json_response({"code": str(self.setting("maintenance_code")), "msg": spec.msg}, status=503)

    def server_error_response(self, request: web.Request) -> web.StreamResponse:
        return self._error("server_error")

    # -- routing -----------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._endpoint(route))
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return self._error("not_found")

    def _endpoint(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        build: Callable[..., Any] = getattr(self, route.handler)

        async def endpoint(request: web.Request) -> web.StreamResponse:
            if route.permission is None:
                return self._charged(route, ("ip", self.peer_ip(request)), build)
            body = await request.text() if request.can_read_body else ""
            try:
                call, effective = self._authorize(request, route, body)
            except _Reject as r:
                return self._error(r.cause)
            return self._charged(effective, ("uid", call.account.id), lambda: build(call))

        return endpoint

    def _charged(self, route: Route, who: tuple[str, str], build: Callable[[], Any]) -> web.StreamResponse:
        quota = self.limit(f"{route.pool}_quota")
        allowed, remaining, reset_s = self._pools.charge(
            (*who, route.pool), quota, route.weight, self.limit("window_s")
        )
        headers = {
            "gw-ratelimit-limit": str(int(quota)),
            "gw-ratelimit-remaining": str(int(remaining)),
            "gw-ratelimit-reset": str(max(0, int(reset_s * 1000))),
        }
        if not allowed:
            if self.setting("send_retry_after"):
                headers["Retry-After"] = str(max(1, int(reset_s + 0.999)))
            return self._error("rate_limited", headers)
        try:
            data = build()
        except _Reject as r:
            return self._error(r.cause, headers)
        return json_response({"code": "200000", "data": data}, headers=headers)

    # -- authentication and authorisation ----------------------------------------------------------------

    def _authorize(self, request: web.Request, route: Route, body: str) -> tuple[_Call, Route]:
        h = request.headers
        values = [h.get(name, "") for name in REQUIRED_HEADERS]
        if not all(values):
            raise _Reject("missing_header")
        api_key, signature, timestamp, passphrase = values
        found = self.lookup(api_key) if API_KEY_RE.fullmatch(api_key) else None
        # A key's demo clock offset applies to requests signed with it (clock_skew without touching the host).
        server_ms = self.now_ms() + (found.key.clock_offset_ms if found else 0)
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or abs(server_ms - int(timestamp)) > TIMESTAMP_WINDOW_MS
        ):
            raise _Reject("invalid_timestamp")
        if found is None or found.other_environment or not found.key.enabled:
            raise _Reject("key_not_exists")
        key, account = found.key, found.account
        expired = key.is_expired(self.now())
        if expired and self.setting("expired_key_behaviour") == "not_exists":
            raise _Reject("key_not_exists")  # KuCoin deletes keys instead of expiring them
        signature_ok = verify_signature(
            key.secret, timestamp, request.method, request.raw_path, body, signature
        )
        passphrase_ok = hmac.compare_digest(
            passphrase_header(key.secret, key.passphrase or "", key.key_version).encode(),
            passphrase.encode("utf-8", "replace"),
        )
        checks = [("signature_error", signature_ok), ("passphrase_error", passphrase_ok)]
        if self.setting("passphrase_before_signature"):
            checks.reverse()
        for cause, ok in checks:
            if not ok:
                raise _Reject(cause)
        if not key.allows_ip(self.peer_ip(request)):
            raise _Reject("ip_not_allowed")
        if account.frozen:
            raise _Reject("user_frozen")
        if account.banned:
            raise _Reject(BANNED_CAUSE[self.setting("banned_code")])
        if account.api_disabled:
            raise _Reject(API_DISABLED_CAUSE[self.setting("api_disabled_code")])

        parsed = self._parse_body(request, body)
        if route.path == FUTURES_ORDER_TEST.path and "-" not in str(parsed.get("symbol", "-")):
            route = FUTURES_ORDER_TEST
        permissions = frozenset(key.permissions)
        if expired:  # expired_key_behaviour == "trade_disabled": the key stays, its trade rights go
            permissions -= TRADE_PERMISSIONS
        if route.permission not in permissions:
            raise _Reject("access_denied")
        self._account_rules(account, route)
        return _Call(key, account, permissions, request.query, parsed), route

    def _parse_body(self, request: web.Request, body: str) -> dict[str, Any]:
        if not body:
            return {}
        if request.content_type != "application/json":
            raise _Reject("unsupported_media_type")
        try:
            parsed = json.loads(body)
        except ValueError:
            raise _Reject("parameter_error") from None
        if not isinstance(parsed, dict):
            raise _Reject("parameter_error")
        return parsed

    def _account_rules(self, account: AccountSpec, route: Route) -> None:
        kyc_kinds = {"trade", "futures_trade", "deposit"}
        if account.kyc_required and (self.setting("kyc_required_scope") == "all" or route.kind in kyc_kinds):
            raise _Reject("kyc_required")
        region_kinds = {"trade", "futures_trade"}
        if account.region_restricted and (
            self.setting("region_restricted_scope") == "all" or route.kind in region_kinds
        ):
            raise _Reject("region_restricted")
        if (
            route.kind.startswith("futures")
            and not account.futures_opened
            and (route.kind == "futures_trade" or self.setting("futures_not_opened") == "access_denied")
        ):
            raise _Reject("access_denied")

    # -- public endpoints --------------------------------------------------------------------------------

    def _server_time(self) -> int:
        return self.now_ms()

    def _system_status(self) -> dict[str, str]:
        if self.spec.in_maintenance(self.now()):
            return {"status": str(self.setting("maintenance_status")), "msg": "System maintenance"}
        return {"status": "open", "msg": ""}

    # -- private endpoints -------------------------------------------------------------------------------

    def _api_key_info(self, call: _Call) -> dict[str, Any]:
        key, account = call.key, call.account
        info: dict[str, Any] = {
            "remark": key.label,
            "apiKey": key.api_key,
            "apiVersion": key.key_version,
            # The key's own order; rights an expired key lost are not shown.
            "permission": ",".join(p for p in key.permissions if p in call.permissions),
        }
        if key.ip_whitelist:
            plain = self.setting("ip_whitelist_rendering") == "plain"
            info["ipWhitelist"] = ",".join(ip if plain else _mask_ip(ip) for ip in key.ip_whitelist)
        elif (empty := self.setting("empty_ip_whitelist")) != "omit":
            info["ipWhitelist"] = "" if empty == "empty_string" else None
        info["createdAt"] = int(key.created_at.timestamp() * 1000)
        info["uid"] = int(account.id) if account.id.isdigit() else account.id
        info["isMaster"] = True
        return info

    def _accounts(self, call: _Call) -> list[dict[str, str]]:
        currency, kind = call.query.get("currency"), call.query.get("type")
        if kind not in (None, "trade"):
            return []  # balances live in the trade account
        return [
            {
                "id": _hex_id(call.account.id, cur, "trade"),
                "currency": cur,
                "type": "trade",
                "balance": amount,
                "available": amount,
                "holds": "0",
            }
            for cur, amount in call.account.balances.items()
            if currency in (None, cur)
        ]

    def _hf_opened(self, call: _Call) -> bool:
        return True

    def _fills(self, call: _Call) -> dict[str, Any]:
        return {"currentPage": 1, "pageSize": 50, "totalNum": 0, "totalPage": 0, "items": []}

    def _hf_fills(self, call: _Call) -> dict[str, Any]:
        if not call.query.get("symbol"):
            raise _Reject("parameter_error")  # symbol is mandatory on the HF endpoint
        return {"items": [], "lastId": 0}

    def _addresses(self, call: _Call) -> list[tuple[str, str, str, str]]:
        currency = call.query.get("currency")
        if not currency:
            raise _Reject("parameter_error")
        address = call.account.deposit_addresses.get(currency.upper())
        if address is None:
            return []
        chain_id, chain_name = _chain_of(address)
        wanted = call.query.get("chain")
        return [] if wanted not in (None, chain_id) else [(currency.upper(), address, chain_id, chain_name)]

    def _deposit_addresses_v3(self, call: _Call) -> list[dict[str, Any]]:
        return [
            {
                "address": address,
                "memo": "",
                "chainId": chain_id,
                "to": "MAIN",
                "expirationDate": 0,
                "currency": cur,
                "contractAddress": "",
                "chainName": chain_name,
            }
            for cur, address, chain_id, chain_name in self._addresses(call)
        ]

    def _deposit_addresses_v2(self, call: _Call) -> list[dict[str, Any]]:
        return [
            {
                "address": address,
                "memo": "",
                "chain": chain_name,
                "chainId": chain_id,
                "to": "MAIN",
                "currency": cur,
                "contractAddress": "",
            }
            for cur, address, chain_id, chain_name in self._addresses(call)
        ]

    def _deposit_address_v1(self, call: _Call) -> dict[str, Any] | None:
        found = self._deposit_addresses_v2(call)
        return found[0] if found else None

    def _order_test_hf(self, call: _Call) -> dict[str, Any]:
        return self._validated_order(call.body, needs_client_oid=False)

    def _order_test(self, call: _Call) -> dict[str, Any]:
        return self._validated_order(call.body, needs_client_oid=True)

    @staticmethod
    def _validated_order(body: dict[str, Any], *, needs_client_oid: bool) -> dict[str, Any]:
        """Check the order as the exchange would, place nothing, answer with a fresh order id."""
        kind = body.get("type", "limit")
        size_given = any(body.get(f) for f in ("size", "funds", "qty", "valueQty"))
        if (
            body.get("side") not in ("buy", "sell")
            or not body.get("symbol")
            or kind not in ("limit", "market")
            or (kind == "limit" and not body.get("price"))
            or not size_given
            or (needs_client_oid and not body.get("clientOid"))
        ):
            raise _Reject("parameter_error")
        answer: dict[str, Any] = {"orderId": secrets.token_hex(12)}
        if body.get("clientOid"):
            answer["clientOid"] = body["clientOid"]
        return answer

    def _futures_account(self, call: _Call) -> dict[str, Any]:
        currency = (call.query.get("currency") or "XBT").upper()
        amount = float(call.account.balances.get(currency, "0")) if call.account.futures_opened else 0.0
        return {
            "currency": currency,
            "accountEquity": amount,
            "unrealisedPNL": 0,
            "marginBalance": amount,
            "positionMargin": 0,
            "orderMargin": 0,
            "frozenFunds": 0,
            "availableBalance": amount,
            "riskRatio": 0,
        }


SIMULATOR = KucoinSim
