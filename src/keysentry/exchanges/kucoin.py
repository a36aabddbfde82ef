"""KuCoin adapter: probes, error-code table and permission mapping (reference section 4).

`GET /api/v1/user/api-key` tells the account id (`uid`), the key's permissions, its (masked) IP
whitelist, creation time and remark; KuCoin's codes tell key, signature, passphrase, clock and IP
apart. A check is one parallel round:

    user/api-key (introspection)  accounts (reads)  hf/orders/test (trade, places nothing)
    [account-overview on the futures host?]  [v3 deposit-addresses?currency=X?]

and, only when the check failed, a second one: `timestamp` (clock offset), for temporary causes
`status` (maintenance), and for an IP refusal user/api-key again from the other egress addresses.

Choices where the reference leaves room (each a table entry or a `KucoinSettings` field):
- user/api-key decides the permissions; the trade probe can only take spot_trade away (400007).
  A refusal of the trade or deposit probe for the account (KYC 400303, region 400500, frozen...)
  decides the check, since reads keep working for such accounts; its permission refusal does not.
  Any other failure of those probes only leaves their fact unknown (said in the evidence), except
  the futures account not answering when the profile needs it: the check is then temporary.
- 400007 on user/api-key, which any KuCoin key (all have General) may read, is the account's API
  access switched off. On the futures account with the Futures permission granted, it is a futures
  account never opened (KuCoin cannot grant Futures before, so the refusal is the account's).
- 400003 covers unknown, deleted and old sandbox keys; KuCoin deletes keys instead of expiring
  them, so KEY_EXPIRED is a candidate and expires_at stays None (no expiry field exists).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
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
from keysentry.exchanges.signing import canonical_json, canonical_query, kucoin_passphrase, kucoin_signature
from keysentry.exchanges.transport import HttpTransport, RawResponse

__all__ = ["CODES", "ENVIRONMENTS", "PERMISSIONS", "KucoinAdapter", "KucoinSettings"]

P, C = Permission, Cause

# -- tables -----------------------------------------------------------------------------------------

# KuCoin retired its sandbox (sandbox.kucoin.com): mainnet is the only environment.
ENVIRONMENTS: Mapping[str, Mapping[str, str]] = {
    "mainnet": {"spot": "https://api.kucoin.com", "futures": "https://api-futures.kucoin.com"},
}
ROUTES: Mapping[Probe, tuple[str, str, str]] = {  # probe -> (family, method, path)
    Probe.INTROSPECTION: ("spot", "GET", "/api/v1/user/api-key"),
    Probe.BALANCE: ("spot", "GET", "/api/v1/accounts"),
    Probe.TRADE: ("spot", "POST", "/api/v1/hf/orders/test"),
    Probe.FUTURES: ("futures", "GET", "/api/v1/account-overview"),
    Probe.DEPOSIT_ADDRESS: ("spot", "GET", "/api/v3/deposit-addresses"),
    Probe.SERVER_TIME: ("spot", "GET", "/api/v1/timestamp"),
    Probe.SYSTEM_STATUS: ("spot", "GET", "/api/v1/status"),
}
LIST_PROBES = frozenset({Probe.BALANCE, Probe.DEPOSIT_ADDRESS})  # data read as {"items": [...]}

PERMISSIONS: Mapping[str, frozenset[Permission]] = {
    "General": READ_PERMISSIONS,
    "Spot": frozenset({P.SPOT_TRADE}),
    "Margin": frozenset({P.MARGIN_TRADE}),
    "Futures": frozenset({P.FUTURES_TRADE}),
    # KuCoin has no "Withdraw" permission: "Transfer" is its withdrawal right (the web page calls
    # it "Withdrawal", the legacy docs "Allows a key to withdraw funds"). Funds sent out can go to
    # another KuCoin user as well as off the exchange, so it grants both withdraw and transfer.
    "Transfer": frozenset({P.WITHDRAW, P.TRANSFER}),
    "InnerTransfer": frozenset({P.TRANSFER}),  # "Flex Transfer" between the user's own accounts
    "Earn": frozenset(),  # KuCoin Earn products: nothing of ours
}
ACCOUNT_FLAGS: Mapping[str, str] = {
    "isMaster": "is_master", "subName": "sub_name", "apiVersion": "key_version",
}  # fmt: skip
KEY_FORMAT = re.compile(r"[0-9a-f]{24}")
# What a header can carry as is (aiohttp refuses line breaks; others would be re-encoded).
KEY_SAFE, PASSPHRASE_SAFE = re.compile(r"[\x21-\x7e]+"), re.compile(r"[\x20-\x7e]+")

CODES: Mapping[str, Cause] = {
    "400001": C.UNEXPECTED,  # a KC-API-* header missing: our bug, kept with its code
    "400002": C.CLOCK_SKEW, "400003": C.UNKNOWN_KEY, "400004": C.BAD_PASSPHRASE,
    "400005": C.BAD_SIGNATURE, "400006": C.IP_NOT_ALLOWED, "400007": C.PERMISSION_DENIED,
    "411100": C.ACCOUNT_FROZEN, "400700": C.ACCOUNT_BANNED,  # 400700: risk control
    "400303": C.KYC_REQUIRED, "200009": C.KYC_REQUIRED,
    "400500": C.REGION_RESTRICTED, "126037": C.REGION_RESTRICTED, "126046": C.REGION_RESTRICTED,
    "130315": C.REGION_RESTRICTED,
    "429000": C.RATE_LIMITED, "500000": C.SERVER_ERROR,
}  # fmt: skip
# Maintenance has no code of its own (HTTP 503): classify_http answers it.
PROBE_CODES: Mapping[tuple[Probe, str], Cause] = {
    # Any key may read its own info, so a refusal there is the account's API access.
    (Probe.INTROSPECTION, "400007"): C.API_DISABLED,
}
CANDIDATES: Mapping[str, tuple[Cause, ...]] = {"400003": (C.UNKNOWN_KEY, C.KEY_EXPIRED)}
WHY: Mapping[str, str] = {
    "400003": "KuCoin answers 400003 for any key it does not know: a deleted key (KuCoin deletes keys "
    "rather than expiring them), a typo, or a key of the retired sandbox",
    "400005": "400005 comes after the key look-up: the key exists, the secret is not its own",
}
# Failures that speak for the key or the account, whichever probe gave them; most decisive first.
DECISIVE: tuple[Cause, ...] = (
    C.MALFORMED_KEY, C.UNKNOWN_KEY, C.WRONG_ENVIRONMENT, C.KEY_EXPIRED, C.CLOCK_SKEW,
    C.BAD_SIGNATURE, C.BAD_PASSPHRASE, C.IP_NOT_ALLOWED, C.API_DISABLED, C.ACCOUNT_BANNED,
    C.ACCOUNT_FROZEN, C.KYC_REQUIRED, C.REGION_RESTRICTED, C.FUTURES_NOT_OPENED,
)  # fmt: skip
# After those: any failure of the probes that speak for the key (or of the futures account when
# the profile needs it), the exchange's own failures last.
RANKING: tuple[Cause, ...] = (
    *DECISIVE, C.PERMISSION_DENIED, C.IP_BANNED, C.MAINTENANCE, C.RATE_LIMITED, C.SERVER_ERROR,
    C.TIMEOUT, C.NETWORK, C.UNEXPECTED,
)  # fmt: skip
CORE_PROBES = frozenset({Probe.INTROSPECTION, Probe.BALANCE})


# A post-only limit order far below any BTC price; the test endpoint places nothing anyway.
TRADE_PROBE: Mapping[str, Any] = {
    "symbol": "BTC-USDT", "side": "buy", "type": "limit", "price": "1", "size": "0.001", "postOnly": True,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class KucoinSettings:
    """What the reference leaves unverified or open, with the most likely value as default."""

    # Unverified order of KuCoin's checks. With the passphrase first, a wrong secret also reads as
    # 400004 for v2/v3 keys (their passphrase header is HMAC'd with the secret).
    passphrase_checked_first: bool = False
    rate_limit_reset_unit_s: float = 0.001  # gw-ratelimit-reset: "ms until reset" (unverified)
    maintenance_statuses: frozenset[str] = frozenset({"close", "cancelonly"})  # beside "open"
    futures_currency: str = "USDT"
    trade_probe: Mapping[str, Any] = field(default_factory=lambda: dict(TRADE_PROBE))
    # Entries replacing CODES' where answers prove otherwise, e.g. {"400700": Cause.ACCOUNT_FROZEN}.
    code_overrides: Mapping[str, Cause] = field(default_factory=dict)


class KucoinAdapter(ExchangeAdapter):
    name: ClassVar[str] = "kucoin"
    environments: ClassVar[Mapping[str, Mapping[str, str]]] = ENVIRONMENTS
    needs_passphrase: ClassVar[bool] = True

    def __init__(
        self,
        transport: HttpTransport,
        *,
        environment: str = "mainnet",
        base_url: str | None = None,
        clock_ms: Any = now_ms,
        settings: KucoinSettings | None = None,
    ) -> None:
        super().__init__(transport, environment=environment, base_url=base_url, clock_ms=clock_ms)
        self.settings = settings or _DEFAULTS
        overrides = self.settings.code_overrides
        self.codes: Mapping[str, Cause] = {**CODES, **overrides} if overrides else CODES
        self._trade_body = _trade_body_around_client_oid(self.settings.trade_probe)

    # -- signing glue -----------------------------------------------------------------------------

    def _signed(
        self, creds: ApiCredentials, probe: Probe, query: str = "", passphrase: str | None = None
    ) -> SignedRequest:
        """The signed request; `passphrase` is the passphrase header, when the caller has it already."""
        family, method, path = ROUTES[probe]
        url = self.url(family, path)
        endpoint = _path_of(url)  # sign the path as sent: a base URL may put a prefix before KuCoin's
        if query:  # canonical_query escapes "#", so the query is all of what follows "?"
            url, endpoint = f"{url}?{query}", f"{endpoint}?{query}"
        body = ""
        if probe is Probe.TRADE:
            oid = uuid.uuid4().hex
            head, tail = self._trade_body
            body = f"{head}{oid}{tail}" if tail is not None else canonical_json({**head, "clientOid": oid})
        ts, secret = int(self.clock_ms()), creds.secret.reveal()
        headers = {
            "KC-API-KEY": creds.api_key,
            "KC-API-SIGN": kucoin_signature(secret, ts, method, endpoint, body),
            "KC-API-TIMESTAMP": str(ts),
            "KC-API-PASSPHRASE": _passphrase_header(creds) if passphrase is None else passphrase,
            "KC-API-KEY-VERSION": str(creds.key_version),
        }
        if body:
            headers["Content-Type"] = "application/json"
        return SignedRequest(method, url, headers, body.encode() if body else None)

    def _public(self, probe: Probe) -> SignedRequest:
        family, method, path = ROUTES[probe]
        return SignedRequest(method, self.url(family, path), {})

    async def _ask(
        self,
        creds: ApiCredentials,
        probe: Probe,
        query: str = "",
        egress: str | None = None,
        passphrase: str | None = None,
    ) -> ProbeOutcome:
        outcome = await self.send(probe, self._signed(creds, probe, query, passphrase), egress_ip=egress)
        if outcome.code == "400003" and not KEY_FORMAT.fullmatch(creds.api_key):
            outcome = replace(outcome, cause=C.MALFORMED_KEY)
        return _scrubbed(outcome, creds)

    # -- the check --------------------------------------------------------------------------------

    async def check(self, request: CheckRequest) -> KeyFacts:
        facts = KeyFacts(exchange=self.name, environment=self.environment)
        creds = request.credentials
        if _unsendable(facts, creds):
            return facts
        ips = request.egress_ips or self.transport.egress_ips
        egress = ips[0] if ips else None
        pp = _passphrase_header(creds)  # an HMAC for v2/v3 keys, the same on every request: made once
        asks = [
            self._ask(creds, p, "", egress, pp) for p in (Probe.INTROSPECTION, Probe.BALANCE, Probe.TRADE)
        ]
        if request.needs_futures:
            query = canonical_query({"currency": self.settings.futures_currency})
            asks.append(self._ask(creds, Probe.FUTURES, query, egress, pp))
        if request.deposit_currency:
            query = canonical_query({"currency": request.deposit_currency.strip().upper()})
            asks.append(self._ask(creds, Probe.DEPOSIT_ADDRESS, query, egress, pp))
        facts.outcomes = {o.probe: o for o in await self.gather(*asks)}
        intro = facts.outcomes[Probe.INTROSPECTION]
        if intro.ok:
            _read_key(facts, intro.data)
        _read_probes(facts, request)
        self._decide(facts, request)
        if facts.cause is not C.OK:
            await self._second_round(facts, creds, ips)
        return facts

    def _decide(self, facts: KeyFacts, request: CheckRequest) -> None:
        def decides(o: ProbeOutcome) -> bool:
            needed_futures = o.probe is Probe.FUTURES and o.cause in TEMPORARY_CAUSES
            return o.cause in DECISIVE or o.probe in CORE_PROBES or needed_futures

        failed = [o for o in facts.outcomes.values() if not o.ok]
        deciding = [o for o in failed if decides(o)]
        facts.evidence += [_note(o) for o in failed if not decides(o)]
        if not deciding:
            return
        worst = min(deciding, key=_rank)
        code = worst.code or ""
        facts.cause, facts.candidates = worst.cause, CANDIDATES.get(code, ())
        facts.evidence.append(_note(worst))
        if worst.cause is C.MALFORMED_KEY:
            facts.candidates = ()
            facts.evidence.append("the key is not 24 digits and lowercase a-f, KuCoin's key format")
        elif code in WHY:
            facts.evidence.append(WHY[code])
        elif worst.cause is C.BAD_PASSPHRASE:
            self._passphrase_note(facts, request.credentials)
        elif worst.cause is C.API_DISABLED:
            facts.evidence.append("user/api-key needs only General, which every KuCoin key has")

    def _passphrase_note(self, facts: KeyFacts, creds: ApiCredentials) -> None:
        if creds.key_version == 1:
            facts.evidence.append("a version 1 key sends the passphrase as typed: it is not the key's")
        elif self.settings.passphrase_checked_first:
            facts.candidates = (C.BAD_PASSPHRASE, C.BAD_SIGNATURE)
            facts.evidence.append(
                "KuCoin checks the passphrase before the signature and a v2/v3 passphrase is HMAC'd "
                "with the secret, so a wrong secret reads as a wrong passphrase too"
            )
        else:
            facts.evidence.append("400004 comes after the signature check: the secret is right")

    async def _second_round(self, facts: KeyFacts, creds: ApiCredentials, ips: tuple[str, ...]) -> None:
        egress = ips[0] if ips else None
        asks = [self._server_time(egress)]
        if facts.cause in TEMPORARY_CAUSES or facts.cause is C.UNEXPECTED:
            asks.append(self.send(Probe.SYSTEM_STATUS, self._public(Probe.SYSTEM_STATUS), egress_ip=egress))
        if facts.cause is C.IP_NOT_ALLOWED:
            # The first address was refused: see whether another configured one is whitelisted.
            asks += [self._ask(creds, Probe.INTROSPECTION, egress=ip) for ip in ips[1:]]
        for outcome in await self.gather(*asks):
            if outcome.probe is not Probe.INTROSPECTION:
                facts.outcomes[outcome.probe] = outcome
            elif outcome.ok:
                if facts.permissions is None:  # what the key is, learnt from an address it accepts
                    _read_key(facts, outcome.data)
                first = facts.outcomes[Probe.INTROSPECTION]
                facts.evidence.append(
                    f"user/api-key answered from {outcome.egress_ip} but {first.code} from {first.egress_ip}"
                )
            else:
                facts.evidence.append(_note(outcome))
        self._read_clock(facts)
        self._read_status(facts)

    async def _server_time(self, egress: str | None) -> ProbeOutcome:
        sent = self.clock_ms()
        outcome = await self.send(Probe.SERVER_TIME, self._public(Probe.SERVER_TIME), egress_ip=egress)
        midpoint = (sent + self.clock_ms()) / 2  # the exchange read its clock about half-way
        server = outcome.data.get("server_ms")
        if not outcome.ok or not isinstance(server, float):
            return outcome
        return replace(outcome, data={**outcome.data, "offset_ms": server - midpoint})

    def _read_clock(self, facts: KeyFacts) -> None:
        measured = facts.outcomes.get(Probe.SERVER_TIME)
        offset = measured.data.get("offset_ms") if measured is not None else None
        if not isinstance(offset, float):
            return
        facts.server_time_offset_ms = offset
        note = f"timestamp: KuCoin's clock is {offset / 1000:+.1f} s from ours"
        if facts.cause is C.CLOCK_SKEW:
            note += "; it refuses requests signed more than 5 s off"
        facts.evidence.append(note)

    def _read_status(self, facts: KeyFacts) -> None:
        answer = facts.outcomes.get(Probe.SYSTEM_STATUS)
        if answer is None or not answer.ok:
            return
        status = str(answer.data.get("status") or "")
        down = status in self.settings.maintenance_statuses
        facts.system_status = "maintenance" if down else "normal" if status == "open" else None
        if down:
            facts.evidence.append(
                f"status: KuCoin reports {status!r} ({answer.data.get('msg') or 'no message'})"
            )
            if facts.cause in {C.SERVER_ERROR, C.UNEXPECTED}:
                facts.cause = C.MAINTENANCE

    # -- reading answers ----------------------------------------------------------------------------

    def classify(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        body = raw.json()
        envelope = body if isinstance(body, dict) else {}
        code = str(envelope["code"]) if "code" in envelope else None
        message = str(envelope.get("msg") or "") or None
        if code == "200000" and raw.status == 200:
            data = _payload(probe, envelope.get("data"))
            if data is None:
                return ProbeOutcome(
                    probe, C.UNEXPECTED, raw.status, code, "success without the expected data"
                )
            return ProbeOutcome(probe, C.OK, raw.status, code, data=data)
        http = classify_http(probe, raw)
        cause = PROBE_CODES.get((probe, code or "")) or self.codes.get(code or "")
        if cause is None and http is not None:
            cause = http.cause
        retry = http.retry_after_s if http is not None else None
        if cause is C.RATE_LIMITED:
            retry = retry if retry is not None else self._reset_s(raw)
        if cause is None:
            cause, message = C.UNEXPECTED, message or f"HTTP {raw.status} without a KuCoin answer"
        return ProbeOutcome(probe, cause, raw.status, code, message, retry_after_s=retry)

    def _reset_s(self, raw: RawResponse) -> float | None:
        reset = raw.headers.get("gw-ratelimit-reset", "")
        return int(reset) * self.settings.rate_limit_reset_unit_s if reset.isdigit() else None


# -- parsing helpers --------------------------------------------------------------------------------


_DEFAULTS = KucoinSettings()
_OID = "keysentry-client-oid"  # stands for the clientOid while the rest of the body is serialised


def _trade_body_around_client_oid(probe: Mapping[str, Any]) -> tuple[Any, str | None]:
    """The trade probe's JSON body as (text before the clientOid, text after it): serialised once,
    a fresh clientOid goes between. (probe, None) when the probe's own values hold the marker."""
    text = canonical_json({**probe, "clientOid": _OID})
    if text.count(_OID) != 1:
        return probe, None
    head, _, tail = text.partition(_OID)
    return head, tail


