"""The tables: tenants, connections, credential versions, check history and the audit log.

Every secret column holds a vault ciphertext; its key version sits in its own column next to
it, one per field, because the vault rewraps (and may fail to open) each field on its own.
Nothing here is ever a plaintext secret: a connection keeps only the masked API key and a
fingerprint (a keyed hash).

Uniqueness that must hold even under concurrent adds lives in partial unique indexes over
live rows (`removed_at IS NULL`), which both SQLite and PostgreSQL enforce:
one live connection per (tenant, exchange, account id), one per (tenant, API key hash), and
one current (unrevoked) credential version per connection.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names are fixed so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LIVE = text("removed_at IS NULL")
CURRENT = text("revoked_at IS NULL")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite keeps no zone, so one is put back on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them all without an offset, in UTC
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonColumn = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JsonColumn,
        list[Any]: JsonColumn,
    }


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Connection(Base):
    """One exchange account connected by a tenant. Its id never changes; its key may (new version)."""

    __tablename__ = "connections"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    exchange: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(200))
    profile: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(128))
    masked_key: Mapped[str] = mapped_column(String(64))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    # keyed hash of the current API key (vault purpose "api_key"); NULL once removed
    api_key_hash: Mapped[str | None] = mapped_column(String(64))
    current_version: Mapped[int] = mapped_column(Integer)
    # What is shown: the latest check's headline, so temporary_issue while the exchange cannot answer.
    status: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    # The last definitive state: never temporary_issue. A temporary issue changes none of these.
    last_known_status: Mapped[str] = mapped_column(String(32))
    findings: Mapped[list[Any]] = mapped_column(default=list)
    permissions: Mapped[list[Any]] = mapped_column(default=list)
    ip_restricted: Mapped[bool | None]
    expires_at: Mapped[datetime | None]
    last_definitive_at: Mapped[datetime | None]
    # Findings of the latest check when it was a temporary issue; empty otherwise.
    temporary_findings: Mapped[list[Any]] = mapped_column(default=list)
    temporary_since: Mapped[datetime | None]
    last_checked_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_connections_live_account",
            "tenant_id",
            "exchange",
            "account_id",
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        ),
        Index(
            "uq_connections_live_key",
            "tenant_id",
            "api_key_hash",
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        ),
        Index("ix_connections_tenant", "tenant_id", "created_at"),
        Index("ix_connections_next_check", "next_check_at", sqlite_where=LIVE, postgresql_where=LIVE),
    )


class CredentialVersion(Base):
    """One key of a connection. Exactly one per live connection is current (revoked_at IS NULL)."""

    __tablename__ = "credential_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    masked_key: Mapped[str] = mapped_column(String(64))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    # the exchange's key version (KuCoin 1/2/3), not the vault's
    exchange_key_version: Mapped[int] = mapped_column(Integer, default=2)
    api_key_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_key_key_version: Mapped[int | None] = mapped_column(Integer)
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_key_version: Mapped[int | None] = mapped_column(Integer)
    passphrase_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    passphrase_key_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    verified_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    destroyed_at: Mapped[datetime | None]

    __table_args__ = (
        Index("uq_credential_versions_number", "connection_id", "version", unique=True),
        Index(
            "uq_credential_versions_current",
            "connection_id",
            unique=True,
            sqlite_where=CURRENT,
            postgresql_where=CURRENT,
        ),
    )


class CheckRecord(Base):
    """One check of one connection, kept whatever its outcome (temporary issues included)."""

    __tablename__ = "check_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    credential_version: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))  # add, update, refresh
    checked_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    findings: Mapped[list[Any]] = mapped_column(default=list)
    account_id: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime | None]
    latency_ms: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_check_history_connection", "connection_id", "checked_at"),)


class AuditEntry(Base):
    """Who did what to which connection, when. Secret values appear only as keyed hashes."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime]
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_audit_log_target", "target", "at"),
        Index("ix_audit_log_tenant", "tenant_id", "at"),
    )
