"""Bybit v5 adapter: query-api tells nearly everything; a few probes confirm what it cannot.

Written from shared/reference/exchange-api.md section 3. One check is one round of parallel
probes: `GET /v5/user/query-api` (introspection and account id, `userID`: no separate call),
a spot order that cannot be placed (qty 0) as the trade-permission probe, the linear positions
when futures matter and the deposit address when a currency does. Only when something fails,
a second round asks the server time (clock offset), for temporary causes the system status,
and for an IP refusal query-api again from the other egress addresses.

Decisions where Bybit's documentation is silent (each a table entry or a `BybitSettings` field):
- query-api decides the permissions. The trade probe can only take spot_trade away: a 10005
  proves the permission check ran and failed, while a 10001 (bad qty) proves it passed only if
  Bybit checks permissions before parameters, which is unverified.
- 10003 is one answer for an unknown, deleted, inactive or other-environment key: the cause is
  UNKNOWN_KEY and the engine looks the key up in the other environments.
- HTTP 403 "access too frequent" is IP_BANNED, not RATE_LIMITED: Bybit bans the address for at
  least ten minutes (doc) and sends no Retry-After, so the documented wait is reported.
- A futures probe that could not answer makes the check temporary (the profile needs futures);
  a failed trade or deposit probe only leaves that fact unknown.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from keysentry.domain.permissions import READ_PERMISSIONS, Permission
from keysentry.domain.secrets import ApiCredentials
from keysentry.exchanges.base import (
    TEMPORARY_CAUSES,
    Cause,
    CheckRequest,
    ExchangeAdapter,
    KeyFacts,
    Probe,
    ProbeOutcome,
    SignedRequest,
    classify_http,
    now_ms,
)
from keysentry.exchanges.signing import QueryValue, bybit_signature, canonical_json, canonical_query
from keysentry.exchanges.transport import HttpTransport, RawResponse

__all__ = ["BybitAdapter", "BybitSettings"]

P = Permission

# -- tables -----------------------------------------------------------------------------------------

# One API family per site; a key lives on exactly one site (Japan's api.manepa.jp is not served).
HOSTS: Mapping[str, str] = {
    "mainnet": "api.bybit.com", "testnet": "api-testnet.bybit.com", "demo": "api-demo.bybit.com",
    "eu": "api.bybit.eu", "nl": "api.bybit.nl", "tr": "api.bybit.tr", "kz": "api.bybit.kz",
    "ge": "api.bybitgeorgia.ge", "ae": "api.bybit.ae", "id": "api.bybit.id",
}  # fmt: skip
ENVIRONMENTS: Mapping[str, Mapping[str, str]] = {env: {"api": f"https://{h}"} for env, h in HOSTS.items()}

PATHS: Mapping[Probe, str] = {
    Probe.INTROSPECTION: "/v5/user/query-api", Probe.TRADE: "/v5/order/create",
    Probe.FUTURES: "/v5/position/list", Probe.DEPOSIT_ADDRESS: "/v5/asset/deposit/query-address",
    Probe.SERVER_TIME: "/v5/market/time", Probe.SYSTEM_STATUS: "/v5/system/status",
}  # fmt: skip

# Any Bybit key can read (balances, history, deposit addresses): query-api lists only write
# groups, so the reads are granted to every key that authenticates.
GRANTED_TO_EVERY_KEY = READ_PERMISSIONS
# "Group.Item" -> unified permission. Spot margin rides on Spot.SpotTrade but is switched on per
# account, which query-api does not show: margin_trade is never inferred. ContractTrade.Position
# alone cannot place orders (order/create answers 10005), so it is not futures_trade.
NATIVE_PERMISSIONS: Mapping[str, Permission] = {
    "Spot.SpotTrade": P.SPOT_TRADE,
    "ContractTrade.Order": P.FUTURES_TRADE,
    "Derivatives.DerivativesTrade": P.FUTURES_TRADE,
    "Options.OptionsTrade": P.OPTIONS_TRADE,
    "Wallet.Withdraw": P.WITHDRAW,
    "Wallet.AccountTransfer": P.TRANSFER,
    "Wallet.SubMemberTransfer": P.TRANSFER,
}
# Items that let a key read linear positions: with one, a 10005 there means no futures account.
CONTRACT_ACCESS = frozenset({"ContractTrade.Order", "ContractTrade.Position", "Derivatives.DerivativesTrade"})
READ_ONLY = "ReadOnly"  # native marker for readOnly 1, which removes every write permission
NO_EXPIRY = "1970-01-01T00:00:00Z"

# retCode -> cause, for every probe unless PROBE_CODES says otherwise.
CODES: Mapping[str, Cause] = {
    "10000": Cause.SERVER_ERROR,  # "Server Timeout"
    "10002": Cause.CLOCK_SKEW,
    "10003": Cause.UNKNOWN_KEY,
    "10004": Cause.BAD_SIGNATURE,
    "10005": Cause.PERMISSION_DENIED,
    "10006": Cause.RATE_LIMITED,
    "10007": Cause.UNKNOWN_KEY,  # we always send the auth headers: the key was not taken
    "10008": Cause.ACCOUNT_BANNED,  # "Common banned"
    "10009": Cause.REGION_RESTRICTED,
    "10010": Cause.IP_NOT_ALLOWED,
    "10016": Cause.SERVER_ERROR,
    "10018": Cause.IP_BANNED,  # the per-IP limit as a retCode: the same ban as HTTP 403
    "10024": Cause.KYC_REQUIRED,  # "Compliance rules triggered"
    "10027": Cause.ACCOUNT_FROZEN,  # "Transactions are banned."
    "10029": Cause.PERMISSION_DENIED,  # symbol not in the key's whitelist
    "33004": Cause.KEY_EXPIRED,
    "-2015": Cause.KEY_EXPIRED,  # legacy spot body; documented as "(Spot) Your api key has expired"
}
PROBE_CODES: Mapping[tuple[Probe, str], Cause] = {
    # Any key may call query-api, so a 10005 there is the account's API access, not a permission.
    (Probe.INTROSPECTION, "10005"): Cause.API_DISABLED,
    # The probe order is invalid on purpose: refused for its parameters means permission passed.
    (Probe.TRADE, "10001"): Cause.OK,
}
# retCode -> every cause the same answer covers, most likely first.
CANDIDATES: Mapping[str, tuple[Cause, ...]] = {
    "10003": (Cause.UNKNOWN_KEY, Cause.WRONG_ENVIRONMENT, Cause.KEY_NOT_ACTIVATED),
    "10007": (Cause.UNKNOWN_KEY, Cause.WRONG_ENVIRONMENT),
    "-2015": (Cause.KEY_EXPIRED, Cause.IP_NOT_ALLOWED, Cause.UNKNOWN_KEY),
}
# retCode -> how that answer tells its cause apart, for the evidence.
WHY: Mapping[str, str] = {
    "10003": "Bybit answers 10003 alike for an unknown, deleted or inactive key and another site's key",
    "10004": "10004 comes after the key look-up: the key exists, the secret is not its own",
    "10005": "query-api answers any working key, so 10005 there means the account's API access is off",
}
# Failures that speak for the key or account, most decisive first: whichever probe gave one decides.
DECISIVE: tuple[Cause, ...] = (
    Cause.MALFORMED_KEY, Cause.CLOCK_SKEW, Cause.UNKNOWN_KEY, Cause.BAD_SIGNATURE, Cause.KEY_EXPIRED,
    Cause.IP_NOT_ALLOWED, Cause.ACCOUNT_BANNED, Cause.ACCOUNT_FROZEN, Cause.API_DISABLED,
    Cause.REGION_RESTRICTED, Cause.KYC_REQUIRED,
)  # fmt: skip
# query-api field -> account flag kept (key_type: 1 personal, 2 connected to a third-party app).
ACCOUNT_FLAGS: Mapping[str, str] = {
    "kycLevel": "kyc_level", "kycRegion": "kyc_region", "vipLevel": "vip_level", "isMaster": "is_master",
    "parentUid": "parent_uid", "uta": "unified_account", "type": "key_type",
}  # fmt: skip

_ORIGIN = re.compile(r"origin_string\[.*", re.S)  # 10004 echoes the signed string, API key included
_SKEW = re.compile(r"req_timestamp\[(\d+)\],\s*server_timestamp\[(\d+)\]")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _trade_probe() -> dict[str, str]:
    # Limit, post-only, far below any price and quantity 0: nothing that could ever fill.
    return {
        "category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
        "qty": "0", "price": "1", "timeInForce": "PostOnly",
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class BybitSettings:
    """Behaviours the reference marks unverified, with the most likely value as default."""

    recv_window_ms: int = 5000
    unbound_ips: frozenset[str] = frozenset({"*", ""})  # "*" means "no bind" at creation (doc)
    ip_ban_wait_s: float = 600.0  # doc: "wait for at least 10 minutes"; no Retry-After is sent
    trade_probe: Mapping[str, str] = field(default_factory=_trade_probe)
    futures_settle_coin: str = "USDT"


_DEFAULTS = BybitSettings()
_DEFAULT_TRADE_BODY = canonical_json(dict(_DEFAULTS.trade_probe))


# -- the adapter ------------------------------------------------------------------------------------


class BybitAdapter(ExchangeAdapter):
    name: ClassVar[str] = "bybit"
    environments: ClassVar[Mapping[str, Mapping[str, str]]] = ENVIRONMENTS

    def __init__(
        self,
        transport: HttpTransport,
        *,
        environment: str = "mainnet",
        base_url: str | None = None,
        clock_ms: Any = now_ms,
        settings: BybitSettings | None = None,
    ) -> None:
        super().__init__(transport, environment=environment, base_url=base_url, clock_ms=clock_ms)
        self.settings = settings or _DEFAULTS
        # The trade probe's body is the same on every check: serialised once.
        probe = self.settings.trade_probe
        self._trade_body = _DEFAULT_TRADE_BODY if settings is None else canonical_json(dict(probe))

    # -- signing glue -------------------------------------------------------------------------------

    def _signed(
        self, creds: ApiCredentials, probe: Probe, query: Mapping[str, QueryValue] | None = None
    ) -> SignedRequest:
        qs, post = canonical_query(query) if query else "", probe is Probe.TRADE
        payload = self._trade_body if post else qs
        ts, recv = int(self.clock_ms()), self.settings.recv_window_ms
        headers = {
            "X-BAPI-API-KEY": creds.api_key,
            "X-BAPI-TIMESTAMP": str(ts),
            "X-BAPI-RECV-WINDOW": str(recv),
            "X-BAPI-SIGN": bybit_signature(creds.secret.reveal(), ts, creds.api_key, recv, payload),
        }
        if post:
            headers["Content-Type"] = "application/json"
        url = self.url("api", f"{PATHS[probe]}?{qs}" if qs else PATHS[probe])
        return SignedRequest("POST" if post else "GET", url, headers, payload.encode() if post else None)

    def _public(self, probe: Probe) -> SignedRequest:
        return SignedRequest("GET", self.url("api", PATHS[probe]), {})

    def _requests(self, request: CheckRequest) -> dict[Probe, SignedRequest]:
        creds = request.credentials
        out = {p: self._signed(creds, p) for p in (Probe.INTROSPECTION, Probe.TRADE)}
        if request.needs_futures:
            linear = {"category": "linear", "settleCoin": self.settings.futures_settle_coin}
            out[Probe.FUTURES] = self._signed(creds, Probe.FUTURES, linear)
        if request.deposit_currency:
            coin = {"coin": request.deposit_currency.strip().upper()}
            out[Probe.DEPOSIT_ADDRESS] = self._signed(creds, Probe.DEPOSIT_ADDRESS, coin)
        return out

    # -- probes -------------------------------------------------------------------------------------

    async def check(self, request: CheckRequest) -> KeyFacts:
        facts = KeyFacts(self.name, self.environment)
        creds = request.credentials
        ips = request.egress_ips or self.transport.egress_ips
        egress = ips[0] if ips else None
        if not _HEADER_SAFE.fullmatch(creds.api_key):
            facts.cause = Cause.MALFORMED_KEY
            facts.evidence.append("the API key holds spaces or characters a header cannot carry: not sent")
            return facts
        probes = self._requests(request)
        first = await self.gather(*(self.send(p, r, egress_ip=egress) for p, r in probes.items()))
        facts.outcomes = {o.probe: _scrubbed(o, creds) for o in first}
        intro = facts.outcomes[Probe.INTROSPECTION]
        if intro.ok:
            self._read_key(facts, intro.data)
        self._read_probes(facts, request)
        facts.cause, facts.candidates = self._decide(facts, request)
        if facts.cause is not Cause.OK:
            await self._second_round(facts, request, ips)
        return facts

    async def _second_round(self, facts: KeyFacts, request: CheckRequest, ips: tuple[str, ...]) -> None:
        if facts.cause is Cause.IP_BANNED:
            facts.evidence.append("a banned address is refused everywhere: time and status not asked")
            return
        egress = ips[0] if ips else None
        jobs = [self._server_time(egress)]
        if facts.cause in TEMPORARY_CAUSES or facts.cause is Cause.UNEXPECTED:
            jobs.append(self.send(Probe.SYSTEM_STATUS, self._public(Probe.SYSTEM_STATUS), egress_ip=egress))
        if facts.cause is Cause.IP_NOT_ALLOWED:
            signed = [(ip, self._signed(request.credentials, Probe.INTROSPECTION)) for ip in ips[1:]]
            jobs += [self.send(Probe.INTROSPECTION, r, egress_ip=ip) for ip, r in signed]
        results = [_scrubbed(o, request.credentials) for o in await self.gather(*jobs)]
        facts.outcomes.update((o.probe, o) for o in results if o.probe is not Probe.INTROSPECTION)
        self._read_clock(facts)
        self._read_status(facts)
        for o in (o for o in results if o.probe is Probe.INTROSPECTION):
            if o.ok:
                self._read_key(facts, o.data)
                facts.evidence.append(f"query-api answered from {o.egress_ip} but 10010 from {egress}")
                break
            facts.evidence.append(_note(o))

    async def _server_time(self, egress: str | None) -> ProbeOutcome:
        sent = self.clock_ms()
        outcome = await self.send(Probe.SERVER_TIME, self._public(Probe.SERVER_TIME), egress_ip=egress)
        midpoint = (sent + self.clock_ms()) / 2  # the exchange read its clock about half-way
        server = outcome.data.get("server_ms")
        if not outcome.ok or not isinstance(server, float):
            return outcome
        return replace(outcome, data={**outcome.data, "offset_ms": server - midpoint})

    # -- reading answers into facts -----------------------------------------------------------------

    def _read_key(self, facts: KeyFacts, data: Mapping[str, Any]) -> None:
        """Fill the facts from a query-api result."""
        uid = str(data.get("userIDInt64") or "0")  # the string form is set for ids past int32
        facts.account_id = uid if uid != "0" else _text(data.get("userID"))
        groups = data.get("permissions")
        groups = groups if isinstance(groups, Mapping) else {}
        native = tuple(
            sorted(
                f"{g}.{item}"
                for g, items in groups.items()
                if items and isinstance(items, list)
                for item in items
            )
        )
        read_only = str(data.get("readOnly")) == "1"
        facts.native_permissions = (*native, READ_ONLY) if read_only else native
        facts.permissions = _granted(native, read_only)
        ips = data.get("ips")
        if isinstance(ips, list):
            facts.ip_whitelist = tuple(str(ip) for ip in ips if str(ip) not in self.settings.unbound_ips)
            facts.ip_restricted = bool(facts.ip_whitelist)
        facts.expires_at = self._expiry(data)
        facts.expiry_kind = "key" if facts.expires_at is not None else None
        facts.created_at = _instant(data.get("createdAt"))
        facts.label = _text(data.get("note"))
        facts.account_flags = {flag: data[raw] for raw, flag in ACCOUNT_FLAGS.items() if raw in data}

    def _expiry(self, data: Mapping[str, Any]) -> datetime | None:
        expired_at = data.get("expiredAt")
        if expired_at and expired_at != NO_EXPIRY:
            return _instant(expired_at)
        days = data.get("deadlineDay")  # whole days left; -1/-2 for keys without a deadline
        if isinstance(days, int) and days >= 0:
            return datetime.fromtimestamp(self.clock_ms() / 1000, UTC) + timedelta(days=days)
        return None

    def _read_probes(self, facts: KeyFacts, request: CheckRequest) -> None:
        trade, perms = facts.outcomes[Probe.TRADE], facts.permissions
        if trade.cause is Cause.PERMISSION_DENIED and perms is not None and P.SPOT_TRADE in perms:
            facts.permissions = perms - {P.SPOT_TRADE}
            facts.evidence.append("query-api lists Spot.SpotTrade but order/create answered 10005")
        elif trade.ok and "orderId" in trade.data:
            facts.evidence.append(f"order/create ACCEPTED the qty-0 probe as {trade.data['orderId']}")
        futures = facts.outcomes.get(Probe.FUTURES)
        if futures is not None and futures.ok:
            facts.futures_active = True
        elif (
            futures is not None
            and futures.cause is Cause.PERMISSION_DENIED
            and (CONTRACT_ACCESS & set(facts.native_permissions))
        ):
            facts.futures_active = False
            facts.evidence.append("position/list refused a key with contract permissions: no futures account")
        deposit = facts.outcomes.get(Probe.DEPOSIT_ADDRESS)
        if request.deposit_currency and deposit is not None and deposit.cause in {Cause.OK, Cause.NOT_FOUND}:
            facts.deposit_addresses[request.deposit_currency.strip().upper()] = deposit.ok

    def _decide(self, facts: KeyFacts, request: CheckRequest) -> tuple[Cause, tuple[Cause, ...]]:
        failed = [o for o in facts.outcomes.values() if o.cause in DECISIVE]
        if failed:
            worst = min(failed, key=lambda o: DECISIVE.index(o.cause))
            if worst.cause is Cause.UNKNOWN_KEY and not _looks_like_key(request.credentials.api_key):
                facts.evidence.append("Bybit does not know the key, and it is not 18 letters or digits")
                return Cause.MALFORMED_KEY, ()
            code = worst.code or ""
            facts.evidence += [_note(worst), *([WHY[code]] if code in WHY else [])]
            return worst.cause, CANDIDATES.get(code, ())
        intro = facts.outcomes[Probe.INTROSPECTION]
        if not intro.ok:
            if facts.outcomes[Probe.TRADE].ok:
                facts.evidence.append("order/create passed authentication, so the key itself is valid")
            facts.evidence.append(_note(intro))
            return intro.cause, ()
        if facts.futures_active is False:
            return Cause.FUTURES_NOT_OPENED, ()
        unanswered = [
            o for o in facts.outcomes.values() if not o.ok and o.cause is not Cause.PERMISSION_DENIED
        ]
        facts.evidence += [_note(o) for o in unanswered]
        futures = facts.outcomes.get(Probe.FUTURES)
        if futures is not None and futures.cause in TEMPORARY_CAUSES:
            return futures.cause, ()
        return Cause.OK, ()

    def _read_clock(self, facts: KeyFacts) -> None:
        measured = facts.outcomes.get(Probe.SERVER_TIME)
        offset = measured.data.get("offset_ms") if measured is not None else None
        if isinstance(offset, float):
            facts.server_time_offset_ms = offset
            facts.evidence.append(f"market/time: the exchange clock is {offset:+.0f} ms from ours")
        skew = next((o for o in facts.outcomes.values() if o.cause is Cause.CLOCK_SKEW), None)
        told = _SKEW.search(skew.message or "") if skew is not None else None
        # The refusal fits the timing rule (server - recv_window <= ts < server + 1000) only
        # outside this range; inside it, the exchange's own account of the request is used.
        if told is not None and (offset is None or -1000 < offset <= self.settings.recv_window_ms):
            facts.server_time_offset_ms = float(int(told.group(2)) - int(told.group(1)))
            facts.evidence.append(f"10002 says the request arrived {facts.server_time_offset_ms:+.0f} ms off")

    def _read_status(self, facts: KeyFacts) -> None:
        status = facts.outcomes.get(Probe.SYSTEM_STATUS)
        if status is None or not status.ok:
            return
        entries = status.data.get("list")
        entries = entries if isinstance(entries, list) else []
        ongoing = any(isinstance(e, Mapping) and e.get("state") == "ongoing" for e in entries)
        facts.system_status = "maintenance" if ongoing else "normal"
        if ongoing and facts.cause in {Cause.SERVER_ERROR, Cause.UNEXPECTED}:
            facts.evidence.append("system/status lists an ongoing maintenance")
            facts.cause = Cause.MAINTENANCE

    # -- classification -----------------------------------------------------------------------------

    def classify(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        body = raw.json()
        code, message = _envelope(body)
        http = classify_http(probe, raw)
        if http is not None:  # 5xx and 429 first: Bybit's maintenance is a 503 carrying 10016
            return replace(http, code=code, message=message or _excerpt(raw))
        if code is None:
            return self._without_envelope(probe, raw)
        if code == "0":
            return _success(probe, raw.status, body)
        cause = PROBE_CODES.get((probe, code)) or CODES.get(code, Cause.UNEXPECTED)
        retry = None
        if cause is Cause.RATE_LIMITED:
            retry = _limit_reset_s(raw, body)
        elif cause is Cause.IP_BANNED:
            retry = _retry_after(raw) or self.settings.ip_ban_wait_s
        return ProbeOutcome(probe, cause, raw.status, code, message, retry_after_s=retry)

    def _without_envelope(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        if raw.status == 403 and "access too frequent" in raw.text.lower():
            wait = _retry_after(raw) or self.settings.ip_ban_wait_s
            return ProbeOutcome(
                probe, Cause.IP_BANNED, 403, message="access too frequent", retry_after_s=wait
            )
        # Other 403s come from the edge, which turns away US and mainland-China addresses (doc).
        cause = {403: Cause.REGION_RESTRICTED, 401: Cause.UNKNOWN_KEY}.get(raw.status, Cause.UNEXPECTED)
        return ProbeOutcome(probe, cause, raw.status, message=_excerpt(raw))


# -- parsing helpers --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _granted(native: tuple[str, ...], read_only: bool) -> frozenset[Permission]:
    """The unified permissions of these native ones; keys share a few combinations."""
    granted = set(GRANTED_TO_EVERY_KEY)
    if not read_only:
        granted.update(NATIVE_PERMISSIONS[n] for n in native if n in NATIVE_PERMISSIONS)
    return frozenset(granted)


def _envelope(body: Any) -> tuple[str | None, str | None]:
    """(retCode, retMsg) from v5's envelope or the legacy {"ret_code","ret_msg"} one."""
    if not isinstance(body, Mapping):
        return None, None
    for code_key, msg_key in (("retCode", "retMsg"), ("ret_code", "ret_msg")):
        if code_key in body:
            message = str(body.get(msg_key) or "")
            return str(body[code_key]), _ORIGIN.sub("origin_string[<hidden>]", message)[:300]
    return None, None


