"""The result of checking one key: the headline status plus every finding."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keysentry.domain.findings import Finding
from keysentry.domain.permissions import Permission
from keysentry.domain.status import Severity, Status, headline_status, severity_of


def days_until(expires_at: datetime | None, now: datetime) -> int | None:
    """Whole days left, rounded up: 4 days 23 hours reads as "expires in 5 days"; 0 once past.

    The one rule for every place that shows an expiry (CLI, API, web page, events).
    """
    if expires_at is None:
        return None
    return max(0, math.ceil((expires_at - now).total_seconds() / 86400))


@dataclass(slots=True)
class Diagnosis:
    exchange: str
    environment: str
    findings: list[Finding] = field(default_factory=list)
    summary: str = ""
    account_id: str | None = None
    permissions: frozenset[Permission] = frozenset()
    missing_permissions: frozenset[Permission] = frozenset()
    ip_restricted: bool | None = None
    ip_whitelist: tuple[str, ...] = ()
    expires_at: datetime | None = None
    checked_at: datetime | None = None
    latency_ms: float | None = None
    reason: str | None = None  # for account_restricted: frozen, banned, api_disabled, kyc_required, ...
    masked_key: str | None = None

    @property
    def status(self) -> Status:
        if self.checked_at is None and not self.findings:
            return Status.UNCHECKED
        return headline_status(f.status for f in self.findings)

    @property
    def severity(self) -> Severity:
        return severity_of(self.status)

    @property
    def expires_in_days(self) -> int | None:
        if self.checked_at is None:
            return None
        return days_until(self.expires_at, self.checked_at)

    def to_json(self) -> dict[str, Any]:
        """The CLI/API JSON contract (field names are public API)."""
        return {
            "exchange": self.exchange,
            "environment": self.environment,
            "status": self.status.value,
            "severity": self.severity.value,
            "summary": self.summary,
            "reason": self.reason,
            "account_id": self.account_id,
            "masked_key": self.masked_key,
            "permissions": sorted(p.value for p in self.permissions),
            "missing_permissions": sorted(p.value for p in self.missing_permissions),
            "ip_restricted": self.ip_restricted,
            "ip_whitelist": list(self.ip_whitelist),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "expires_in_days": self.expires_in_days,
            "findings": [f.to_json() for f in self.findings],
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "latency_ms": round(self.latency_ms, 1) if self.latency_ms is not None else None,
        }
