"""Tenants and their API tokens: the REST API's callers.

A token is shown once, when it is made, and stored only as its SHA-256 hash (tokens are 256
random bits, so an unkeyed hash is as good as a keyed one and survives a vault rotation).
Revoking keeps the row (revoked_at) so the audit trail can still name the token.

Tenant and token actions go to the audit log with this module's own allow-list of details:
none of them can hold a secret (a token id and a name, never the token).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from keysentry.store.models import AuditEntry, Base, Tenant

__all__ = [
    "ApiToken",
    "TenantView",
    "TokenView",
    "audit",
    "create_tenant",
    "find_active",
    "get_tenant",
    "get_token",
    "list_tenants",
    "list_tokens",
    "new_token_row",
    "revoke_token",
    "touch",
]

# How stale last_used_at may get before a request writes it again: a write per request would
# turn every read into a write.
TOUCH_EVERY = timedelta(minutes=15)

AUDIT_ACTIONS = frozenset({"tenant_create", "token_create", "token_revoke"})
AUDIT_DETAILS = frozenset({"token_id", "name", "tenant_id"})


class ApiToken(Base):
    """One tenant API token; `token_hash` is the SHA-256 (hex) of the token, never the token."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64))
    # the first characters of the token, enough for a person to tell tokens apart
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("uq_api_tokens_hash", "token_hash", unique=True),
        Index("ix_api_tokens_tenant", "tenant_id", "created_at"),
    )


@dataclass(frozen=True, slots=True)
class TenantView:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenView:
    """A token as listed: never the token itself."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _tenant_view(row: Tenant) -> TenantView:
    return TenantView(id=row.id, name=row.name, created_at=row.created_at)


def _token_view(row: ApiToken) -> TokenView:
    return TokenView(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


# -- tenants ------------------------------------------------------------------------------------


async def get_tenant(session: AsyncSession, tenant_id: str) -> TenantView | None:
    row = await session.get(Tenant, tenant_id)
    return _tenant_view(row) if row is not None else None


async def create_tenant(session: AsyncSession, tenant_id: str, name: str, now: datetime) -> TenantView | None:
    """The new tenant, or None when the id is taken (the caller decides what that means)."""
    if await session.get(Tenant, tenant_id) is not None:
        return None
    row = Tenant(id=tenant_id, name=name, created_at=now)
    session.add(row)
    await session.flush()
    return _tenant_view(row)


async def list_tenants(session: AsyncSession, *, after: str | None, limit: int) -> list[TenantView]:
    """Tenants by id, `limit` at a time after the id `after` (keyset pagination)."""
    query = select(Tenant).order_by(Tenant.id).limit(limit)
    if after is not None:
        query = query.where(Tenant.id > after)
    return [_tenant_view(r) for r in (await session.execute(query)).scalars()]


# -- tokens -------------------------------------------------------------------------------------


def new_token_row(
    *, token_id: str, tenant_id: str, name: str, token_hash: str, prefix: str, now: datetime
) -> ApiToken:
    return ApiToken(
        id=token_id,
        tenant_id=tenant_id,
        name=name,
        token_hash=token_hash,
        prefix=prefix,
        created_at=now,
        last_used_at=None,
        revoked_at=None,
    )


async def find_active(session: AsyncSession, token_hash: str) -> TokenView | None:
    """The live token with this hash (not revoked), or None."""
    result = await session.execute(
        select(ApiToken).where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
    )
    row = result.scalar_one_or_none()
    return _token_view(row) if row is not None else None


async def touch(session: AsyncSession, token_id: str, now: datetime) -> None:
    """Record a use of the token, at most once per TOUCH_EVERY."""
    await session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


async def get_token(session: AsyncSession, token_id: str) -> TokenView | None:
    row = await session.get(ApiToken, token_id)
    return _token_view(row) if row is not None else None


async def list_tokens(session: AsyncSession, tenant_id: str | None) -> list[TokenView]:
    """The tokens of `tenant_id` (of every tenant when None), oldest first, revoked ones included."""
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if tenant_id is not None:
        query = query.where(ApiToken.tenant_id == tenant_id)
    return [_token_view(r) for r in (await session.execute(query)).scalars()]


async def revoke_token(session: AsyncSession, token_id: str, now: datetime, *, tenant_id: str | None) -> bool:
    """Revoke a live token (of `tenant_id` when given); False when there is no such live token."""
    query = update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
    if tenant_id is not None:
        query = query.where(ApiToken.tenant_id == tenant_id)
    result = await session.execute(query.values(revoked_at=now).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0) == 1


# -- audit --------------------------------------------------------------------------------------


def audit(
    *,
    action: str,
    actor: str,
    tenant_id: str,
    now: datetime,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """An audit-log row for a tenant or token action; details from AUDIT_DETAILS only."""
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown tenant/token audit action {action!r}")
    checked: dict[str, Any] = {}
    for name, value in (details or {}).items():
        if name not in AUDIT_DETAILS:
            raise ValueError(f"audit detail {name!r} is not allowed for tenant and token actions")
        checked[name] = value
    return AuditEntry(tenant_id=tenant_id, actor=actor, action=action, target=target, at=now, details=checked)