@functools.lru_cache(maxsize=64)
def _path_of(url: str) -> str:
    return urlsplit(url).path


def _payload(probe: Probe, data: Any) -> Mapping[str, Any] | None:
    if probe in LIST_PROBES:
        return {"items": data} if isinstance(data, list) else None
    if probe is Probe.SERVER_TIME:
        ok = isinstance(data, int) and not isinstance(data, bool)
        return {"server_ms": float(data)} if ok else None
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if k != "apiKey"}  # the key itself stays out of outcomes


def _read_key(facts: KeyFacts, data: Mapping[str, Any]) -> None:
    """Fill the facts from a user/api-key answer."""
    facts.account_id = _text(data.get("uid"))
    native = tuple(_split(data.get("permission")))
    facts.native_permissions = native
    facts.permissions = frozenset[Permission]().union(*(PERMISSIONS.get(n, frozenset()) for n in native))
    # "" (or no field) when the key has no whitelist; entries come masked, e.g. "203.**.154".
    ips = tuple(_split(data.get("ipWhitelist")))
    facts.ip_whitelist, facts.ip_restricted = ips, bool(ips)
    if any("*" in ip for ip in ips):
        facts.evidence.append(
            f"KuCoin shows the whitelist masked ({', '.join(ips)}): kept as given, it cannot be "
            "compared with our egress addresses"
        )
    created = data.get("createdAt")
    if isinstance(created, int) and not isinstance(created, bool):
        facts.created_at = datetime.fromtimestamp(created / 1000, UTC)
    facts.label = _text(data.get("remark"))
    facts.account_flags = {flag: data[raw] for raw, flag in ACCOUNT_FLAGS.items() if raw in data}


