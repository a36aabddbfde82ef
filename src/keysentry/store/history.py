"""Check history: every check of a connection, temporary issues included, newest first when read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keysentry.domain import Diagnosis, Severity, Status
from keysentry.store.models import CheckRecord
from keysentry.store.records import CheckView, findings_from_json, findings_to_json


def new_check(
    connection_id: str, credential_version: int, trigger: str, diagnosis: Diagnosis, now: datetime
) -> CheckRecord:
    return CheckRecord(
        connection_id=connection_id,
        credential_version=credential_version,
        trigger=trigger,
        checked_at=diagnosis.checked_at or now,
        status=diagnosis.status.value,
        severity=diagnosis.severity.value,
        summary=diagnosis.summary,
        findings=findings_to_json(diagnosis.findings),
        account_id=diagnosis.account_id,
        expires_at=diagnosis.expires_at,
        latency_ms=diagnosis.latency_ms,
    )


async def list_checks(session: AsyncSession, connection_id: str, limit: int = 50) -> list[CheckView]:
    result = await session.execute(
        select(CheckRecord)
        .where(CheckRecord.connection_id == connection_id)
        .order_by(CheckRecord.checked_at.desc(), CheckRecord.id.desc())
        .limit(limit)
    )
    return [to_view(row) for row in result.scalars()]


def to_view(row: CheckRecord) -> CheckView:
    return CheckView(
        id=row.id,
        connection_id=row.connection_id,
        credential_version=row.credential_version,
        trigger=row.trigger,
        checked_at=row.checked_at,
        status=Status(row.status),
        severity=Severity(row.severity),
        summary=row.summary,
        findings=findings_from_json(row.findings),
        account_id=row.account_id,
        expires_at=row.expires_at,
        latency_ms=row.latency_ms,
    )
