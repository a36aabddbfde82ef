"""What the page shows of a connection, a check or a refused key: plain values for the templates.

Everything here is computed from read models that cannot carry a secret (ConnectionRecord,
CheckView, Diagnosis); the templates only lay these values out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from keysentry.diagnosis.catalog import STATUS_TEXTS, display_name
from keysentry.diagnosis.remedies import PERMISSION_WORDS
from keysentry.domain import Diagnosis, Finding, Permission, Severity, Status, severity_of
from keysentry.domain.diagnosis import days_until
from keysentry.store.records import CheckView, ConnectionRecord

__all__ = [
    "CardView",
    "CheckRow",
    "FindingView",
    "GuideView",
    "ResultView",
    "card",
    "check_row",
    "guide",
    "result",
    "when",
]

# Shapes next to the colour, so a status never depends on colour alone.
ICONS = {Severity.OK: "✓", Severity.WARNING: "!", Severity.ERROR: "✕", Severity.UNKNOWN: "?"}
SEVERITY_WORDS = {
    Severity.OK: "working",
    Severity.WARNING: "needs attention soon",
    Severity.ERROR: "not working",
    Severity.UNKNOWN: "unknown",
}
_FIELD_SENTENCE = re.compile(r"[^.]*`[^`]+`[^.]*\.\s*")


@dataclass(frozen=True, slots=True)
class Badge:
    status: str
    title: str
    severity: str
    icon: str
    severity_words: str


def badge(status: Status) -> Badge:
    severity = severity_of(status)
    return Badge(
        status.value, STATUS_TEXTS[status].title, severity.value, ICONS[severity], SEVERITY_WORDS[severity]
    )


def plain_meaning(status: Status) -> str:
    """The status's meaning for people: sentences that name API fields are for developers."""
    return _FIELD_SENTENCE.sub("", STATUS_TEXTS[status].meaning).strip()


@dataclass(frozen=True, slots=True)
class When:
    iso: str
    text: str  # "2026-03-01 12:00 UTC"
    ago: str  # "5 minutes ago", "in 3 hours"


