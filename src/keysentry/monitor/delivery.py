"""Webhook registrations and event delivery on the store (tables in keysentry.store.monitoring).

- Registering: the URL is checked (keysentry.monitor.webhooks.check_url), a signing secret is
  made, and both are sealed by the vault (fields `webhook_secret` and `webhook_url`, bound to
  the tenant and webhook id: a URL often carries a token). The secret is shown once to the
  caller; listing shows the URL to its tenant, never the secret.
- Emitting: `add_events` writes events and one `pending` delivery per matching webhook inside
  the caller's transaction (the monitor's: the same one that records the check), so an event
  is never lost between the check and its delivery.
- Delivering: pending attempts are claimed like due checks (a lease on `next_attempt_at`), sent
  by `WebhookSender.attempt`, and recorded by `StoreDeliveryLog`: the outcome fills the
  attempt's row, and a retry becomes the next `pending` row. Delivery is at least once: an
  attempt whose claimer died is sent again when its lease ends, with the same event id.

Every decrypt of a signing secret and every registration change goes to the audit log, by the
webhook's id; the URL and the secret never appear in a log, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keysentry.domain.secrets import Secret
from keysentry.monitor.events import Event, EventType, ping_event
from keysentry.monitor.webhooks import DeliveryAttempt, WebhookEndpoint, WebhookSender, check_url, new_secret
from keysentry.store.db import Database
from keysentry.store.models import AuditEntry, Tenant
from keysentry.store.monitoring import PENDING, Claim, Webhook, WebhookDelivery, WebhookEvent
from keysentry.vault import DecryptionFailed, Vault

__all__ = [
    "EVENT_TYPES",
    "SECRET_FIELD",
    "URL_FIELD",
    "DeliveryView",
    "StoreDeliveryLog",
    "WebhookNotFound",
    "WebhookView",
    "add_events",
    "create_webhook",
    "delete_webhook",
    "deliver_claimed",
    "get_webhook",
    "list_deliveries",
    "list_webhooks",
    "send_test",
]

log = logging.getLogger(__name__)

SECRET_FIELD = "webhook_secret"
URL_FIELD = "webhook_url"
# What a tenant may subscribe to (webhook.test always reaches the endpoint it was sent to).
EVENT_TYPES = frozenset(t.value for t in EventType if t is not EventType.TEST)
AUDIT_ACTIONS = frozenset({"webhook_create", "webhook_delete", "webhook_decrypt"})
AUDIT_DETAILS = frozenset({"webhook_id", "event_types", "purpose"})
MAX_WEBHOOKS_PER_TENANT = 20


class WebhookNotFound(LookupError):
    """No such webhook for this tenant (another tenant's id included: it must not show it exists)."""


class EventTypesError(ValueError):
    """The event types asked for: unknown ones, or none at all. The message says which are known."""


class TooManyWebhooks(ValueError):
    """The tenant already has MAX_WEBHOOKS_PER_TENANT endpoints."""


@dataclass(frozen=True, slots=True)
class WebhookView:
    """A webhook as listed: never its secret. The URL is the tenant's own, shown only to it."""

    id: str
    tenant_id: str
    url: str
    event_types: tuple[str, ...] | None
    description: str
    created_at: datetime

    def __repr__(self) -> str:
        return f"WebhookView({self.id}, tenant={self.tenant_id})"


@dataclass(frozen=True, slots=True)
class DeliveryView:
    event_id: str
    event_type: str
    webhook_id: str
    attempt: int
    status: str
    http_status: int | None
    sent_at: datetime | None
    error: str | None
    duration_ms: float | None
    next_attempt_at: datetime | None


def _open(vault: Vault, row: Webhook, field: str, ciphertext: bytes, key_version: int) -> Secret:
    return vault.decrypt(
        ciphertext, tenant=row.tenant_id, connection=row.id, field=field, key_version=key_version
    )


def _url(vault: Vault, row: Webhook) -> str:
    return _open(vault, row, URL_FIELD, row.url_ciphertext, row.url_key_version).reveal()


def _view(vault: Vault, row: Webhook) -> WebhookView:
    types = tuple(str(t) for t in row.event_types) if row.event_types is not None else None
    return WebhookView(row.id, row.tenant_id, _url(vault, row), types, row.description, row.created_at)


def _audit(
    *, action: str, actor: str, tenant_id: str, target: str, now: datetime, details: dict[str, Any]
) -> AuditEntry:
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown webhook audit action {action!r}")
    unknown = set(details) - AUDIT_DETAILS
    if unknown:
        raise ValueError(f"audit details {sorted(unknown)} are not allowed for webhook actions")
    return AuditEntry(tenant_id=tenant_id, actor=actor, action=action, target=target, at=now, details=details)


# -- registrations ---------------------------------------------------------------------------------


def check_event_types(event_types: Iterable[str] | None) -> tuple[str, ...] | None:
    """The subscribed types, de-duplicated and sorted; None (every type) stays None."""
    if event_types is None:
        return None
    chosen = sorted(set(event_types))
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        shown = ", ".join(repr(t[:60]) for t in unknown[:5])
        raise EventTypesError(f"unknown event type(s) {shown}; known: {', '.join(sorted(EVENT_TYPES))}")
    if not chosen:
        raise EventTypesError(
            "subscribe to at least one event type, or leave event_types out for all of them"
        )
    return tuple(chosen)


async def create_webhook(
    db: Database,
    vault: Vault,
    *,
    tenant_id: str,
    url: str,
    event_types: Iterable[str] | None,
    description: str = "",
    actor: str,
    now: datetime,
    allow_private: bool = False,
) -> tuple[WebhookView, Secret]:
    """Register an endpoint; returns it and its signing secret (shown this once).

    Raises WebhookURLError or ValueError with a sentence for the caller."""
    check_url(url, allow_private=allow_private)
    types = check_event_types(event_types)
    webhook_id = f"whk_{secrets.token_hex(8)}"
    secret = new_secret()
    sealed = vault.encrypt(secret, tenant=tenant_id, connection=webhook_id, field=SECRET_FIELD)
    sealed_url = vault.encrypt(url, tenant=tenant_id, connection=webhook_id, field=URL_FIELD)
    row = Webhook(
        id=webhook_id,
        tenant_id=tenant_id,
        url_ciphertext=sealed_url.ciphertext,
        url_key_version=sealed_url.key_version,
        secret_ciphertext=sealed.ciphertext,
        secret_key_version=sealed.key_version,
        event_types=list(types) if types is not None else None,
        description=" ".join(description.split())[:200],
        created_at=now,
    )
    async with db.session() as s, s.begin():
        if await s.get(Tenant, tenant_id) is None:
            raise ValueError(f"there is no tenant {tenant_id!r}")
        count = len((await s.execute(select(Webhook.id).where(Webhook.tenant_id == tenant_id))).all())
        if count >= MAX_WEBHOOKS_PER_TENANT:
            raise TooManyWebhooks(
                f"a tenant may register at most {MAX_WEBHOOKS_PER_TENANT} webhooks; delete one first"
            )
        s.add(row)
        s.add(
            _audit(
                action="webhook_create",
                actor=actor,
                tenant_id=tenant_id,
                target=webhook_id,
                now=now,
                details={"event_types": list(types) if types is not None else None},
            )
        )
    return _view(vault, row), secret


async def list_webhooks(db: Database, vault: Vault, tenant_id: str) -> list[WebhookView]:
    async with db.session() as s:
        rows = await s.execute(
            select(Webhook).where(Webhook.tenant_id == tenant_id).order_by(Webhook.created_at, Webhook.id)
        )
        return [_view(vault, r) for r in rows.scalars()]


async def get_webhook(db: Database, vault: Vault, tenant_id: str, webhook_id: str) -> WebhookView:
    async with db.session() as s:
        return _view(vault, await _owned(s, tenant_id, webhook_id))


async def _owned(session: AsyncSession, tenant_id: str, webhook_id: str) -> Webhook:
    row = (
        await session.execute(select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id))
    ).scalar_one_or_none()
    if row is None:
        raise WebhookNotFound(webhook_id)
    return row


