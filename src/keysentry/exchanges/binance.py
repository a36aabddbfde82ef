"""Binance adapter: spot `/api/v3`, wallet `/sapi/v1`, USD-M futures `/fapi` (reference section 1).

Binance answers one code, -2015 "Invalid API-key, IP, or permissions for action", for an
unknown or deleted key, a key of another environment, a caller outside the IP whitelist and
a missing permission alike. `classify()` calls it AMBIGUOUS_AUTH and `check()` tells the
causes apart from what else answered:

- any call that answered proves the key exists and our address is allowed, so a -2015 on
  another call is that endpoint's permission (or a lapsed trading authority, or a futures
  account that is not usable: `/sapi/v1/account/info` says which);
- when nothing answered, apiRestrictions is re-asked from every other egress address: an
  answer from one of them proves a whitelist that leaves the first address out;
- otherwise the cause stays AMBIGUOUS_AUTH with its candidates, and the engine looks the key
  up in the other environments.

One parallel round: apiRestrictions, account, order/test (validated, never placed), [fapi
account], [deposit address]. Only when something failed, a second one: server time, and as
needed system status, the other egress addresses, account info, account status.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from keysentry.domain.permissions import READ_PERMISSIONS, Permission
from keysentry.domain.secrets import REDACTED, ApiCredentials
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
from keysentry.exchanges.signing import QueryValue, binance_signature, canonical_query
from keysentry.exchanges.transport import HttpTransport, RawResponse

__all__ = ["CODES", "ENVIRONMENTS", "PERMISSION_MAP", "BinanceAdapter", "BinanceSettings"]

# -- tables -----------------------------------------------------------------------------------

# A family is listed where the environment serves it: the spot testnet has no /sapi (its
# futures testnet is another host, with its own keys) and Binance.US has no futures.
ENVIRONMENTS: Mapping[str, Mapping[str, str]] = {
    "mainnet": {"api": "https://api.binance.com", "sapi": "https://api.binance.com", "fapi": "https://fapi.binance.com"},
    "testnet": {"api": "https://testnet.binance.vision", "fapi": "https://testnet.binancefuture.com"},
    "us": {"api": "https://api.binance.us", "sapi": "https://api.binance.us"},
}  # fmt: skip
# name -> (probe, method, family, path); account/info and account/status only add account flags.
CALLS: Mapping[str, tuple[Probe, str, str, str]] = {
    "apiRestrictions": (Probe.INTROSPECTION, "GET", "sapi", "/sapi/v1/account/apiRestrictions"),
    "account": (Probe.ACCOUNT, "GET", "api", "/api/v3/account"),
    "order/test": (Probe.TRADE, "POST", "api", "/api/v3/order/test"),
    "futures account": (Probe.FUTURES, "GET", "fapi", "/fapi/v2/account"),
    "deposit address": (Probe.DEPOSIT_ADDRESS, "GET", "sapi", "/sapi/v1/capital/deposit/address"),
    "time": (Probe.SERVER_TIME, "GET", "api", "/api/v3/time"),
    "system/status": (Probe.SYSTEM_STATUS, "GET", "sapi", "/sapi/v1/system/status"),
    "account/info": (Probe.ACCOUNT, "GET", "sapi", "/sapi/v1/account/info"),
    "account/status": (Probe.ACCOUNT, "GET", "sapi", "/sapi/v1/account/status"),
}
PUBLIC = frozenset({"time", "system/status"})  # unsigned
# The first round's calls by probe: only their answers decide the cause.
NAMES: Mapping[Probe, str] = {
    Probe.INTROSPECTION: "apiRestrictions",
    Probe.ACCOUNT: "account",
    Probe.TRADE: "order/test",
    Probe.FUTURES: "futures account",
    Probe.DEPOSIT_ADDRESS: "deposit address",
}

P = Permission
# apiRestrictions flags that must all be true -> the unified permissions they grant.
PERMISSION_MAP: tuple[tuple[tuple[str, ...], frozenset[Permission]], ...] = (
    (("enableReading",), READ_PERMISSIONS),
    (("enableSpotAndMarginTrading",), frozenset({P.SPOT_TRADE})),
    (("enableSpotAndMarginTrading", "enableMargin"), frozenset({P.MARGIN_TRADE})),
    (("enableFutures",), frozenset({P.FUTURES_TRADE})),
    (("enableVanillaOptions",), frozenset({P.OPTIONS_TRADE})),
    (("enableWithdrawals",), frozenset({P.WITHDRAW})),
    (("enableInternalTransfer",), frozenset({P.TRANSFER})),
    (("permitsUniversalTransfer",), frozenset({P.TRANSFER})),
)
# Without the flags (spot testnet, or apiRestrictions refused), what a call that answered proves.
INFERRED: Mapping[Probe, frozenset[Permission]] = {
    Probe.ACCOUNT: READ_PERMISSIONS,  # Binance's one reading flag covers all three reads
    Probe.TRADE: frozenset({P.SPOT_TRADE}),
    Probe.FUTURES: frozenset({P.FUTURES_TRADE}),
}
# The flag behind each endpoint: its -2015, once the key is known to work, means the flag is off.
NEEDED_FLAG: Mapping[Probe, str] = {
    Probe.INTROSPECTION: "enableReading",  # should apiRestrictions need reading, as some clients say
    Probe.ACCOUNT: "enableReading",
    Probe.TRADE: "enableSpotAndMarginTrading",
    Probe.FUTURES: "enableFutures",
    Probe.DEPOSIT_ADDRESS: "enableReading",
}
ACCOUNT_PARAMS: tuple[tuple[str, QueryValue], ...] = (("omitZeroBalances", True),)  # same weight, less body
# Worth keeping from /api/v3/account and /sapi/v1/account/info.
ACCOUNT_FLAGS = frozenset(
    {"canTrade", "canWithdraw", "canDeposit", "accountType", "permissions", "vipLevel", "isFutureEnabled"}
)

C = Cause
CODES: Mapping[int, Cause] = {
    -2015: C.AMBIGUOUS_AUTH,  # unknown key, other environment, IP or permission: check() decides
    -2008: C.UNKNOWN_KEY,  # "Invalid Api-Key ID."
    -2014: C.MALFORMED_KEY,
    -1022: C.BAD_SIGNATURE,
    -1021: C.CLOCK_SKEW,
    -1002: C.ACCOUNT_BANNED,  # "not authorized" after a valid signature: undocumented, a setting
    -2017: C.API_DISABLED,  # "API Keys are locked on this account."
    200003903: C.KYC_REQUIRED,
    -4401: C.KYC_REQUIRED,  # futures compliance: reduce-only orders
    -4402: C.REGION_RESTRICTED,
    -13007: C.AGREEMENT_PENDING,
    -1003: C.RATE_LIMITED,
    -1015: C.RATE_LIMITED,
    1: C.MAINTENANCE,  # sapi: "System is under maintenance."
    -1001: C.SERVER_ERROR,
    -1007: C.SERVER_ERROR,  # backend timeout, "execution status unknown"
    -1008: C.SERVER_ERROR,  # overloaded
    -1016: C.SERVER_ERROR,
}
# Decided by the HTTP status whatever the body (451 carries code 0; 403 is the WAF, often HTML).
HTTP_CAUSES: Mapping[int, Cause] = {418: C.IP_BANNED, 429: C.RATE_LIMITED, 451: C.REGION_RESTRICTED, 403: C.IP_BANNED}  # fmt: skip
# -2010/-2011 carry many messages; these speak of the account, not of our test order.
ORDER_REFUSALS: tuple[tuple[str, Cause], ...] = (
    ("may not place or cancel orders", C.ACCOUNT_FROZEN),
    ("action is disabled on this account", C.ACCOUNT_FROZEN),
    ("rest api trading is not enabled", C.MAINTENANCE),
)
# An order is validated after authentication and the permission check, so on order/test these
# prove the trade permission: only our test order's content was refused.
ORDER_VALIDATION_CODES = frozenset({-1013, -1106, -1111, -1116, -1117, -1121, -2010, -2011})
# Most decisive first: a fact about the key beats the exchange failing to answer this time.
DECISIVENESS: tuple[Cause, ...] = (
    C.MALFORMED_KEY, C.UNKNOWN_KEY, C.WRONG_ENVIRONMENT, C.KEY_NOT_ACTIVATED, C.BAD_SIGNATURE,
    C.CLOCK_SKEW, C.IP_NOT_ALLOWED, C.REGION_RESTRICTED, C.ACCOUNT_BANNED, C.API_DISABLED,
    C.KYC_REQUIRED, C.AGREEMENT_PENDING, C.ACCOUNT_FROZEN, C.KEY_EXPIRED, C.PERMISSION_DENIED,
    C.FUTURES_NOT_OPENED, C.IP_BANNED, C.MAINTENANCE, C.RATE_LIMITED, C.SERVER_ERROR,
    C.TIMEOUT, C.NETWORK, C.AMBIGUOUS_AUTH, C.UNEXPECTED,
)  # fmt: skip
# An unknown/deleted key or a key of another environment is the most common cause at connect time.
AMBIGUOUS_CANDIDATES = (C.UNKNOWN_KEY, C.IP_NOT_ALLOWED)
_REQUEST_IP = re.compile(r"request ip: ([0-9A-Fa-f.:]+)")
_BANNED_UNTIL = re.compile(r"banned until (\d{10,})")


@dataclass(frozen=True, slots=True)
class BinanceSettings:
    """What the reference leaves unverified, as settings with the most likely default."""

    recv_window_ms: int = 5000
    default_symbol: str = "BTCUSDT"
    # order/test applies the symbol's filters: 11 of the quote asset clears BTCUSDT's minimum notional.
    test_order_quote_qty: str = "11"
    # A coin without a deposit address: not in the reference; -4018 "We don't have this asset." (ccxt).
    deposit_missing_codes: frozenset[int] = frozenset({-4018})
    # Entries replacing CODES', e.g. {-1002: Cause.PERMISSION_DENIED} should banned accounts prove otherwise.
    code_overrides: Mapping[int, Cause] = field(default_factory=dict)


class BinanceAdapter(ExchangeAdapter):
    name = "binance"
    environments: ClassVar[Mapping[str, Mapping[str, str]]] = ENVIRONMENTS

    def __init__(
        self,
        transport: HttpTransport,
        *,
        environment: str = "mainnet",
        base_url: str | None = None,
        clock_ms: Any = now_ms,
        settings: BinanceSettings | None = None,
    ) -> None:
        super().__init__(transport, environment=environment, base_url=base_url, clock_ms=clock_ms)
        self.settings = settings or BinanceSettings()
        self.codes = {**CODES, **self.settings.code_overrides}

    def serves(self, name: str) -> bool:
        return CALLS[name][2] in self.base_urls

    # -- signing glue -------------------------------------------------------------------------

    def _request(
        self, name: str, creds: ApiCredentials, params: Sequence[tuple[str, QueryValue]] = ()
    ) -> SignedRequest:
        _, method, family, path = CALLS[name]
        if name in PUBLIC:
            return SignedRequest(method, self.url(family, path), {})
        window = self.settings.recv_window_ms
        query = canonical_query([*params, ("timestamp", self.clock_ms()), ("recvWindow", window)])
        signature = binance_signature(creds.secret.reveal(), query)  # totalParams: all in the query
        return SignedRequest(
            method, self.url(family, f"{path}?{query}&signature={signature}"), {"X-MBX-APIKEY": creds.api_key}
        )

    async def _ask(
        self,
        name: str,
        creds: ApiCredentials,
        params: Sequence[tuple[str, QueryValue]] = (),
        egress_ip: str | None = None,
    ) -> ProbeOutcome:
        sent = self.clock_ms()
        outcome = await self.send(CALLS[name][0], self._request(name, creds, params), egress_ip=egress_ip)
        if outcome.message:  # Binance echoes only the caller's IP; trust no echo
            text = outcome.message
            for value in filter(None, (creds.secret.reveal(), creds.api_key)):
                text = text.replace(value, REDACTED)
            outcome = replace(outcome, message=text)
        server = outcome.data.get("serverTime")
        if name == "time" and outcome.ok and isinstance(server, int | float):
            # Against the midpoint of the round trip: half the latency each way.
            offset = server - (sent + self.clock_ms()) / 2
            outcome = replace(outcome, data={**outcome.data, "offset_ms": offset})
        return outcome

    def _identify(self, creds: ApiCredentials, egress_ip: str | None) -> Coroutine[Any, Any, ProbeOutcome]:
        """The cheapest call any valid key may make from an allowed address."""
        if self.serves("apiRestrictions"):
            return self._ask("apiRestrictions", creds, egress_ip=egress_ip)
        return self._ask("account", creds, ACCOUNT_PARAMS, egress_ip)

    # -- the check ------------------------------------------------------------------------------

    async def check(self, request: CheckRequest) -> KeyFacts:
        creds = request.credentials
        facts = KeyFacts(exchange=self.name, environment=self.environment)
        ips = request.egress_ips or self.transport.egress_ips
        ip = ips[0] if ips else None
        symbol = request.pairs[0].replace("/", "").upper() if request.pairs else self.settings.default_symbol
        # A MARKET BUY that order/test validates and never sends to the matching engine.
        order = [("symbol", symbol), ("side", "BUY"), ("type", "MARKET")]
        order.append(("quoteOrderQty", self.settings.test_order_quote_qty))
        coin = (request.deposit_currency or "").upper()
        asks = [self._identify(creds, ip), self._ask("order/test", creds, order, ip)]
        if self.serves("apiRestrictions"):
            asks.append(self._ask("account", creds, ACCOUNT_PARAMS, ip))
        if request.needs_futures and self.serves("futures account"):
            asks.append(self._ask("futures account", creds, egress_ip=ip))
        if coin and self.serves("deposit address"):
            asks.append(self._ask("deposit address", creds, [("coin", coin)], ip))
        for outcome in await self.gather(*asks):
            facts.outcomes[outcome.probe] = outcome
        self._read(facts, coin, request.needs_futures)
        first = list(facts.outcomes.values())
        if any(not o.ok and o.cause is not C.NOT_FOUND for o in first):
            await self._second_round(facts, creds, ips)
        self._decide(facts, first, ips)
        return facts

    def _read(self, facts: KeyFacts, coin: str, needs_futures: bool) -> None:
        got = {p: o for p, o in facts.outcomes.items() if o.ok}
        if Probe.INTROSPECTION in got:
            self._read_restrictions(facts, got[Probe.INTROSPECTION].data)
        elif got:
            facts.permissions = frozenset().union(*(INFERRED.get(p, frozenset()) for p in got))
            facts.evidence.append(
                "no apiRestrictions flags: permissions inferred from the calls that answered"
            )
        if Probe.ACCOUNT in got:
            account = got[Probe.ACCOUNT].data
            facts.account_id = str(account["uid"]) if account.get("uid") is not None else None
            facts.account_flags.update((k, account[k]) for k in ACCOUNT_FLAGS if k in account)
        if Probe.FUTURES in got:
            facts.futures_active = True
        elif needs_futures and not self.serves("futures account"):
            facts.futures_active = False
            facts.evidence.append(f"Binance {self.environment} offers no USD-M futures")
        deposit = facts.outcomes.get(Probe.DEPOSIT_ADDRESS)
        if deposit is not None and (deposit.ok or deposit.cause is C.NOT_FOUND):
            facts.deposit_addresses[coin] = bool(deposit.ok and deposit.data.get("address"))

    def _read_restrictions(self, facts: KeyFacts, data: Mapping[str, Any]) -> None:
        on = frozenset(k for k, v in data.items() if v is True and k != "ipRestrict")
        facts.native_permissions, facts.permissions = _permissions(on)
        restricted = data.get("ipRestrict")
        facts.ip_restricted = restricted if isinstance(restricted, bool) else None
        facts.created_at = _instant(data.get("createTime"))
        expiry = _instant(data.get("tradingAuthorityExpirationTime"))  # present only while it applies
        if expiry is not None:
            facts.expires_at, facts.expiry_kind = expiry, "trading_authority"

    async def _second_round(self, facts: KeyFacts, creds: ApiCredentials, ips: Sequence[str]) -> None:
        first = list(facts.outcomes.values())
        if all(o.ok or o.cause in (C.TIMEOUT, C.NETWORK) for o in first):
            return  # the exchange is unreachable: asking again would only double the wait
        if any(o.cause in (C.RATE_LIMITED, C.IP_BANNED) for o in first):
            return  # told to back off: more requests now lead to a (longer) IP ban
        works = any(o.ok or o.cause is C.NOT_FOUND for o in first)
        futures, trade = facts.outcomes.get(Probe.FUTURES), facts.outcomes.get(Probe.TRADE)
        identity = facts.outcomes[Probe.INTROSPECTION if self.serves("apiRestrictions") else Probe.ACCOUNT]
        frozen = facts.account_flags.get("canTrade") is False or (
            trade is not None and trade.cause is C.ACCOUNT_FROZEN
        )
        names = ["time"]
        if any(o.cause in TEMPORARY_CAUSES for o in first):
            names.append("system/status")
        if works and futures is not None and futures.cause is C.AMBIGUOUS_AUTH:
            names.append("account/info")  # isFutureEnabled: is the futures account opened at all?
        if works and frozen:
            names.append("account/status")
        names = [n for n in names if self.serves(n)]
        others = list(ips[1:]) if not works and identity.cause is C.AMBIGUOUS_AUTH else []
        asks = [self._ask(n, creds) for n in names]
        answers = await self.gather(*asks, *(self._identify(creds, ip) for ip in others))
        for name, outcome in zip(names, answers[: len(names)], strict=True):
            if name in PUBLIC:
                facts.outcomes[outcome.probe] = outcome
            if not outcome.ok:
                continue
            if name == "time":
                facts.server_time_offset_ms = outcome.data.get("offset_ms")
            elif name == "system/status":
                status = outcome.data.get("status")
                facts.system_status = "maintenance" if status == 1 else "normal" if status == 0 else None
            elif name == "account/info":
                facts.account_flags.update((k, v) for k, v in outcome.data.items() if k in ACCOUNT_FLAGS)
            else:
                facts.account_flags["account_status"] = outcome.data.get("data")
        if others:
            self._read_other_addresses(facts, ips[0], dict(zip(others, answers[len(names) :], strict=True)))

    def _read_other_addresses(
        self, facts: KeyFacts, first_ip: str, retried: Mapping[str, ProbeOutcome]
    ) -> None:
        """An answer from another egress address proves a whitelist that leaves the first one out."""
        answered = [ip for ip, o in retried.items() if o.ok]
        refused = [first_ip, *(ip for ip, o in retried.items() if o.cause is C.AMBIGUOUS_AUTH)]
        unanswered = [f"{ip} ({o.cause})" for ip, o in retried.items() if not o.ok and ip not in refused]
        if not answered:
            silent = f"; no answer from {', '.join(unanswered)}" if unanswered else ""
            facts.evidence.append(f"-2015 from every egress address asked ({', '.join(refused)}){silent}")
            return
        winner = retried[answered[0]]
        facts.outcomes[winner.probe] = replace(facts.outcomes[winner.probe], cause=C.IP_NOT_ALLOWED)
        facts.ip_restricted = True
        if winner.probe is Probe.INTROSPECTION:
            self._read_restrictions(facts, winner.data)
        facts.evidence.append(
            f"{NAMES[winner.probe]} answered from {', '.join(answered)} but -2015 from {', '.join(refused)}: "
            "the key's IP whitelist includes only some of our egress addresses"
        )

    # -- deciding ---------------------------------------------------------------------------------

    def _decide(self, facts: KeyFacts, first: Sequence[ProbeOutcome], ips: Sequence[str]) -> None:
        lapsed = self._authority_lapsed(facts)
        if any(o.ok or o.cause is C.NOT_FOUND for o in first):
            for o in first:
                if o.cause is C.AMBIGUOUS_AUTH and o.probe in NEEDED_FLAG:
                    facts.outcomes[o.probe] = replace(o, cause=self._refusal(facts, o.probe, lapsed))
        deciding = [o.cause for o in facts.outcomes.values() if o.probe in NAMES]
        if lapsed:
            deciding.append(C.KEY_EXPIRED)
            facts.evidence.append(
                f"the spot trading authority expired at {facts.expires_at:%Y-%m-%d %H:%M} UTC "
                "(tradingAuthorityExpirationTime): trading lapsed by expiry, not by a missing permission"
            )
        status = facts.account_flags.get("account_status")
        if status not in (None, "Normal"):
            deciding.append(C.ACCOUNT_FROZEN)
            facts.evidence.append(f"account/status reports the account as {status!r}")
        facts.cause = min((c for c in deciding if c not in (C.OK, C.NOT_FOUND)), key=_rank, default=C.OK)
        offset = facts.server_time_offset_ms
        if facts.cause in TEMPORARY_CAUSES and facts.system_status == "maintenance":
            facts.cause = C.MAINTENANCE
            facts.evidence.append("system/status reports maintenance")
        elif facts.cause is C.AMBIGUOUS_AUTH:
            facts.candidates = AMBIGUOUS_CANDIDATES
            facts.evidence.append(_ambiguity(facts, ips))
        elif facts.cause is C.CLOCK_SKEW and offset is not None:
            facts.evidence.append(
                f"Binance refused our timestamp (-1021): its clock is {offset:+.0f} ms from ours (/api/v3/time); "
                f"it accepts {self.settings.recv_window_ms} ms behind (recvWindow) and 1000 ms ahead"
            )

    def _authority_lapsed(self, facts: KeyFacts) -> bool:
        return (
            facts.expiry_kind == "trading_authority"
            and facts.expires_at is not None
            and facts.expires_at.timestamp() * 1000 <= self.clock_ms()
            and "enableSpotAndMarginTrading" not in facts.native_permissions
        )

    def _refusal(self, facts: KeyFacts, probe: Probe, lapsed: bool) -> Cause:
        """The -2015 of `probe` from a key that works from our address: which permission failed."""
        flag = NEEDED_FLAG[probe]
        introspection = facts.outcomes.get(Probe.INTROSPECTION)
        flags_known = introspection is not None and introspection.ok
        if probe is Probe.TRADE and lapsed:
            return C.KEY_EXPIRED
        if probe is Probe.FUTURES:
            opened = facts.account_flags.get("isFutureEnabled")
            facts.futures_active = opened if isinstance(opened, bool) else None
            if opened is False or flag in facts.native_permissions:
                # Doc: a key created before the futures account was opened cannot use the Futures API.
                facts.futures_active = False
                why = "account/info says it is not opened" if opened is False else "enableFutures is on"
                facts.evidence.append(f"futures account answered -2015 and {why}: futures are not usable")
                return C.FUTURES_NOT_OPENED
        state = f"{flag} is off" if flags_known else f"the one behind {flag}"
        facts.evidence.append(
            f"{NAMES[probe]} answered -2015 while other calls answered, so the key exists and our address "
            f"is allowed: the permission it needs is missing ({state})"
        )
        return C.PERMISSION_DENIED

    # -- reading answers --------------------------------------------------------------------------

    def classify(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        body = raw.json()
        code = body.get("code") if isinstance(body, dict) and isinstance(body.get("code"), int) else None
        if raw.status < 300 and code is None:
            if isinstance(body, dict | list):
                return ProbeOutcome(
                    probe, C.OK, raw.status, data=body if isinstance(body, dict) else {"items": body}
                )
            return ProbeOutcome(probe, C.UNEXPECTED, raw.status, message="a success without a JSON body")
        message = str(body.get("msg") or "") if isinstance(body, dict) and code is not None else ""
        http = classify_http(probe, raw)
        retry_after = http.retry_after_s if http is not None else None
        data: dict[str, Any] = {}
        if m := _REQUEST_IP.search(message):
            data["request_ip"] = m.group(1)
        if m := _BANNED_UNTIL.search(message):
            data["banned_until_ms"] = until = int(m.group(1))
            retry_after = max(0.0, (until - self.clock_ms()) / 1000) if retry_after is None else retry_after
        cause = self._cause(probe, raw.status, code, message) or (http.cause if http else C.UNEXPECTED)
        text = message or (f"HTTP {raw.status} without a Binance answer" if cause is C.UNEXPECTED else None)
        return ProbeOutcome(
            probe,
            cause,
            raw.status,
            None if code is None else str(code),
            text,
            retry_after_s=retry_after,
            data=data,
        )

    def _cause(self, probe: Probe, status: int, code: int | None, message: str) -> Cause | None:
        if status in HTTP_CAUSES:
            return HTTP_CAUSES[status]
        if code in (-2010, -2011):
            refusal = next((c for text, c in ORDER_REFUSALS if text in message.lower()), None)
            if refusal is not None:
                return refusal
        if probe is Probe.TRADE and code in ORDER_VALIDATION_CODES:
            return C.OK
        if probe is Probe.DEPOSIT_ADDRESS and code in self.settings.deposit_missing_codes:
            return C.NOT_FOUND
        if code is None:
            return None
        return self.codes.get(code, C.UNEXPECTED if status < 500 else None)


@functools.lru_cache(maxsize=256)
def _permissions(on: frozenset[str]) -> tuple[tuple[str, ...], frozenset[Permission]]:
    """The flags that are on, sorted, and the unified permissions they grant; keys share a few sets."""
    granted = frozenset[Permission]().union(
        *(perms for flags, perms in PERMISSION_MAP if on.issuperset(flags))
    )
    return tuple(sorted(on)), granted


def _instant(ms: Any) -> datetime | None:
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


def _rank(cause: Cause) -> int:
    return DECISIVENESS.index(cause) if cause in DECISIVENESS else len(DECISIVENESS)


def _ambiguity(facts: KeyFacts, ips: Sequence[str]) -> str:
    seen = next((o.data["request_ip"] for o in facts.outcomes.values() if "request_ip" in o.data), None)
    where = f" (Binance saw the request from {seen})" if seen else ""
    if len(ips) > 1:
        return (
            f"Binance answers -2015 for an unknown, deleted or other-environment key and for a whitelist "
            f"that leaves out our addresses alike{where}; no egress address got an answer"
        )
    return (
        f"Binance answers -2015 for an unknown key and for an IP outside the whitelist alike{where}; "
        "only one egress address is configured, so we cannot tell which"
    )