def when(moment: datetime | None, now: datetime) -> When | None:
    if moment is None:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return When(moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M UTC"), _relative(moment, now))


def _relative(moment: datetime, now: datetime) -> str:
    seconds = (moment - now).total_seconds()
    future, span = seconds > 0, abs(seconds)
    if span < 60:
        return "just now" if not future else "in less than a minute"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if span >= size:
            n = int(span // size)
            words = f"{n} {unit}{'' if n == 1 else 's'}"
            return f"in {words}" if future else f"{words} ago"
    return "just now"  # pragma: no cover - the loop always returns for span >= 60


days_left = days_until  # one rounding rule everywhere (domain.diagnosis.days_until)


def _permission_words(names: Iterable[object]) -> tuple[str, ...]:
    out = []
    for name in names:
        try:
            out.append(PERMISSION_WORDS[Permission(str(name))])
        except ValueError:
            out.append(str(name))
    return tuple(out)


def missing_permissions(findings: Iterable[Finding]) -> tuple[str, ...]:
    seen: list[object] = []
    for f in findings:
        for name in f.details.get("missing_permissions", ()) or ():
            if name not in seen:
                seen.append(name)
    return _permission_words(seen)


def headline_finding(status: Status, findings: Sequence[Finding]) -> Finding | None:
    """The finding that explains `status`: the first one standing for it."""
    return next((f for f in findings if f.status is status), None)


@dataclass(frozen=True, slots=True)
class FindingView:
    code: str
    severity: str
    message: str
    steps: tuple[str, ...]


def finding_view(f: Finding) -> FindingView:
    return FindingView(f.code, f.severity.value, f.message, tuple(f.remedy))


@dataclass(frozen=True, slots=True)
class CardView:
    id: str
    exchange: str
    exchange_name: str
    environment: str
    label: str
    profile: str
    masked_key: str
    account_id: str | None
    badge: Badge
    summary: str
    last_known: Badge | None  # while a temporary issue hides the last definitive state
    expires_in_days: int | None
    expires: When | None
    last_checked: When | None
    next_check: When | None
    missing_permissions: tuple[str, ...]
    credential_version: int
    created: When | None


def card(record: ConnectionRecord, now: datetime) -> CardView:
    temporary = record.status is Status.TEMPORARY_ISSUE
    last_known = badge(record.last_known_status) if temporary else None
    return CardView(
        id=record.id,
        exchange=record.exchange,
        exchange_name=display_name(record.exchange),
        environment=record.environment,
        label=record.label,
        profile=record.profile,
        masked_key=record.masked_key,
        account_id=record.account_id,
        badge=badge(record.status),
        summary=record.summary,
        last_known=last_known,
        expires_in_days=days_left(record.expires_at, now),
        expires=when(record.expires_at, now),
        last_checked=when(record.last_checked_at, now),
        next_check=when(record.next_check_at, now),
        missing_permissions=missing_permissions(record.findings),
        credential_version=record.credential_version,
        created=when(record.created_at, now),
    )


@dataclass(frozen=True, slots=True)
class GuideView:
    """The pop-up guide of a status on one exchange: what it means, the steps, the addresses."""

    card: CardView
    title: str
    meaning: str
    cause: str | None
    steps: tuple[str, ...]
    last_known: FindingView | None
    notices: tuple[FindingView, ...]
    egress_ips: tuple[str, ...]
    ips_matter: bool


_IP_STATUSES = {Status.IP_NOT_ALLOWED, Status.EXPIRES_SOON, Status.EXPIRED}


def guide(record: ConnectionRecord, now: datetime, egress_ips: Sequence[str]) -> GuideView:
    status = record.status
    text = STATUS_TEXTS[status]
    if status is Status.TEMPORARY_ISSUE:
        head = record.temporary_findings[0] if record.temporary_findings else None
        definitive = headline_finding(record.last_known_status, record.findings)
        last_known = finding_view(definitive) if definitive is not None else None
        rest: Sequence[Finding] = [f for f in record.findings if f is not definitive]
    else:
        head = headline_finding(status, record.findings)
        last_known = None
        rest = [f for f in record.findings if f is not head]
    cause: str | None = record.summary or None
    steps: tuple[str, ...] = (text.action,) if text.action != "Nothing." else ()
    if head is not None:
        cause, steps = head.message, tuple(head.remedy)
    ips_matter = status in _IP_STATUSES or any("egress_ips" in f.details for f in record.findings)
    return GuideView(
        card=card(record, now),
        title=text.title,
        meaning=plain_meaning(status),
        cause=cause,
        steps=steps,
        last_known=last_known,
        notices=tuple(finding_view(f) for f in rest),
        egress_ips=tuple(egress_ips),
        ips_matter=ips_matter,
    )


@dataclass(frozen=True, slots=True)
class ResultView:
    """A check just made of a pasted key (added, refused or updated)."""

    badge: Badge
    exchange_name: str
    summary: str
    account_id: str | None
    masked_key: str | None
    expires_in_days: int | None
    cause: str | None
    steps: tuple[str, ...]
    notices: tuple[FindingView, ...]
    missing_permissions: tuple[str, ...]


def result(diagnosis: Diagnosis, now: datetime | None = None) -> ResultView:
    status = diagnosis.status
    head = headline_finding(status, diagnosis.findings)
    rest = tuple(finding_view(f) for f in diagnosis.findings if f is not head)
    moment = diagnosis.checked_at or now or datetime.now(UTC)
    return ResultView(
        badge=badge(status),
        exchange_name=display_name(diagnosis.exchange),
        summary=diagnosis.summary,
        account_id=diagnosis.account_id,
        masked_key=diagnosis.masked_key,
        expires_in_days=days_left(diagnosis.expires_at, moment),
        cause=head.message if head is not None and head.message != diagnosis.summary else None,
        steps=tuple(head.remedy) if head is not None else (),
        notices=rest,
        missing_permissions=_permission_words(sorted(p.value for p in diagnosis.missing_permissions)),
    )


@dataclass(frozen=True, slots=True)
class CheckRow:
    checked: When
    trigger: str
    credential_version: int
    badge: Badge
    summary: str
    latency_ms: float | None


_TRIGGERS = {"add": "added", "update": "keys updated", "refresh": "re-checked"}


def check_row(check: CheckView, now: datetime) -> CheckRow:
    checked = when(check.checked_at, now)
    assert checked is not None
    return CheckRow(
        checked=checked,
        trigger=_TRIGGERS.get(check.trigger, check.trigger),
        credential_version=check.credential_version,
        badge=badge(check.status),
        summary=check.summary,
        latency_ms=round(check.latency_ms) if check.latency_ms is not None else None,
    )