def _read_probes(facts: KeyFacts, request: CheckRequest) -> None:
    trade, granted = facts.outcomes[Probe.TRADE], facts.permissions
    if trade.cause is C.PERMISSION_DENIED and granted is not None and P.SPOT_TRADE in granted:
        facts.permissions = granted - {P.SPOT_TRADE}
        facts.evidence.append("user/api-key lists Spot but hf/orders/test answered 400007")
    futures = facts.outcome(Probe.FUTURES)
    if futures is not None and futures.ok:
        facts.futures_active = True
    elif (
        futures is not None and futures.cause is C.PERMISSION_DENIED and "Futures" in facts.native_permissions
    ):
        facts.futures_active = False
        facts.outcomes[Probe.FUTURES] = replace(futures, cause=C.FUTURES_NOT_OPENED)
        facts.evidence.append("the key has Futures, yet account-overview answered 400007: no futures account")
    deposit = facts.outcome(Probe.DEPOSIT_ADDRESS)
    if request.deposit_currency and deposit is not None and deposit.ok:
        found = any(isinstance(a, Mapping) and a.get("address") for a in deposit.data.get("items", ()))
        facts.deposit_addresses[request.deposit_currency.strip().upper()] = found


def _unsendable(facts: KeyFacts, creds: ApiCredentials) -> bool:
    """Credentials no request can carry: said in the facts, nothing sent."""
    if not KEY_SAFE.fullmatch(creds.api_key):
        facts.cause = C.MALFORMED_KEY
        facts.evidence.append("the API key holds spaces or characters a header cannot carry: not sent")
    elif creds.passphrase is None or not creds.passphrase.reveal():
        facts.cause = C.BAD_PASSPHRASE
        facts.evidence.append("no passphrase given: every KuCoin key has the one chosen when it was created")
    elif creds.key_version == 1 and not PASSPHRASE_SAFE.fullmatch(creds.passphrase.reveal()):
        facts.cause = C.BAD_PASSPHRASE
        facts.evidence.append("the passphrase holds characters a header cannot carry: not sent")
    return facts.cause is not C.OK