def _success(probe: Probe, status: int, body: Mapping[str, Any]) -> ProbeOutcome:
    result = body.get("result")
    data = (
        {k: v for k, v in result.items() if k not in {"apiKey", "secret"}}
        if isinstance(result, Mapping)
        else {}
    )
    if probe is Probe.SERVER_TIME:
        nano, second = str(data.get("timeNano", "")), str(data.get("timeSecond", ""))
        server = int(nano) / 1e6 if nano.isdigit() else int(second) * 1000.0 if second.isdigit() else None
        data = {"server_ms": server} if server is not None else {}
    if probe is Probe.DEPOSIT_ADDRESS and not data.get("chains"):
        return ProbeOutcome(
            probe, Cause.NOT_FOUND, status, "0", "no deposit address for this coin", data=data
        )
    return ProbeOutcome(probe, Cause.OK, status, data=data)


def _limit_reset_s(raw: RawResponse, body: Mapping[str, Any]) -> float | None:
    # X-Bapi-Limit-Reset-Timestamp minus the answer's time: both on the exchange's clock.
    reset, sent = raw.headers.get("X-Bapi-Limit-Reset-Timestamp", ""), body.get("time")
    if reset.isdigit() and isinstance(sent, int):
        return max(0.0, (int(reset) - sent) / 1000)
    return _retry_after(raw)


