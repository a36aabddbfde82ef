"""The diagnosis engine: run an exchange adapter, then decide the status, findings and fixes.

`decide()` is pure (facts in, findings out) so every rule is testable without a network;
`DiagnosisEngine` drives cleaning, the adapter, the look-up in other environments and
the timing around it.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from keysentry.credentials import clean_credentials
from keysentry.diagnosis.catalog import display_name, finding
from keysentry.diagnosis.profiles import Profile, evaluate_permissions, get_profile
from keysentry.domain import Diagnosis, Finding, Permission, Severity, Status, headline_status
from keysentry.domain.diagnosis import days_until
from keysentry.domain.secrets import ApiCredentials
from keysentry.exchanges.base import TEMPORARY_CAUSES, Cause, CheckRequest, ExchangeAdapter, KeyFacts
from keysentry.exchanges.transport import HttpTransport

ADAPTERS: Mapping[str, str] = {
    "binance": "keysentry.exchanges.binance:BinanceAdapter",
    "okx": "keysentry.exchanges.okx:OkxAdapter",
    "bybit": "keysentry.exchanges.bybit:BybitAdapter",
    "kucoin": "keysentry.exchanges.kucoin:KucoinAdapter",
}

# Cause -> (catalogue code, reason). Causes not listed are decided elsewhere.
_CAUSE_CODES: Mapping[Cause, tuple[str, str | None]] = {
    Cause.UNKNOWN_KEY: ("invalid_key", "unknown"),
    Cause.MALFORMED_KEY: ("invalid_key", "malformed"),
    Cause.KEY_NOT_ACTIVATED: ("invalid_key", "not_activated"),
    Cause.WRONG_ENVIRONMENT: ("invalid_key", "wrong_environment"),
    Cause.BAD_SIGNATURE: ("secret_mismatch", None),
    Cause.BAD_PASSPHRASE: ("passphrase_invalid", None),
    Cause.CLOCK_SKEW: ("clock_skew", None),
    Cause.IP_NOT_ALLOWED: ("ip_not_allowed", None),
    Cause.PERMISSION_DENIED: ("incorrect_permissions", None),
    Cause.KEY_EXPIRED: ("expired", None),
    Cause.ACCOUNT_FROZEN: ("account_restricted", "frozen"),
    Cause.ACCOUNT_BANNED: ("account_restricted", "banned"),
    Cause.API_DISABLED: ("account_restricted", "api_disabled"),
    Cause.KYC_REQUIRED: ("account_restricted", "kyc_required"),
    Cause.REGION_RESTRICTED: ("account_restricted", "region_restricted"),
    Cause.AGREEMENT_PENDING: ("account_restricted", "agreement_pending"),
    Cause.FUTURES_NOT_OPENED: ("inactive_futures", "account_not_opened"),
    Cause.AMBIGUOUS_AUTH: ("ambiguous_refusal", None),
    Cause.RATE_LIMITED: ("temporary_issue", "rate_limited"),
    Cause.IP_BANNED: ("temporary_issue", "ip_banned"),
    Cause.MAINTENANCE: ("temporary_issue", "maintenance"),
    Cause.SERVER_ERROR: ("temporary_issue", "server_error"),
    Cause.TIMEOUT: ("temporary_issue", "timeout"),
    Cause.NETWORK: ("temporary_issue", "network"),
    Cause.UNEXPECTED: ("temporary_issue", "unexpected"),
}

# Exchanges' rules for keys without an IP whitelist (DESIGN.md; configurable).
DEFAULT_UNRESTRICTED_RULES: Mapping[str, int] = MappingProxyType({"binance": 30, "okx": 14, "bybit": 90})
# The causes after which the key's permissions, expiry and notices are judged too.
_KEY_JUDGED = frozenset({Cause.OK, Cause.PERMISSION_DENIED, Cause.FUTURES_NOT_OPENED})
# The causes after which the key is looked up in the other environments of the exchange.
_MAYBE_ELSEWHERE = frozenset({Cause.UNKNOWN_KEY, Cause.AMBIGUOUS_AUTH})
# What another environment answers about a key it does not know either.
_NOT_THERE = frozenset(
    {
        Cause.UNKNOWN_KEY,
        Cause.AMBIGUOUS_AUTH,
        Cause.MALFORMED_KEY,
        Cause.WRONG_ENVIRONMENT,  # e.g. OKX's demo site refusing a live key: not found there either
        Cause.UNEXPECTED,
        *TEMPORARY_CAUSES,
    }
)


@functools.cache
def adapter_class(exchange: str) -> type[ExchangeAdapter]:
    try:
        target = ADAPTERS[exchange]
    except KeyError:
        raise ValueError(f"unsupported exchange {exchange!r}; supported: {', '.join(ADAPTERS)}") from None
    module_name, _, cls_name = target.partition(":")
    cls: type[ExchangeAdapter] = getattr(importlib.import_module(module_name), cls_name)
    return cls


@dataclass(frozen=True, slots=True)
class DecisionContext:
    profile: Profile
    egress_ips: tuple[str, ...] = ()
    expiry_window_days: int = 14
    rotation_age_days: int = 90
    unrestricted_key_days: Mapping[str, int] = field(default_factory=lambda: DEFAULT_UNRESTRICTED_RULES)
    clock_offset_notice_ms: float = 1000.0


def decide(facts: KeyFacts, ctx: DecisionContext, now: datetime) -> list[Finding]:
    """Every finding the facts support, most severe cause first."""
    out: list[Finding] = []
    cause = facts.cause
    futures_only_missing = (
        cause is Cause.PERMISSION_DENIED
        and facts.permissions is not None
        and ctx.profile.needs_futures
        and ctx.profile.required - facts.permissions == {Permission.FUTURES_TRADE}
    )
    # A missing futures permission under a futures profile is inactive_futures, which the
    # profile evaluation below reports with the right reason; the refusal adds nothing.
    if cause is not Cause.OK and not futures_only_missing:
        out.append(_cause_finding(facts, ctx))
        if cause in TEMPORARY_CAUSES or cause is Cause.UNEXPECTED:
            # The exchange could not answer; say nothing more about the key than we know.
            return out
    if cause is not Cause.OK and cause not in _KEY_JUDGED:
        return out
    granted = facts.permissions
    if granted is not None:
        perm_findings = _permission_findings(facts, ctx, granted)
        seen = {f.code for f in out}
        out.extend(f for f in perm_findings if f.code not in seen)
    out.extend(_expiry_findings(facts, ctx, now))
    out.extend(_notices(facts, ctx, now))
    return out


def _permission_findings(
    facts: KeyFacts, ctx: DecisionContext, granted: frozenset[Permission]
) -> Sequence[Finding]:
    if not facts.deposit_addresses:
        try:
            return _judged(
                ctx.profile,
                granted,
                facts.exchange,
                facts.futures_active,
                facts.tradable_pairs,
                ctx.egress_ips,
            )
        except TypeError:  # something unhashable in an operator's profile: judged afresh
            pass
    return evaluate_permissions(
        ctx.profile,
        granted,
        exchange=facts.exchange,
        futures_active=facts.futures_active,
        tradable_pairs=facts.tradable_pairs,
        deposit_addresses=facts.deposit_addresses or None,
        egress_ips=ctx.egress_ips,
    )


@functools.lru_cache(maxsize=1024)
def _judged(
    profile: Profile,
    granted: frozenset[Permission],
    exchange: str,
    futures_active: bool | None,
    tradable_pairs: frozenset[str] | None,
    egress_ips: tuple[str, ...],
) -> tuple[Finding, ...]:
    """`evaluate_permissions` without deposit addresses to weigh: a sweep meets the same few
    combinations millions of times, and the judgement is pure, so each is made once."""
    return tuple(
        evaluate_permissions(
            profile,
            granted,
            exchange=exchange,
            futures_active=futures_active,
            tradable_pairs=tradable_pairs,
            egress_ips=egress_ips,
        )
    )


def _cause_finding(facts: KeyFacts, ctx: DecisionContext) -> Finding:
    code, reason = _CAUSE_CODES[facts.cause]
    details: dict[str, Any] = {}
    evidence = list(facts.evidence)  # decide() is pure: the facts are read, never changed
    failed = next((o for o in facts.outcomes.values() if o.cause is facts.cause), None) or next(
        (o for o in facts.outcomes.values() if not o.ok), None
    )
    if failed is not None:
        if failed.code is not None:
            details["exchange_code"] = failed.code
        if failed.http_status is not None:
            details["http_status"] = failed.http_status
        if failed.retry_after_s is not None:
            details["retry_after_s"] = failed.retry_after_s
        if failed.egress_ip is not None:
            details["egress_ip"] = failed.egress_ip
    if facts.cause is Cause.CLOCK_SKEW and facts.server_time_offset_ms is not None:
        if abs(facts.server_time_offset_ms) >= ctx.clock_offset_notice_ms:
            details["offset_ms"] = round(facts.server_time_offset_ms)
        else:
            # The exchange refused our timestamp, yet its clock agrees with ours now: say so
            # rather than report a skew of "0 s".
            evidence.append(
                f"server time now differs from ours by only {round(facts.server_time_offset_ms)} ms; "
                "the clock may have jumped, or the exchange checks time per key"
            )
    if facts.cause is Cause.AMBIGUOUS_AUTH:
        details["candidates"] = [_CAUSE_CODES[c][0] for c in facts.candidates]
        if facts.candidates:
            reason = _CAUSE_CODES[facts.candidates[0]][1]
    if facts.cause is Cause.PERMISSION_DENIED and facts.permissions is not None:
        missing = ctx.profile.required - facts.permissions
        details["missing_permissions"] = sorted(p.value for p in missing)
        details["profile"] = ctx.profile.name
    if facts.cause in TEMPORARY_CAUSES and facts.system_status == "maintenance":
        reason = "maintenance"
    if evidence:
        details["evidence"] = evidence
    return finding(code, exchange=facts.exchange, reason=reason, egress_ips=ctx.egress_ips, **details)


def _expiry_findings(facts: KeyFacts, ctx: DecisionContext, now: datetime) -> list[Finding]:
    if facts.expires_at is None or facts.expiry_kind == "inactivity":
        return []
    remaining = facts.expires_at - now
    if remaining <= timedelta(0):
        return [
            finding(
                "expired",
                exchange=facts.exchange,
                reason=facts.expiry_kind,
                egress_ips=ctx.egress_ips,
                expired_at=facts.expires_at.isoformat(),
            )
        ]
    if remaining < timedelta(days=ctx.expiry_window_days):
        return [
            finding(
                "expires_soon",
                exchange=facts.exchange,
                reason=facts.expiry_kind,
                egress_ips=ctx.egress_ips,
                days=days_until(facts.expires_at, now),
                expires_at=facts.expires_at.isoformat(),
            )
        ]
    return []


def _notices(facts: KeyFacts, ctx: DecisionContext, now: datetime) -> list[Finding]:
    out: list[Finding] = []
    ex = facts.exchange
    if facts.ip_restricted is False:
        rule_days = ctx.unrestricted_key_days.get(ex)
        details: dict[str, Any] = {}
        if facts.expires_at is not None:
            details["expires_at"] = facts.expires_at.isoformat()
        elif rule_days is not None:
            details["rule_days"] = rule_days
        out.append(finding("no_ip_restriction", exchange=ex, egress_ips=ctx.egress_ips, **details))
    if facts.created_at is not None and now - facts.created_at > timedelta(days=ctx.rotation_age_days):
        out.append(
            finding(
                "key_rotation_age",
                exchange=ex,
                age_days=(now - facts.created_at).days,
                max_age_days=ctx.rotation_age_days,
            )
        )
    offset = facts.server_time_offset_ms
    # Adapters measure the clock only when something failed; a large offset is worth a word
    # even when it did not cause the failure.
    if (
        offset is not None
        and abs(offset) >= ctx.clock_offset_notice_ms
        and facts.cause is not Cause.CLOCK_SKEW
    ):
        out.append(finding("server_time_offset", exchange=ex, offset_ms=round(offset)))
    return out


@dataclass(frozen=True, slots=True)
class CheckOptions:
    profile: Profile = field(default_factory=lambda: get_profile("trading"))
    environment: str = "mainnet"
    base_url: str | None = None
    # Other environments of the same exchange to look a key up in when this one does not know
    # it: environment -> base URL (None: the exchange's real host).
    other_environments: Mapping[str, str | None] = field(default_factory=dict)
    egress_ips: tuple[str, ...] = ()
    expiry_window_days: int = 14
    rotation_age_days: int = 90


def _decision_context(options: CheckOptions) -> DecisionContext:
    args = (options.profile, options.egress_ips, options.expiry_window_days, options.rotation_age_days)
    try:
        return _shared_context(*args)
    except TypeError:  # an unhashable value where a tuple was expected: built afresh
        return _shared_context.__wrapped__(*args)


@functools.lru_cache(maxsize=256)
def _shared_context(
    profile: Profile, egress_ips: tuple[str, ...], expiry_window_days: int, rotation_age_days: int
) -> DecisionContext:
    # Immutable and the same for every check run with the same options: built once.
    return DecisionContext(
        profile=profile,
        egress_ips=egress_ips,
        expiry_window_days=expiry_window_days,
        rotation_age_days=rotation_age_days,
    )


class DiagnosisEngine:
    def __init__(self, transport: HttpTransport, *, clock: Callable[[], datetime] | None = None) -> None:
        self.transport = transport
        self.clock = clock or (lambda: datetime.now(UTC))

    async def diagnose(
        self,
        exchange: str,
        api_key: str,
        secret: str,
        passphrase: str | None,
        options: CheckOptions,
        *,
        key_version: int = 2,
    ) -> Diagnosis:
        """Clean the pasted input, then check the key; the input never leaves in the result."""
        cleaned = clean_credentials(exchange, api_key, secret, passphrase, key_version=key_version)
        if cleaned.credentials is None or not cleaned.ok:
            now = self.clock()
            diagnosis = Diagnosis(
                exchange=exchange,
                environment=options.environment,
                findings=list(cleaned.findings),
                checked_at=now,
                masked_key=cleaned.masked_key,
                latency_ms=0.0,
            )
            diagnosis.summary = _summary(diagnosis)
            return diagnosis
        return await self.diagnose_credentials(exchange, cleaned.credentials, options, cleaned.findings)

    async def diagnose_credentials(
        self,
        exchange: str,
        credentials: ApiCredentials,
        options: CheckOptions,
        input_findings: Sequence[Finding] = (),
    ) -> Diagnosis:
        started = time.perf_counter()
        cls = adapter_class(exchange)
        request = CheckRequest(
            credentials=credentials,
            needs_futures=options.profile.needs_futures,
            deposit_currency=options.profile.deposit_currency,
            pairs=options.profile.pairs,
            egress_ips=options.egress_ips,
        )
        adapter = cls(self.transport, environment=options.environment, base_url=options.base_url)
        facts = await adapter.check(request)
        other_env = None
        if facts.cause in _MAYBE_ELSEWHERE and options.other_environments:
            other_env = await self._find_elsewhere(cls, request, options)
            if other_env is not None:
                facts.cause = Cause.WRONG_ENVIRONMENT
                facts.candidates = ()
        now = self.clock()
        ctx = _decision_context(options)
        findings = list(input_findings) + decide(facts, ctx, now)
        if other_env is not None:
            findings.append(
                finding(
                    "wrong_environment",
                    exchange=exchange,
                    found_in=other_env,
                    checked_in=options.environment,
                )
            )
        diagnosis = Diagnosis(
            exchange=exchange,
            environment=options.environment,
            findings=findings,
            account_id=facts.account_id,
            permissions=facts.permissions or frozenset(),
            ip_restricted=facts.ip_restricted,
            ip_whitelist=facts.ip_whitelist or (),
            expires_at=facts.expires_at if facts.expiry_kind != "inactivity" else None,
            checked_at=now,
            latency_ms=(time.perf_counter() - started) * 1000,
            masked_key=credentials.masked_key,
        )
        status = headline_status(f.status for f in findings)
        diagnosis.missing_permissions = _missing(findings)
        diagnosis.reason = _reason(findings, status)
        diagnosis.summary = _summary(diagnosis, status)
        return diagnosis

    async def _find_elsewhere(
        self, cls: type[ExchangeAdapter], request: CheckRequest, options: CheckOptions
    ) -> str | None:
        for env, base_url in options.other_environments.items():
            if env == options.environment:
                continue
            other = cls(self.transport, environment=env, base_url=base_url)
            facts = await other.check(request)
            if facts.cause not in _NOT_THERE:
                return env
        return None


def _missing(findings: Sequence[Finding]) -> frozenset[Permission]:
    out: set[Permission] = set()
    for f in findings:
        for name in f.details.get("missing_permissions", ()):
            out.add(Permission(name))
    return frozenset(out)


def _reason(findings: Sequence[Finding], status: Status) -> str | None:
    for f in findings:
        if f.status is status:
            reason = f.details.get("reason")
            return str(reason) if reason else None
    return None


def _summary(diagnosis: Diagnosis, status: Status | None = None) -> str:
    status = diagnosis.status if status is None else status
    headline = next((f for f in diagnosis.findings if f.status is status), None)
    if headline is not None:
        return headline.message
    if status is Status.CONNECTED:
        return f"The key works on {display_name(diagnosis.exchange)} and has what the profile needs."
    worst = next((f for f in diagnosis.findings if f.severity is Severity.ERROR), None)
    return worst.message if worst else status.value
