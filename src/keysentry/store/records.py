"""Read models the store hands out: what a caller may show. None of them can carry a secret."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keysentry.domain import Finding, Severity, Status
from keysentry.domain.diagnosis import days_until


def findings_to_json(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    return [f.to_json() for f in findings]


def findings_from_json(items: Sequence[Mapping[str, Any]] | None) -> tuple[Finding, ...]:
    out: list[Finding] = []
    for item in items or ():
        status = item.get("status")
        out.append(
            Finding(
                code=str(item["code"]),
                severity=Severity(item["severity"]),
                message=str(item.get("message", "")),
                remedy=tuple(str(s) for s in item.get("remedy", ())),
                status=Status(status) if status else None,
                details=dict(item.get("details") or {}),
            )
        )
    return tuple(out)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """One live connection as shown to its tenant: masked key and fingerprint, never a secret.

    `status` is what to show now (temporary_issue while the exchange cannot answer);
    `last_known_status`, `findings`, `account_id`, `permissions` and `expires_at` are the last
    definitive state, which a temporary issue never changes.
    """

    id: str
    tenant_id: str
    exchange: str
    environment: str
    label: str
    profile: str
    account_id: str | None
    masked_key: str
    key_fingerprint: str
    credential_version: int
    status: Status
    severity: Severity
    summary: str
    last_known_status: Status
    findings: tuple[Finding, ...]
    temporary_findings: tuple[Finding, ...]
    permissions: tuple[str, ...]
    ip_restricted: bool | None
    expires_at: datetime | None
    last_checked_at: datetime | None
    last_definitive_at: datetime | None
    temporary_since: datetime | None
    next_check_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def expires_in_days(self, now: datetime) -> int | None:
        return days_until(self.expires_at, now)

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        """The public JSON of a connection (field names are API)."""
        return {
            "id": self.id,
            "exchange": self.exchange,
            "environment": self.environment,
            "label": self.label,
            "profile": self.profile,
            "account_id": self.account_id,
            "masked_key": self.masked_key,
            "key_fingerprint": self.key_fingerprint,
            "credential_version": self.credential_version,
            "status": self.status.value,
            "severity": self.severity.value,
            "summary": self.summary,
            "last_known_status": self.last_known_status.value,
            "permissions": list(self.permissions),
            "ip_restricted": self.ip_restricted,
            "expires_at": _iso(self.expires_at),
            "expires_in_days": self.expires_in_days(now) if now is not None else None,
            "findings": [f.to_json() for f in self.temporary_findings + self.findings],
            "last_checked_at": _iso(self.last_checked_at),
            "last_definitive_at": _iso(self.last_definitive_at),
            "temporary_since": _iso(self.temporary_since),
            "next_check_at": _iso(self.next_check_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class CheckView:
    """One entry of a connection's check history."""

    id: int
    connection_id: str
    credential_version: int
    trigger: str
    checked_at: datetime
    status: Status
    severity: Severity
    summary: str
    findings: tuple[Finding, ...]
    account_id: str | None
    expires_at: datetime | None
    latency_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connection_id": self.connection_id,
            "credential_version": self.credential_version,
            "trigger": self.trigger,
            "checked_at": _iso(self.checked_at),
            "status": self.status.value,
            "severity": self.severity.value,
            "summary": self.summary,
            "account_id": self.account_id,
            "expires_at": _iso(self.expires_at),
            "latency_ms": round(self.latency_ms, 1) if self.latency_ms is not None else None,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    tenant_id: str | None
    actor: str
    action: str
    target: str | None
    at: datetime
    details: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "at": _iso(self.at),
            "details": dict(self.details),
        }