def _retry_after(raw: RawResponse) -> float | None:
    value = raw.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _scrubbed(outcome: ProbeOutcome, creds: ApiCredentials) -> ProbeOutcome:
    """The outcome with the API key masked and any secret hidden in the exchange's message."""
    message = outcome.message
    if not message:
        return outcome
    for secret in (creds.secret, creds.passphrase):
        if secret is not None and len(secret) > 0:
            message = message.replace(secret.reveal(), "<hidden>")
    if creds.api_key in message:
        message = message.replace(creds.api_key, creds.masked_key)
    # The usual message echoes nothing: the outcome is kept rather than copied.
    return outcome if message == outcome.message else replace(outcome, message=message)


def _note(o: ProbeOutcome) -> str:
    said = " ".join(x for x in (o.code, o.message) if x) or f"HTTP {o.http_status}"
    where = f" from {o.egress_ip}" if o.egress_ip else ""
    return f"{PATHS[o.probe].removeprefix('/v5/')}{where}: {o.cause.value} ({said})"[:240]


def _looks_like_key(api_key: str) -> bool:
    return len(api_key) == 18 and api_key.isascii() and api_key.isalnum()


def _excerpt(raw: RawResponse) -> str:
    return f"HTTP {raw.status}: {' '.join(raw.text.split())[:120]}".strip()


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _instant(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)
