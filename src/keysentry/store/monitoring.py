"""What the monitor keeps: backoff counters per connection, tenants' webhooks, events and deliveries.

Tables (migration 0003_monitor):

- `connection_monitor`: per connection, the streaks that drive the re-check backoff
  (temporary results in a row, definitive errors in a row). Every recorded check writes them,
  the monitor's (`record_checks`) and the lifecycle's add, refresh and key update
  (keysentry.connections), through `record_streaks`; no row means both are zero.
- `webhooks`: a tenant's registered endpoints. The signing secret and the URL are vault
  ciphertexts (fields `webhook_secret` and `webhook_url`, bound to tenant and webhook id): a
  URL often carries a token of its own.
- `webhook_events`: every event the monitor emitted, written in the same transaction as the
  check that caused it, so an event is never lost between the check and its delivery.
- `webhook_deliveries`: one row per delivery attempt of an event to a webhook. The next attempt
  waits as a `pending` row with its `next_attempt_at`; attempting it fills in the outcome.

Claims. Due work is taken through the `next_check_at` (connections) and `next_attempt_at`
(pending deliveries) indexes, oldest first, and claimed by moving that time to the end of a
lease in the same transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent claimers
skip each other's rows; SQLite serialises writers). The lease end is the claim's token: a
result is recorded only while the row still holds it, so a batch run twice (a Celery task
redelivered after its worker died) records each connection at most once, and a row whose
claimer vanished becomes due again when its lease ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ClauseElement

from keysentry.store.models import Base, CheckRecord, Connection, CredentialVersion

__all__ = [
    "PENDING",
    "BatchItem",
    "CheckResult",
    "Claim",
    "ConnectionMonitor",
    "Streaks",
    "Webhook",
    "WebhookDelivery",
    "WebhookEvent",
    "claim_connections",
    "claim_deliveries",
    "load_batch",
    "load_streaks",
    "record_checks",
    "record_streaks",
    "release",
]

PENDING = "pending"


class ConnectionMonitor(Base):
    """The re-check backoff streaks of one connection."""

    __tablename__ = "connection_monitor"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    temporary_failures: Mapped[int] = mapped_column(Integer, default=0)
    error_streak: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]


class Webhook(Base):
    """A tenant's endpoint. `event_types` None: every type."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # Both sealed by the vault: URLs often carry a token of their own, as secret as the signing key.
    url_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    url_key_version: Mapped[int] = mapped_column(Integer)
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    secret_key_version: Mapped[int] = mapped_column(Integer)
    event_types: Mapped[list[Any] | None]
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_webhooks_tenant", "tenant_id", "created_at"),)


class WebhookEvent(Base):
    """One emitted event; its id is the one receivers de-duplicate on."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(40))
    connection_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_webhook_events_tenant", "tenant_id", "created_at"),)


class WebhookDelivery(Base):
    """One attempt (made, or `pending` at `next_attempt_at`) to deliver an event to a webhook."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    # pending, delivered, retrying (failed, another attempt follows) or failed (given up)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[datetime | None]

    __table_args__ = (
        Index("uq_webhook_deliveries_attempt", "event_id", "webhook_id", "attempt", unique=True),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )


