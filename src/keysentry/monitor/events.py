"""Events a tenant's webhooks receive when a connection's known state changes or nears expiry.

Events compare definitive states only (`last_known_status`): a temporary issue is not a change
of the key, and an exchange outage would otherwise send every tenant a pair of events per key.

| type | when |
| --- | --- |
| connection.status_changed | the definitive status changed (any change) |
| connection.broken | it became an error status from a non-error one |
| connection.recovered | it left an error status for a working one (connected or expires_soon) |
| connection.expiring | the time left until expiry crossed a warning threshold (once per threshold) |
| webhook.test | sent on request, to try an endpoint |

Payloads carry statuses, codes and dates, never a secret, a key or a finding's free text.

Events come from every check that is recorded, whoever made it: the monitor's re-checks
(keysentry.monitor.scheduler) and the lifecycle's add, refresh and key update
(keysentry.connections). Each compares the state it is about to replace with the state it
records (`connection_state` of the stored row, then `merge`), and `record_transitions` writes
the events, with their pending deliveries, in the transaction that records the check. A
transition is therefore sent once, by whichever check recorded it; the next check compares
against a state that already includes it. A connection's first definitive status is a change
from `unchecked`, whether the add, a refresh or the monitor saw it first.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from keysentry.domain import Severity, Status, severity_of
from keysentry.monitor.policy import ConnectionState
from keysentry.store.records import findings_from_json

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from keysentry.store.models import Connection

__all__ = [
    "DEFAULT_EXPIRING_DAYS",
    "Event",
    "EventType",
    "connection_state",
    "detect_events",
    "ping_event",
    "record_transitions",
]

DEFAULT_EXPIRING_DAYS: tuple[int, ...] = (14, 7, 3, 1)
_DAY = timedelta(days=1)
_WORKING = frozenset({Status.CONNECTED, Status.EXPIRES_SOON})


class EventType(StrEnum):
    STATUS_CHANGED = "connection.status_changed"
    EXPIRING = "connection.expiring"
    BROKEN = "connection.broken"
    RECOVERED = "connection.recovered"
    TEST = "webhook.test"


@dataclass(frozen=True, slots=True)
class Event:
    """One event. `id` is the same on every delivery attempt: receivers de-duplicate on it."""

    type: EventType
    tenant_id: str
    connection_id: str | None
    created_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.value,
            "created_at": self.created_at.isoformat(),
            "tenant_id": self.tenant_id,
            "connection_id": self.connection_id,
            "data": dict(self.data),
        }

    def body(self) -> bytes:
        """The exact bytes sent and signed (compact JSON, keys sorted)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


def detect_events(
    before: ConnectionState,
    after: ConnectionState,
    *,
    expiring_days: Sequence[int] = DEFAULT_EXPIRING_DAYS,
    now: datetime | None = None,
) -> list[Event]:
    """The events of going from `before` to `after` (the state stored before and after one check)."""
    if (before.connection_id, before.tenant_id) != (after.connection_id, after.tenant_id):
        raise ValueError("detect_events compares two states of the same connection")
    created = after.last_checked_at or now
    if created is None:
        raise ValueError("detect_events needs `now` when the new state has no check time")
    old, new = before.last_known_status, after.last_known_status
    data = _describe(before, after)
    events: list[Event] = []
    if old != new:
        events.append(_event(EventType.STATUS_CHANGED, after, created, data))
        old_broken, new_broken = severity_of(old) is Severity.ERROR, severity_of(new) is Severity.ERROR
        if new_broken and not old_broken:
            events.append(_event(EventType.BROKEN, after, created, data))
        elif old_broken and new in _WORKING:
            events.append(_event(EventType.RECOVERED, after, created, data))
    threshold = _crossed_threshold(before, after, expiring_days)
    if threshold is not None:
        events.append(_event(EventType.EXPIRING, after, created, {**data, "threshold_days": threshold}))
    return events


def connection_state(
    row: Connection, *, temporary_failures: int = 0, error_streak: int = 0
) -> ConnectionState:
    """The state stored in a connection row (the columns the policy and the events read); the
    backoff streaks live in another table (connection_monitor) and are passed in."""
    return ConnectionState(
        connection_id=row.id,
        tenant_id=row.tenant_id,
        exchange=row.exchange,
        status=Status(row.status),
        last_known_status=Status(row.last_known_status),
        findings=findings_from_json(row.findings),
        temporary_findings=findings_from_json(row.temporary_findings),
        expires_at=row.expires_at,
        last_checked_at=row.last_checked_at,
        last_definitive_at=row.last_definitive_at,
        temporary_since=row.temporary_since,
        temporary_failures=temporary_failures,
        error_streak=error_streak,
    )


async def record_transitions(
    session: AsyncSession,
    transitions: Iterable[tuple[ConnectionState, ConnectionState]],
    *,
    now: datetime,
    expiring_days: Sequence[int] = DEFAULT_EXPIRING_DAYS,
) -> int:
    """Write the events of each (stored state before, state recorded now) pair, and a pending
    delivery per matching webhook, inside the caller's transaction: the one that records the
    checks, so an event is neither lost nor sent for a check that was not recorded. Callers
    pass only checks they recorded, each with `before` the very state the recording replaced
    (read under a row lock in that transaction, or kept unchanged by the monitor's claim lease).
    Returns how many deliveries were queued."""
    events = [
        event
        for before, after in transitions
        for event in detect_events(before, after, expiring_days=expiring_days, now=now)
    ]
    if not events:
        return 0
    from keysentry.monitor.delivery import add_events  # webhooks and aiohttp: only when needed

    return await add_events(session, events, now=now)


def ping_event(tenant_id: str, *, now: datetime) -> Event:
    """What the API sends when a tenant asks to try an endpoint."""
    return Event(EventType.TEST, tenant_id, None, now, {"message": "keysentry webhook test"})


def _event(kind: EventType, state: ConnectionState, created: datetime, data: Mapping[str, Any]) -> Event:
    return Event(kind, state.tenant_id, state.connection_id, created, data)


def _describe(before: ConnectionState, after: ConnectionState) -> dict[str, Any]:
    return {
        "exchange": after.exchange,
        "status_before": before.last_known_status.value,
        "status_after": after.last_known_status.value,
        "severity": severity_of(after.last_known_status).value,
        "expires_at": after.expires_at.isoformat() if after.expires_at else None,
        "expires_in_days": _days_left(after),
        # Codes and severities only: messages are for our own pages, in the user's words.
        "findings": [{"code": f.code, "severity": f.severity.value} for f in after.findings],
    }


def _remaining(state: ConnectionState) -> timedelta | None:
    if state.expires_at is None or state.last_checked_at is None:
        return None
    return state.expires_at - state.last_checked_at


def _days_left(state: ConnectionState) -> int | None:
    left = _remaining(state)
    return None if left is None else max(0, left // _DAY)


def _crossed_threshold(
    before: ConnectionState, after: ConnectionState, thresholds: Sequence[int]
) -> int | None:
    """The tightest threshold (days) that the time left crossed between the two states, if any.

    Crossing means more than N days left before and at most N days after, so a threshold fires
    once however often the key is checked below it, and fires again only if the expiry was
    pushed back above it first (a renewed key). Already expired: the broken event says it.
    """
    after_left = _remaining(after)
    if after_left is None or after_left <= timedelta(0):
        return None
    before_left = _remaining(before)
    crossed = [
        d for d in thresholds if after_left <= d * _DAY and (before_left is None or before_left > d * _DAY)
    ]
    return min(crossed) if crossed else None