async def delete_webhook(db: Database, tenant_id: str, webhook_id: str, *, actor: str, now: datetime) -> None:
    """Delete the endpoint, its secret and its delivery log; pending deliveries are dropped."""
    async with db.session() as s, s.begin():
        row = await _owned(s, tenant_id, webhook_id)
        await s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == row.id))
        await s.delete(row)
        s.add(
            _audit(
                action="webhook_delete",
                actor=actor,
                tenant_id=tenant_id,
                target=webhook_id,
                now=now,
                details={},
            )
        )


async def list_deliveries(
    db: Database, tenant_id: str, webhook_id: str, *, limit: int = 50
) -> list[DeliveryView]:
    """The endpoint's delivery log, newest first."""
    async with db.session() as s:
        await _owned(s, tenant_id, webhook_id)
        rows = await s.execute(
            select(WebhookDelivery, WebhookEvent.type)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
        return [
            DeliveryView(
                d.event_id,
                kind,
                d.webhook_id,
                d.attempt,
                d.status,
                d.http_status,
                d.sent_at,
                d.error,
                d.duration_ms,
                d.next_attempt_at,
            )
            for d, kind in rows.all()
        ]


# -- emitting --------------------------------------------------------------------------------------


async def add_events(session: AsyncSession, events: Sequence[Event], *, now: datetime) -> int:
    """Store events and a pending delivery to each of the tenant's webhooks that takes them,
    inside the caller's transaction. Returns how many deliveries were queued."""
    if not events:
        return 0
    tenants = {e.tenant_id for e in events}
    hooks = (await session.execute(select(Webhook).where(Webhook.tenant_id.in_(tenants)))).scalars().all()
    queued = 0
    for event in events:
        session.add(
            WebhookEvent(
                id=event.id,
                tenant_id=event.tenant_id,
                type=event.type.value,
                connection_id=event.connection_id,
                created_at=event.created_at,
                data=dict(event.data),
            )
        )
    await session.flush()  # the events first: deliveries refer to them
    for event in events:
        for hook in hooks:
            if hook.tenant_id == event.tenant_id and (
                hook.event_types is None or event.type.value in hook.event_types
            ):
                session.add(_pending(event.id, hook.id, 1, now))
                queued += 1
    return queued


def _pending(event_id: str, webhook_id: str, attempt: int, at: datetime) -> WebhookDelivery:
    return WebhookDelivery(
        event_id=event_id,
        webhook_id=webhook_id,
        attempt=attempt,
        status=PENDING,
        http_status=None,
        sent_at=None,
        error=None,
        duration_ms=None,
        next_attempt_at=at,
    )


# -- delivering ------------------------------------------------------------------------------------


class StoreDeliveryLog:
    """The delivery log on the store: an attempt's outcome fills its pending row; a retry
    queues the next attempt as a new pending row at `next_attempt_at`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, attempt: DeliveryAttempt) -> None:
        async with self.db.session() as s, s.begin():
            done = await s.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.event_id == attempt.event_id,
                    WebhookDelivery.webhook_id == attempt.endpoint_id,
                    WebhookDelivery.attempt == attempt.attempt,
                    WebhookDelivery.status == PENDING,
                )
                .values(
                    status=attempt.outcome,
                    http_status=attempt.http_status,
                    sent_at=attempt.sent_at,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                    next_attempt_at=attempt.next_attempt_at,
                )
                .execution_options(synchronize_session=False)
            )
            if int(getattr(done, "rowcount", 0) or 0) != 1:
                return  # recorded by another claimer of the same attempt (its lease ran out)
            if attempt.outcome == "retrying" and attempt.next_attempt_at is not None:
                s.add(
                    _pending(
                        attempt.event_id, attempt.endpoint_id, attempt.attempt + 1, attempt.next_attempt_at
                    )
                )


def _endpoint(vault: Vault, row: Webhook) -> WebhookEndpoint:
    secret = _open(vault, row, SECRET_FIELD, row.secret_ciphertext, row.secret_key_version)
    types = frozenset(str(t) for t in row.event_types) if row.event_types is not None else None
    return WebhookEndpoint(
        id=row.id, tenant_id=row.tenant_id, url=_url(vault, row), secret=secret, event_types=types
    )


def _event(row: WebhookEvent) -> Event:
    return Event(
        EventType(row.type), row.tenant_id, row.connection_id, row.created_at, dict(row.data), row.id
    )


async def deliver_claimed(
    db: Database,
    vault: Vault,
    sender: WebhookSender,
    claim: Claim,
    *,
    now: datetime,
    actor: str = "monitor",
    concurrency: int = 20,
) -> int:
    """Attempt each claimed pending delivery once; returns how many were sent."""
    async with db.session() as s, s.begin():
        rows = (
            await s.execute(
                select(WebhookDelivery, WebhookEvent, Webhook)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(
                    WebhookDelivery.id.in_(list(claim.ids)),
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.next_attempt_at == claim.lease_until,
                )
            )
        ).all()
        for _, _, hook in rows:  # the decrypts are logged before they happen
            s.add(
                _audit(
                    action="webhook_decrypt",
                    actor=actor,
                    tenant_id=hook.tenant_id,
                    target=hook.id,
                    now=now,
                    details={"purpose": "signing"},
                )
            )
    gate = asyncio.Semaphore(concurrency)

    async def one(delivery: WebhookDelivery, event_row: WebhookEvent, hook: Webhook) -> bool:
        try:
            endpoint = _endpoint(vault, hook)
        except DecryptionFailed:
            log.error("webhook %s: its signing secret does not decrypt; delivery skipped", hook.id)
            return False
        async with gate:
            await sender.attempt(_event(event_row), endpoint, delivery.attempt)
        return True

    sent = await asyncio.gather(*(one(*r) for r in rows))
    return sum(sent)


async def send_test(
    db: Database,
    vault: Vault,
    sender: WebhookSender,
    *,
    tenant_id: str,
    webhook_id: str,
    actor: str,
    now: datetime,
) -> DeliveryAttempt:
    """Send a `webhook.test` event to one endpoint now; a failed attempt is retried like any event."""
    event = ping_event(tenant_id, now=now)
    async with db.session() as s, s.begin():
        hook = await _owned(s, tenant_id, webhook_id)
        s.add(
            WebhookEvent(
                id=event.id,
                tenant_id=tenant_id,
                type=event.type.value,
                connection_id=None,
                created_at=now,
                data=dict(event.data),
            )
        )
        await s.flush()
        # Leased a while ahead, so the monitor does not send this first attempt a second time.
        s.add(_pending(event.id, hook.id, 1, now + timedelta(minutes=5)))
        s.add(
            _audit(
                action="webhook_decrypt",
                actor=actor,
                tenant_id=tenant_id,
                target=hook.id,
                now=now,
                details={"purpose": "test"},
            )
        )
    return await sender.attempt(event, _endpoint(vault, hook), 1)