# -- claims -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows taken until `lease_until`; `due` holds each row's due time before the claim."""

    lease_until: datetime
    ids: tuple[Any, ...]
    due: tuple[datetime | None, ...]


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def claim_connections(
    session: AsyncSession, *, now: datetime, limit: int, lease: timedelta
) -> Claim | None:
    """Take up to `limit` live connections due at `now`, oldest first. Call inside a transaction."""
    query = (
        select(Connection.id, Connection.next_check_at)
        .where(Connection.removed_at.is_(None), Connection.next_check_at <= now)
        .order_by(Connection.next_check_at)
        .limit(limit)
    )
    if _is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    if not rows:
        return None
    lease_until = now + lease
    ids = tuple(r[0] for r in rows)
    await session.execute(
        update(Connection)
        .where(Connection.id.in_(ids))
        .values(next_check_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    return Claim(lease_until, ids, tuple(r[1] for r in rows))


async def claim_deliveries(
    session: AsyncSession, *, now: datetime, limit: int, lease: timedelta
) -> Claim | None:
    """Take up to `limit` pending delivery attempts due at `now`. Call inside a transaction."""
    query = (
        select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    if _is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    if not rows:
        return None
    lease_until = now + lease
    ids = tuple(r[0] for r in rows)
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(next_attempt_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    return Claim(lease_until, ids, tuple(r[1] for r in rows))


# -- a batch of checks ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchItem:
    """A claimed connection still held by the claim, with its current credential version."""

    connection: Connection
    version: CredentialVersion
    temporary_failures: int
    error_streak: int


async def load_batch(session: AsyncSession, ids: Sequence[str], lease_until: datetime) -> list[BatchItem]:
    """The claimed connections that still hold this lease (others were recorded, removed or
    re-claimed since), each with its current credential version and backoff streaks."""
    if not ids:
        return []
    query = (
        select(Connection, CredentialVersion, ConnectionMonitor)
        .join(
            CredentialVersion,
            (CredentialVersion.connection_id == Connection.id) & CredentialVersion.revoked_at.is_(None),
        )
        .outerjoin(ConnectionMonitor, ConnectionMonitor.connection_id == Connection.id)
        .where(
            Connection.id.in_(list(ids)),
            Connection.next_check_at == lease_until,
            Connection.removed_at.is_(None),
        )
    )
    out = []
    for connection, version, streaks in (await session.execute(query)).all():
        if version.version != connection.current_version:
            continue  # a key switch in progress: the next claim sees it settled
        out.append(
            BatchItem(
                connection,
                version,
                streaks.temporary_failures if streaks is not None else 0,
                streaks.error_streak if streaks is not None else 0,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check to record: the connection's new column values (keysentry.store.connections.
    check_values, the one rule for recording a check), its history row and its streaks."""

    item: BatchItem
    values: dict[str, Any]
    history: CheckRecord
    temporary_failures: int
    error_streak: int


async def record_checks(
    session: AsyncSession, results: Sequence[CheckResult], *, lease_until: datetime, now: datetime
) -> set[str]:
    """Store checks of claimed connections, each only while the claim still holds it; returns the
    ids recorded. The rest were removed, got a new key, or were recorded or re-claimed meanwhile.

    Rows are locked in id order first (PostgreSQL), so two runs of one batch wait for each
    other instead of deadlocking, and the second finds the lease gone. Writes go as one
    executemany per statement shape: per-row statements cost more than the checks themselves.
    """
    by_id = {r.item.connection.id: r for r in results}
    if not by_id:
        return set()
    query = (
        select(Connection.id, Connection.current_version)
        .where(
            Connection.id.in_(list(by_id)),
            Connection.next_check_at == lease_until,
            Connection.removed_at.is_(None),
        )
        .order_by(Connection.id)
    )
    if _is_postgresql(session):
        query = query.with_for_update()
    held = [
        cid
        for cid, version in (await session.execute(query)).all()
        if version == by_id[cid].item.version.version
    ]
    if not held:
        return set()
    table = _table(Connection)
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for cid in held:
        values = by_id[cid].values
        if any(isinstance(v, ClauseElement) for v in values.values()):
            # an SQL expression (a temporary result keeps temporary_since): its own statement
            await session.execute(table.update().where(table.c.id == cid).values(**values))
            continue
        shapes.setdefault(tuple(sorted(values)), []).append(
            {"k_id": cid, **{f"v_{n}": v for n, v in values.items()}}
        )
    for names, params in shapes.items():
        statement = (
            table.update()
            .where(table.c.id == bindparam("k_id"))
            .values({n: bindparam(f"v_{n}", type_=table.c[n].type) for n in names})
        )
        await session.execute(statement, params)
    history_columns = [c.key for c in CheckRecord.__table__.columns if c.key != "id"]
    await session.execute(
        _table(CheckRecord).insert(),
        [{c: getattr(by_id[cid].history, c) for c in history_columns} for cid in held],
    )
    await record_streaks(
        session,
        {cid: Streaks(by_id[cid].temporary_failures, by_id[cid].error_streak) for cid in held},
        now=now,
    )
    return set(held)


# -- backoff streaks ---------------------------------------------------------------------------------


class Streaks(NamedTuple):
    """A connection's backoff streaks (the `connection_monitor` columns of the same names)."""

    temporary_failures: int = 0
    error_streak: int = 0


async def load_streaks(session: AsyncSession, connection_id: str) -> Streaks:
    """The stored streaks of one connection (zeros when it has no row yet). Read them in the
    transaction that records the next check, after locking the connection's row, so they are
    the ones that check replaces."""
    row = (
        await session.execute(
            select(ConnectionMonitor.temporary_failures, ConnectionMonitor.error_streak).where(
                ConnectionMonitor.connection_id == connection_id
            )
        )
    ).one_or_none()
    return Streaks(int(row[0]), int(row[1])) if row is not None else Streaks()


async def record_streaks(session: AsyncSession, streaks: Mapping[str, Streaks], *, now: datetime) -> None:
    """Store the streaks after recorded checks (connection id -> streaks), inside the transaction
    that records those checks: the one write of the counters, for the monitor and the lifecycle."""
    if not streaks:
        return
    insert = pg_insert if _is_postgresql(session) else sqlite_insert
    upsert = insert(_table(ConnectionMonitor))
    upsert = upsert.on_conflict_do_update(
        index_elements=["connection_id"],
        set_={
            "temporary_failures": upsert.excluded.temporary_failures,
            "error_streak": upsert.excluded.error_streak,
            "updated_at": upsert.excluded.updated_at,
        },
    )
    await session.execute(
        upsert,
        [
            {
                "connection_id": cid,
                "temporary_failures": s.temporary_failures,
                "error_streak": s.error_streak,
                "updated_at": now,
            }
            for cid, s in streaks.items()
        ],
    )


async def release(session: AsyncSession, connection_id: str, *, lease_until: datetime, at: datetime) -> bool:
    """Give a claimed connection back unchecked, due again at `at` (no rate budget, say)."""
    result = await session.execute(
        update(Connection)
        .where(Connection.id == connection_id, Connection.next_check_at == lease_until)
        .values(next_check_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1
