"""Connections repository: look-ups filtered by tenant in SQL, and how a check's result is stored.

Every query takes the tenant: a connection id of another tenant finds nothing, exactly like an
id that does not exist. Removed connections stay as tombstones (for the audit log) and are
invisible here.

The rule for recording a check (`check_values`), the one place it lives:
- a definitive result (any status but temporary_issue) replaces the shown status and the last
  known state: status, last_known_status, findings, permissions, expiry; temporary fields clear;
- a temporary_issue result changes only what is shown: status becomes temporary_issue with the
  temporary finding (`temporary_findings`) and `temporary_since` (kept from the first one in a
  row); last_known_status, findings, permissions, account and expiry keep the last definitive
  state. A temporary issue never marks a key invalid, and the next definitive check restores
  the normal display. Every check, temporary or not, is also appended to the check history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from keysentry.domain import Diagnosis, Severity, Status
from keysentry.store.models import Connection, Tenant
from keysentry.store.records import ConnectionRecord, findings_from_json, findings_to_json

LOCAL_TENANT = "local"


async def ensure_tenant(
    session: AsyncSession, tenant_id: str, now: datetime, name: str | None = None
) -> None:
    """Create the tenant unless it exists; two first adds of one tenant racing both succeed."""
    if await session.get(Tenant, tenant_id) is not None:
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(Tenant)
        .values(id=tenant_id, name=name or tenant_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
    )


async def get_live(session: AsyncSession, tenant_id: str, connection_id: str) -> Connection | None:
    result = await session.execute(
        select(Connection).where(
            Connection.id == connection_id,
            Connection.tenant_id == tenant_id,
            Connection.removed_at.is_(None),
        )
    )
    return result.scalar_one_or_none()


async def list_live(session: AsyncSession, tenant_id: str) -> Sequence[Connection]:
    result = await session.execute(
        select(Connection)
        .where(Connection.tenant_id == tenant_id, Connection.removed_at.is_(None))
        .order_by(Connection.created_at, Connection.id)
    )
    return result.scalars().all()


async def find_by_account(
    session: AsyncSession, tenant_id: str, exchange: str, account_id: str
) -> Connection | None:
    result = await session.execute(
        select(Connection).where(
            Connection.tenant_id == tenant_id,
            Connection.exchange == exchange,
            Connection.account_id == account_id,
            Connection.removed_at.is_(None),
        )
    )
    return result.scalar_one_or_none()


async def find_by_key_hash(session: AsyncSession, tenant_id: str, api_key_hash: str) -> Connection | None:
    result = await session.execute(
        select(Connection).where(
            Connection.tenant_id == tenant_id,
            Connection.api_key_hash == api_key_hash,
            Connection.removed_at.is_(None),
        )
    )
    return result.scalar_one_or_none()


async def due(session: AsyncSession, now: datetime, limit: int) -> Sequence[Connection]:
    """Live connections whose next check is due, oldest first (what the monitor batches over)."""
    result = await session.execute(
        select(Connection)
        .where(Connection.removed_at.is_(None), Connection.next_check_at <= now)
        .order_by(Connection.next_check_at)
        .limit(limit)
    )
    return result.scalars().all()


def check_values(diagnosis: Diagnosis, *, now: datetime, next_check_at: datetime | None) -> dict[str, Any]:
    """Column values recording `diagnosis` on its connection (the rule in the module docstring).

    For an UPDATE: a temporary result leaves every last-known column out, and keeps
    temporary_since through a SQL expression.
    """
    status = diagnosis.status
    checked_at = diagnosis.checked_at or now
    values: dict[str, Any] = {
        "status": status.value,
        "severity": diagnosis.severity.value,
        "summary": diagnosis.summary,
        "last_checked_at": checked_at,
        "next_check_at": next_check_at,
        "updated_at": now,
    }
    if status is Status.TEMPORARY_ISSUE:
        values["temporary_findings"] = findings_to_json(diagnosis.findings)
        values["temporary_since"] = func.coalesce(Connection.temporary_since, checked_at)
        return values
    values.update(
        last_known_status=status.value,
        findings=findings_to_json(diagnosis.findings),
        permissions=sorted(p.value for p in diagnosis.permissions),
        ip_restricted=diagnosis.ip_restricted,
        expires_at=diagnosis.expires_at,
        last_definitive_at=checked_at,
        temporary_findings=[],
        temporary_since=None,
    )
    return values


def initial_values(diagnosis: Diagnosis, *, now: datetime, next_check_at: datetime | None) -> dict[str, Any]:
    """Column values for a new connection: as `check_values`, with a first temporary result
    leaving the last known state at `unchecked`."""
    values = check_values(diagnosis, now=now, next_check_at=next_check_at)
    if diagnosis.status is Status.TEMPORARY_ISSUE:
        values.update(
            last_known_status=Status.UNCHECKED.value,
            findings=[],
            permissions=[],
            ip_restricted=None,
            expires_at=None,
            last_definitive_at=None,
            temporary_since=diagnosis.checked_at or now,
        )
    return values


def to_record(row: Connection) -> ConnectionRecord:
    return ConnectionRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        exchange=row.exchange,
        environment=row.environment,
        label=row.label,
        profile=row.profile,
        account_id=row.account_id,
        masked_key=row.masked_key,
        key_fingerprint=row.key_fingerprint,
        credential_version=row.current_version,
        status=Status(row.status),
        severity=Severity(row.severity),
        summary=row.summary,
        last_known_status=Status(row.last_known_status),
        findings=findings_from_json(row.findings),
        temporary_findings=findings_from_json(row.temporary_findings),
        permissions=tuple(str(p) for p in row.permissions),
        ip_restricted=row.ip_restricted,
        expires_at=row.expires_at,
        last_checked_at=row.last_checked_at,
        last_definitive_at=row.last_definitive_at,
        temporary_since=row.temporary_since,
        next_check_at=row.next_check_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
