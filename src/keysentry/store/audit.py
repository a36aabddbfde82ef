"""The audit log: who did what to which connection and when. Secret values only as keyed hashes.

Actions: add, update, refresh, remove, decrypt (every time a credential is opened), rotate,
rewrap. Detail names are checked against an allow-list of fields that cannot hold a secret,
so a careless caller cannot slip one in under a new name.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keysentry.store.models import AuditEntry
from keysentry.store.records import AuditView

ACTIONS = frozenset({"add", "update", "refresh", "remove", "decrypt", "rotate", "rewrap"})
# Detail names allowed in the log; anything else is a programming error.
DETAIL_NAMES = frozenset(
    {
        "exchange",
        "environment",
        "label",
        "profile",
        "account_id",
        "status",
        "saved_anyway",
        "credential_version",
        "previous_version",
        "key_fingerprint",
        "api_key_hash",
        "fields",
        "purpose",
        "destroyed_versions",
        "key_version",
        "target_version",
        "rewrapped",
        "failed",
        "changed_meanwhile",
        "retired_versions",
    }
)


def _check(details: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in details.items():
        if name not in DETAIL_NAMES:
            raise ValueError(
                f"audit detail {name!r} is not allowed; add it to DETAIL_NAMES if it holds no secret"
            )
        out[name] = value
    return out


def entry(
    *,
    tenant_id: str | None,
    actor: str,
    action: str,
    target: str | None,
    now: datetime,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    return AuditEntry(
        tenant_id=tenant_id, actor=actor, action=action, target=target, at=now, details=_check(details or {})
    )


async def list_entries(
    session: AsyncSession,
    *,
    tenant_id: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> list[AuditView]:
    query = select(AuditEntry)
    if tenant_id is not None:
        query = query.where(AuditEntry.tenant_id == tenant_id)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    result = await session.execute(query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit))
    return [
        AuditView(
            id=row.id,
            tenant_id=row.tenant_id,
            actor=row.actor,
            action=row.action,
            target=row.target,
            at=row.at,
            details=dict(row.details),
        )
        for row in result.scalars()
    ]
