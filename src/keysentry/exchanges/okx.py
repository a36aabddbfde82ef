"""OKX v5 adapter: probes, error-code table and permission mapping (reference section 2).

One signed call tells almost everything: `GET /api/v5/account/config` answers the account id
(`uid`), the key's own permissions (`perm`), its IP binding (`ip`), its label and the account's
KYC level and mode (`acctLv`). OKX's error codes tell key, passphrase, signature, clock and IP
apart, so OKX is diagnosed without guessing. A check makes one parallel round:

    account/config (introspection)  account/balance (reads work)  [asset/deposit-address?ccy=X]

and, only when something failed, a second one: `public/time` (clock offset) and, for
temporary causes, `system/status` (maintenance).

Choices where the reference leaves room:
- No trade probe. OKX has no dry-run order endpoint; the trade permission is read from `perm`,
  which is the key's own documented permission list. An order with an invalid size would be
  a write on a real exchange whose refusal code is unverified, to learn nothing `perm` does
  not say. (A KYC or region block that only applies to trading stays unseen.)
- Futures: `acctLv` 1 (Spot mode) cannot trade derivatives; no positions call is needed.
- `trade` maps to every trading permission (OKX's Trade covers all products); moves between
  the owner's own accounts need only Trade. `withdraw` maps to withdraw and transfer: OKX's
  internal transfer to another user is a withdrawal (dest=3) under the Withdraw permission.
- 50119 ("API key doesn't exist") is a key of another OKX site or a deleted one: UNKNOWN_KEY,
  so the engine looks the key up on the other sites. 50101 proves a demo/live mismatch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

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
from keysentry.exchanges.signing import canonical_query, okx_signature, okx_timestamp
from keysentry.exchanges.transport import HttpTransport, RawResponse

__all__ = ["CODES", "ENVIRONMENTS", "PERMISSIONS", "OkxAdapter", "OkxSettings"]

# -- tables -----------------------------------------------------------------------------------

ENVIRONMENTS: Mapping[str, Mapping[str, str]] = {
    "mainnet": {"rest": "https://www.okx.com"},
    # Demo trading is told apart by the x-simulated-trading header; the current doc names this host.
    "demo": {"rest": "https://openapi.okx.com"},
    "eea": {"rest": "https://my.okx.com"},  # accounts registered on my.okx.com
    "us": {"rest": "https://app.okx.com"},  # accounts registered on app.okx.com
}
DEMO_HEADERS: Mapping[str, str] = {"x-simulated-trading": "1"}

P = Permission
PERMISSIONS: Mapping[str, frozenset[Permission]] = {
    "read_only": READ_PERMISSIONS,
    "trade": frozenset({P.SPOT_TRADE, P.MARGIN_TRADE, P.FUTURES_TRADE, P.OPTIONS_TRADE}),
    "withdraw": frozenset({P.WITHDRAW, P.TRANSFER}),
}
# acctLv -> can the account trade derivatives (1 Spot, 2 Futures, 3 Multi-currency, 4 Portfolio margin)
FUTURES_BY_ACCOUNT_LEVEL: Mapping[str, bool] = {"1": False, "2": True, "3": True, "4": True}
ACCOUNT_FLAGS: Mapping[str, str] = {
    "kycLv": "kyc_level", "acctLv": "account_level", "mainUid": "main_uid", "type": "account_type",
    "level": "fee_level",
}  # fmt: skip
# Doc: keys without an IP binding that can trade or withdraw expire when unused (demo keys never do).
EXPIRING_PERMS = frozenset({"trade", "withdraw"})
KEY_FORMAT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

C = Cause
CODES: Mapping[str, Cause] = {
    # 50111 also answers malformed keys, told apart by the key's format; 50103: the key was empty.
    "50111": C.UNKNOWN_KEY, "50119": C.UNKNOWN_KEY, "50103": C.MALFORMED_KEY,
    "50101": C.WRONG_ENVIRONMENT, "50102": C.CLOCK_SKEW, "50113": C.BAD_SIGNATURE,
    "50104": C.BAD_PASSPHRASE, "50105": C.BAD_PASSPHRASE,  # 50104: no passphrase was given
    "50110": C.IP_NOT_ALLOWED,
    # Missing sign or timestamp, bad timestamp format, wrong method: our bugs. 50114 "Invalid
    # authorization." has no documented meaning. All kept with their code.
    "50106": C.UNEXPECTED, "50107": C.UNEXPECTED, "50112": C.UNEXPECTED, "50114": C.UNEXPECTED,
    "50115": C.UNEXPECTED,
    "50120": C.PERMISSION_DENIED, "50030": C.PERMISSION_DENIED,
    "50035": C.PERMISSION_DENIED,  # the endpoint needs an IP-bound key
    "50100": C.API_DISABLED, "50012": C.ACCOUNT_BANNED,
    "50007": C.ACCOUNT_FROZEN, "50009": C.ACCOUNT_FROZEN, "50027": C.ACCOUNT_FROZEN, "50029": C.ACCOUNT_FROZEN,
    "50060": C.KYC_REQUIRED, "51732": C.KYC_REQUIRED, "59113": C.KYC_REQUIRED,
    "50051": C.REGION_RESTRICTED, "50059": C.REGION_RESTRICTED, "50121": C.REGION_RESTRICTED,
    "51155": C.REGION_RESTRICTED,
    "51010": C.FUTURES_NOT_OPENED,  # account mode without derivatives
    "50011": C.RATE_LIMITED, "50013": C.RATE_LIMITED, "50061": C.RATE_LIMITED,
    "50001": C.MAINTENANCE, "50005": C.SERVER_ERROR, "50026": C.SERVER_ERROR,
}  # fmt: skip
# Codes that do not pin one cause: the other possibilities, most likely first.
ALTERNATIVES: Mapping[str, tuple[Cause, ...]] = {
    "50111": (C.KEY_EXPIRED,),  # OKX deletes expired keys and then answers like for an unknown one
    "50119": (C.WRONG_ENVIRONMENT, C.KEY_EXPIRED),
    "50007": (C.ACCOUNT_BANNED,),
    "50012": (C.ACCOUNT_FROZEN,),
}
NOTES: Mapping[str, str] = {
    "50111": "OKX answers 50111 for a key it does not know, including one it deleted after 14 days "
    "unused without an IP binding",
    "50119": "OKX answers 50119 for a key registered on another OKX site (www, my, app.okx.com) "
    "or a deleted one",
    "50101": "the key belongs to {other} trading, and this check ran against {ours} trading",
    "50007": "OKX's 50007 (User blocked) does not say whether the account is frozen or banned",
    "50012": "OKX's 50012 (Account status invalid) does not say whether the account is banned or frozen",
}
# Most decisive first: a fact about the key beats the exchange failing to answer this time.
DECISIVENESS: tuple[Cause, ...] = (
    C.MALFORMED_KEY, C.UNKNOWN_KEY, C.WRONG_ENVIRONMENT, C.KEY_EXPIRED, C.CLOCK_SKEW,
    C.BAD_PASSPHRASE, C.BAD_SIGNATURE, C.IP_NOT_ALLOWED, C.API_DISABLED, C.ACCOUNT_BANNED,
    C.ACCOUNT_FROZEN, C.KYC_REQUIRED, C.REGION_RESTRICTED, C.PERMISSION_DENIED,
    C.FUTURES_NOT_OPENED, C.IP_BANNED, C.MAINTENANCE, C.RATE_LIMITED, C.SERVER_ERROR,
    C.TIMEOUT, C.NETWORK, C.UNEXPECTED,
)  # fmt: skip
# The probes that speak for the key; an unexpected answer of another one decides nothing.
CORE_PROBES = frozenset({Probe.INTROSPECTION, Probe.BALANCE})
PATHS: Mapping[Probe, str] = {
    Probe.INTROSPECTION: "/api/v5/account/config", Probe.BALANCE: "/api/v5/account/balance",
    Probe.DEPOSIT_ADDRESS: "/api/v5/asset/deposit-address", Probe.SERVER_TIME: "/api/v5/public/time",
    Probe.SYSTEM_STATUS: "/api/v5/system/status",
}  # fmt: skip
LIST_PROBES = frozenset({Probe.DEPOSIT_ADDRESS, Probe.SYSTEM_STATUS})  # data read as {"items": [...]}


@dataclass(frozen=True, slots=True)
class OkxSettings:
    """What the reference leaves unverified or open, with the most likely value as default."""

    inactivity_expiry_days: int = 14  # doc
    # No Retry-After is documented; the private limits count in 2 s windows (doc): wait one.
    rate_limit_wait_s: float | None = 2.0
    # Entries replacing CODES' where answers prove otherwise, e.g. {"50013": Cause.SERVER_ERROR}.
    code_overrides: Mapping[str, Cause] = field(default_factory=dict)


_DEFAULTS = OkxSettings()


class OkxAdapter(ExchangeAdapter):
    name = "okx"
    environments: ClassVar[Mapping[str, Mapping[str, str]]] = ENVIRONMENTS
    needs_passphrase = True

    def __init__(
        self,
        transport: HttpTransport,
        *,
        environment: str = "mainnet",
        base_url: str | None = None,
        clock_ms: Any = now_ms,
        settings: OkxSettings | None = None,
    ) -> None:
        super().__init__(transport, environment=environment, base_url=base_url, clock_ms=clock_ms)
        self.settings = settings or _DEFAULTS
        overrides = self.settings.code_overrides
        self.codes: Mapping[str, Cause] = {**CODES, **overrides} if overrides else CODES
        self._demo = environment == "demo"

    # -- signing glue -------------------------------------------------------------------------

    def _public(self, probe: Probe) -> SignedRequest:
        headers = dict(DEMO_HEADERS) if self._demo else {}
        return SignedRequest("GET", self.url("rest", PATHS[probe]), headers)

    def _private(self, creds: ApiCredentials, probe: Probe, query: str = "") -> SignedRequest:
        url = self.url("rest", PATHS[probe])
        # Sign the path as sent: a base URL may add a prefix in front of OKX's path.
        request_path = _path_of(url)
        if query:  # canonical_query escapes "#", so the query is all of what follows "?"
            url, request_path = f"{url}?{query}", f"{request_path}?{query}"
        ts = okx_timestamp(self.clock_ms())
        headers = {
            "OK-ACCESS-KEY": creds.api_key,
            "OK-ACCESS-SIGN": okx_signature(creds.secret.reveal(), ts, "GET", request_path, ""),
            "OK-ACCESS-TIMESTAMP": ts,
            "Content-Type": "application/json",
        }
        if creds.passphrase is not None:  # without one OKX answers 50104, which says it plainly
            headers["OK-ACCESS-PASSPHRASE"] = creds.passphrase.reveal()
        if self._demo:
            headers.update(DEMO_HEADERS)
        return SignedRequest("GET", url, headers)

    async def _ask(
        self, creds: ApiCredentials, probe: Probe, query: str = "", egress_ip: str | None = None
    ) -> ProbeOutcome:
        outcome = await self.send(probe, self._private(creds, probe, query), egress_ip=egress_ip)
        if outcome.code == "50111" and not KEY_FORMAT.fullmatch(creds.api_key):
            outcome = replace(outcome, cause=Cause.MALFORMED_KEY)
        return _scrubbed(outcome, creds)

    async def _server_time(self) -> ProbeOutcome:
        before = self.clock_ms()
        outcome = await self.send(Probe.SERVER_TIME, self._public(Probe.SERVER_TIME))
        after = self.clock_ms()
        try:  # offset against the midpoint of the round trip: half the latency each way
            offset = float(outcome.data["ts"]) - (before + after) / 2
        except (KeyError, TypeError, ValueError):
            return outcome
        return replace(outcome, data={**outcome.data, "offset_ms": offset})

    # -- the check ------------------------------------------------------------------------------

    async def check(self, request: CheckRequest) -> KeyFacts:
        creds = request.credentials
        facts = KeyFacts(exchange=self.name, environment=self.environment)
        probes = [self._ask(creds, Probe.INTROSPECTION), self._ask(creds, Probe.BALANCE)]
        if request.deposit_currency:
            query = canonical_query({"ccy": request.deposit_currency})
            probes.append(self._ask(creds, Probe.DEPOSIT_ADDRESS, query))
        for outcome in await self.gather(*probes):
            facts.outcomes[outcome.probe] = outcome
        self._read_config(facts)
        deposit = facts.outcome(Probe.DEPOSIT_ADDRESS)
        if request.deposit_currency and deposit is not None and deposit.ok:
            found = any(isinstance(a, Mapping) and a.get("addr") for a in deposit.data.get("items", ()))
            facts.deposit_addresses[request.deposit_currency] = found
        self._decide(facts, request)
        if any(not o.ok for o in facts.outcomes.values()):
            await self._second_round(facts, creds)
        return facts

    def _read_config(self, facts: KeyFacts) -> None:
        config = facts.outcome(Probe.INTROSPECTION)
        if config is None or not config.ok:
            return
        cfg = config.data
        facts.account_id = str(cfg.get("uid") or "") or None
        native, facts.permissions = _permissions(str(cfg.get("perm") or ""))
        facts.native_permissions = native
        ips = _items(str(cfg.get("ip") or ""))
        facts.ip_whitelist, facts.ip_restricted = ips, bool(ips)
        facts.label = str(cfg.get("label") or "") or None
        facts.futures_active = FUTURES_BY_ACCOUNT_LEVEL.get(str(cfg.get("acctLv")))
        facts.account_flags = {flag: cfg[raw] for raw, flag in ACCOUNT_FLAGS.items() if raw in cfg}
        if not ips and not EXPIRING_PERMS.isdisjoint(native) and not self._demo:
            # OKX exposes no expiry; this check is a use, so the 14 days start now.
            now = datetime.fromtimestamp(self.clock_ms() / 1000, UTC)
            expiry = timedelta(days=self.settings.inactivity_expiry_days)
            facts.expires_at, facts.expiry_kind = now + expiry, "inactivity"

    def _decide(self, facts: KeyFacts, request: CheckRequest) -> None:
        failed = [
            o
            for o in facts.outcomes.values()
            if not o.ok and (o.probe in CORE_PROBES or o.cause is not Cause.UNEXPECTED)
        ]
        if failed:
            worst = min(failed, key=_rank)
            facts.cause = worst.cause
            alternatives = ALTERNATIVES.get(worst.code or "", ())
            facts.candidates = (worst.cause, *alternatives) if alternatives else ()
            facts.evidence.append(_describe(worst))
            note = NOTES.get(worst.code or "")
            if note and worst.cause is not Cause.MALFORMED_KEY:
                ours, other = ("demo", "live") if self._demo else ("live", "demo")
                facts.evidence.append(note.format(ours=ours, other=other))
            if worst.cause is Cause.MALFORMED_KEY:
                facts.evidence.append("the key is not a lowercase UUID (8-4-4-4-12 hex), OKX's key format")
        elif request.needs_futures and facts.futures_active is False:
            facts.cause = Cause.FUTURES_NOT_OPENED
            level = facts.account_flags.get("account_level")
            facts.evidence.append(
                f"acctLv {level} (Spot mode) cannot trade derivatives; Futures (2), Multi-currency "
                "margin (3) or Portfolio margin (4) mode can"
            )

    async def _second_round(self, facts: KeyFacts, creds: ApiCredentials) -> None:
        asks = [self._server_time()]
        if facts.cause in TEMPORARY_CAUSES:
            asks.append(self.send(Probe.SYSTEM_STATUS, self._public(Probe.SYSTEM_STATUS)))
        if facts.cause is Cause.IP_NOT_ALLOWED:
            # The first configured address was refused: see whether another one is whitelisted.
            others = self.transport.egress_ips[1:]
            asks += [self._ask(creds, Probe.INTROSPECTION, egress_ip=ip) for ip in others]
        for outcome in await self.gather(*asks):
            if outcome.probe is Probe.SERVER_TIME:
                facts.outcomes[Probe.SERVER_TIME] = outcome
                facts.server_time_offset_ms = outcome.data.get("offset_ms")
            elif outcome.probe is Probe.SYSTEM_STATUS:
                facts.outcomes[Probe.SYSTEM_STATUS] = outcome
                self._read_status(facts, outcome)
            else:
                verdict = "answered" if outcome.ok else f"also refused ({outcome.code or outcome.cause})"
                facts.evidence.append(f"account/config {verdict} from {outcome.egress_ip}")
        offset = facts.server_time_offset_ms
        if facts.cause is Cause.CLOCK_SKEW and offset is not None:
            seconds = round(offset / 1000, 1) or 0.0  # never "-0.0"
            facts.evidence.append(
                f"OKX's clock is {seconds:+.1f} s from ours (public/time); it refuses "
                "timestamps more than 30 s off"
            )

    def _read_status(self, facts: KeyFacts, outcome: ProbeOutcome) -> None:
        if not outcome.ok:
            return
        env = "2" if self._demo else "1"  # OKX's env: 1 live trading, 2 demo trading
        ongoing = [
            e
            for e in outcome.data.get("items", ())
            if isinstance(e, Mapping) and e.get("state") == "ongoing" and str(e.get("env") or env) == env
        ]
        facts.system_status = "maintenance" if ongoing else "normal"
        facts.evidence += [
            f"system/status lists ongoing maintenance: {e.get('title') or '?'}" for e in ongoing
        ]

    # -- reading answers --------------------------------------------------------------------------

    def classify(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        outcome = self._read(probe, raw)
        if outcome.cause is Cause.RATE_LIMITED and outcome.retry_after_s is None:
            outcome = replace(outcome, retry_after_s=self.settings.rate_limit_wait_s)
        return outcome

    def _read(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        body = raw.json()
        code = str(body["code"]) if isinstance(body, dict) and "code" in body else None
        if code == "0" and raw.status == 200 and isinstance(body, dict):
            data = _payload(probe, body.get("data"))
            if data is not None:
                return ProbeOutcome(probe, Cause.OK, raw.status, code, data=data)
            return ProbeOutcome(
                probe, Cause.UNEXPECTED, raw.status, code, "success without the expected data"
            )
        message = (str(body.get("msg") or "") or None) if isinstance(body, dict) else None
        http = classify_http(probe, raw)
        if code is not None and code in self.codes:
            retry_after = http.retry_after_s if http is not None else None
            return ProbeOutcome(probe, self.codes[code], raw.status, code, message, retry_after_s=retry_after)
        if http is not None:
            return replace(http, code=code, message=message)
        return ProbeOutcome(
            probe, Cause.UNEXPECTED, raw.status, code, message or f"HTTP {raw.status} without an OKX answer"
        )


@functools.lru_cache(maxsize=256)
def _permissions(perm: str) -> tuple[tuple[str, ...], frozenset[Permission]]:
    """`perm` ("read_only,trade") as native names and unified permissions; a few values recur."""
    native = _items(perm)
    return native, frozenset[Permission]().union(*(PERMISSIONS.get(p, frozenset()) for p in native))


def _items(text: str) -> tuple[str, ...]:
    return tuple(item for item in map(str.strip, text.split(",")) if item)


@functools.lru_cache(maxsize=64)
def _path_of(url: str) -> str:
    return urlsplit(url).path


def _payload(probe: Probe, data: Any) -> Mapping[str, Any] | None:
    if not isinstance(data, list):
        return None
    if probe in LIST_PROBES:
        return {"items": data}
    first = data[0] if data else None
    return first if isinstance(first, dict) else None


def _rank(outcome: ProbeOutcome) -> int:
    return DECISIVENESS.index(outcome.cause) if outcome.cause in DECISIVENESS else len(DECISIVENESS)


def _describe(outcome: ProbeOutcome) -> str:
    where = PATHS.get(outcome.probe, str(outcome.probe)).removeprefix("/api/v5/")
    if outcome.http_status is None:
        return f"{where}: {outcome.message or outcome.cause}"
    code = f", OKX code {outcome.code}" if outcome.code else ""
    text = f": {outcome.message}" if outcome.message else ""
    return f"{where} answered HTTP {outcome.http_status}{code}{text}"


def _scrubbed(outcome: ProbeOutcome, creds: ApiCredentials) -> ProbeOutcome:
    """The exchange's message can echo what it was sent; none of the credentials may stay in it."""
    if not outcome.message:
        return outcome
    text = outcome.message
    passphrase = creds.passphrase.reveal() if creds.passphrase else ""
    for value in filter(None, (creds.secret.reveal(), passphrase, creds.api_key)):
        text = text.replace(value, REDACTED)
    return replace(outcome, message=text)