def _passphrase_header(creds: ApiCredentials) -> str:
    passphrase = creds.passphrase.reveal() if creds.passphrase is not None else ""
    return kucoin_passphrase(creds.secret.reveal(), passphrase, creds.key_version)


def _rank(outcome: ProbeOutcome) -> int:
    return RANKING.index(outcome.cause) if outcome.cause in RANKING else len(RANKING)


def _note(o: ProbeOutcome) -> str:
    said = " ".join(x for x in (o.code, o.message) if x) or (f"HTTP {o.http_status}" if o.http_status else "")
    where = f" from {o.egress_ip}" if o.egress_ip else ""
    path = ROUTES[o.probe][2].removeprefix("/api/")
    return f"{path}{where}: {o.cause.value} ({said})"[:240]


def _scrubbed(outcome: ProbeOutcome, creds: ApiCredentials) -> ProbeOutcome:
    """The exchange's message can echo what it was sent; no credential may stay in it."""
    if not outcome.message:
        return outcome
    text = outcome.message
    passphrase = creds.passphrase.reveal() if creds.passphrase is not None else ""
    hidden = (creds.secret.reveal(), passphrase, _passphrase_header(creds) if passphrase else "")
    for value in sorted(filter(None, hidden), key=len, reverse=True):
        text = text.replace(value, REDACTED)
        # An echo the exchange cut short can end part-way through a value.
        cut = next((n for n in range(len(value) - 1, 7, -1) if text.endswith(value[:n])), 0)
        text = text[: len(text) - cut] + REDACTED if cut else text
    if creds.api_key:
        text = text.replace(creds.api_key, creds.masked_key)
    return replace(outcome, message=text[:300])  # cut after hiding: a cut could leave part of a secret


def _split(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
