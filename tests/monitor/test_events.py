"""Events from pairs of stored states: transitions, expiry thresholds, payloads without secrets."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from keysentry.domain import Diagnosis, Finding, Severity, Status, severity_of
from keysentry.monitor import events as events_module
from keysentry.monitor.events import Event, EventType, detect_events, ping_event
from keysentry.monitor.policy import ConnectionState, merge

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DEFINITIVE = [s for s in Status if s not in (Status.TEMPORARY_ISSUE, Status.UNCHECKED)]
WORKING = {Status.CONNECTED, Status.EXPIRES_SOON}
E = EventType


def diagnosis(
    status: Status, *, at: datetime = NOW, expires_at: datetime | None = None, message: str = "seen"
) -> Diagnosis:
    findings = []
    if status is not Status.CONNECTED:
        findings.append(Finding(status.value, severity_of(status), message, status=status))
    return Diagnosis("okx", "mainnet", findings=findings, checked_at=at, expires_at=expires_at)


def fresh() -> ConnectionState:
    return ConnectionState(connection_id="conn-9", tenant_id="tenant-3", exchange="okx")


def known(status: Status, **kw: object) -> ConnectionState:
    return merge(fresh(), diagnosis(status, **kw), now=NOW) if status is not Status.UNCHECKED else fresh()  # type: ignore[arg-type]


def types(events: list[Event]) -> list[EventType]:
    return [e.type for e in events]


def test_public_api_is_pinned() -> None:
    assert set(events_module.__all__) == {
        "DEFAULT_EXPIRING_DAYS",
        "Event",
        "EventType",
        "connection_state",
        "detect_events",
        "ping_event",
        "record_transitions",
    }
    assert [t.value for t in EventType] == [
        "connection.status_changed", "connection.expiring", "connection.broken", "connection.recovered",
        "webhook.test",
    ]  # fmt: skip


# -- transitions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (Status.CONNECTED, Status.INVALID_KEY, [E.STATUS_CHANGED, E.BROKEN]),
        (Status.EXPIRES_SOON, Status.EXPIRED, [E.STATUS_CHANGED, E.BROKEN]),
        (Status.UNCHECKED, Status.IP_NOT_ALLOWED, [E.STATUS_CHANGED, E.BROKEN]),
        (Status.INVALID_KEY, Status.CONNECTED, [E.STATUS_CHANGED, E.RECOVERED]),
        (Status.EXPIRED, Status.EXPIRES_SOON, [E.STATUS_CHANGED, E.RECOVERED]),
        (Status.INVALID_KEY, Status.SECRET_MISMATCH, [E.STATUS_CHANGED]),
        (Status.CONNECTED, Status.EXPIRES_SOON, [E.STATUS_CHANGED]),
        (Status.UNCHECKED, Status.CONNECTED, [E.STATUS_CHANGED]),
        (Status.CONNECTED, Status.CONNECTED, []),
        (Status.INVALID_KEY, Status.INVALID_KEY, []),
    ],
)
def test_transitions(before: Status, after: Status, expected: list[EventType]) -> None:
    old = known(before)
    new = merge(old, diagnosis(after, at=NOW + timedelta(hours=1)), now=NOW)
    assert types(detect_events(old, new)) == expected


@pytest.mark.parametrize("before", DEFINITIVE)
@pytest.mark.parametrize("after", DEFINITIVE)
def test_every_pair_of_definitive_statuses(before: Status, after: Status) -> None:
    old = known(before)
    got = set(types(detect_events(old, merge(old, diagnosis(after), now=NOW))))
    broke = severity_of(after) is Severity.ERROR and severity_of(before) is not Severity.ERROR
    healed = severity_of(before) is Severity.ERROR and after in WORKING
    assert (E.STATUS_CHANGED in got) == (before != after)
    assert (E.BROKEN in got) == broke
    assert (E.RECOVERED in got) == healed


@pytest.mark.parametrize("before", [Status.CONNECTED, Status.INVALID_KEY, Status.UNCHECKED])
def test_a_temporary_issue_emits_nothing_going_in_or_coming_out(before: Status) -> None:
    old = known(before)
    flaky = merge(old, diagnosis(Status.TEMPORARY_ISSUE, at=NOW + timedelta(hours=1)), now=NOW)
    assert detect_events(old, flaky) == []
    back = merge(flaky, diagnosis(old.last_known_status, at=NOW + timedelta(hours=2)), now=NOW)
    if before is not Status.UNCHECKED:
        assert detect_events(flaky, back) == []


# -- expiry thresholds ------------------------------------------------------------------------------------


def sweep(expires_at: datetime, start: datetime, *, every: timedelta, until: datetime) -> list[Event]:
    """Check a connected key every `every` from `start` to `until`; collect the expiring events."""
    s, t, out = known(Status.CONNECTED, expires_at=expires_at), start, []
    while t <= until:
        nxt = merge(s, diagnosis(Status.CONNECTED, at=t, expires_at=expires_at), now=t)
        out += [e for e in detect_events(s, nxt) if e.type is E.EXPIRING]
        s, t = nxt, t + every
    return out


def test_each_threshold_fires_once_at_the_first_check_below_it() -> None:
    expires_at = NOW + timedelta(days=20)
    events = sweep(expires_at, NOW, every=timedelta(hours=5), until=expires_at + timedelta(days=1))
    assert [e.data["threshold_days"] for e in events] == [14, 7, 3, 1]
    for e in events:
        left = expires_at - e.created_at
        days = e.data["threshold_days"]
        assert timedelta(days=days) - timedelta(hours=5) < left <= timedelta(days=days)
        assert e.data["expires_in_days"] == left // timedelta(days=1)


def test_a_jump_past_several_thresholds_fires_the_tightest_only() -> None:
    expires_at = NOW + timedelta(days=20)
    s = known(Status.CONNECTED, expires_at=expires_at)
    later = expires_at - timedelta(days=2)
    after = merge(s, diagnosis(Status.EXPIRES_SOON, at=later, expires_at=expires_at), now=later)
    expiring = [e for e in detect_events(s, after) if e.type is E.EXPIRING]
    assert [e.data["threshold_days"] for e in expiring] == [3]


def test_the_same_threshold_never_fires_twice() -> None:
    expires_at = NOW + timedelta(days=6, hours=12)
    first = known(Status.CONNECTED)  # no expiry known before
    s1 = merge(first, diagnosis(Status.EXPIRES_SOON, expires_at=expires_at), now=NOW)
    assert [e.data["threshold_days"] for e in detect_events(first, s1) if e.type is E.EXPIRING] == [7]
    t = NOW + timedelta(hours=1)
    s2 = merge(s1, diagnosis(Status.EXPIRES_SOON, at=t, expires_at=expires_at), now=t)
    assert detect_events(s1, s2) == []
    t = NOW + timedelta(hours=2)  # a temporary issue in between keeps the expiry and stays silent
    s3 = merge(s2, diagnosis(Status.TEMPORARY_ISSUE, at=t), now=t)
    assert detect_events(s2, s3) == []


def test_a_renewed_key_warns_again_next_time() -> None:
    old_expiry = NOW + timedelta(days=2)
    s = known(Status.EXPIRES_SOON, expires_at=old_expiry)
    renewed = NOW + timedelta(days=90)
    t = NOW + timedelta(hours=1)
    s2 = merge(s, diagnosis(Status.CONNECTED, at=t, expires_at=renewed), now=t)
    assert E.EXPIRING not in types(detect_events(s, s2))
    t = renewed - timedelta(days=13)
    s3 = merge(s2, diagnosis(Status.EXPIRES_SOON, at=t, expires_at=renewed), now=t)
    assert [e.data["threshold_days"] for e in detect_events(s2, s3) if e.type is E.EXPIRING] == [14]


def test_an_already_expired_key_gets_broken_not_expiring() -> None:
    expires_at = NOW + timedelta(days=3, hours=1)
    s = known(Status.EXPIRES_SOON, expires_at=expires_at)
    t = expires_at + timedelta(minutes=5)
    after = merge(s, diagnosis(Status.EXPIRED, at=t, expires_at=expires_at), now=t)
    assert types(detect_events(s, after)) == [E.STATUS_CHANGED, E.BROKEN]


def test_configured_thresholds_are_used() -> None:
    expires_at = NOW + timedelta(days=31)
    events = sweep(expires_at, NOW, every=timedelta(days=1), until=expires_at)
    assert [e.data["threshold_days"] for e in events] == [14, 7, 3, 1]
    s = known(Status.CONNECTED, expires_at=expires_at)
    t = expires_at - timedelta(days=29)
    after = merge(s, diagnosis(Status.CONNECTED, at=t, expires_at=expires_at), now=t)
    got = detect_events(s, after, expiring_days=(30, 10))
    assert [e.data["threshold_days"] for e in got] == [30]


# -- the payload ------------------------------------------------------------------------------------------


def test_payload_names_the_change_and_never_the_finding_text() -> None:
    old = known(Status.CONNECTED)
    canary = "CANARY-message-Zx81 api_key=abcd"
    new = merge(old, diagnosis(Status.IP_NOT_ALLOWED, at=NOW + timedelta(hours=1), message=canary), now=NOW)
    events = detect_events(old, new)
    assert len({e.id for e in events}) == len(events) == 2
    for event in events:
        uuid.UUID(event.id, version=4)
        body = event.body()
        assert b"CANARY" not in body and b"api_key" not in body
        payload = json.loads(body)
        assert payload == event.to_json()
        assert payload["type"] == event.type.value
        assert (payload["tenant_id"], payload["connection_id"]) == ("tenant-3", "conn-9")
        assert payload["created_at"] == (NOW + timedelta(hours=1)).isoformat()
        data = payload["data"]
        assert (data["status_before"], data["status_after"], data["severity"]) == (
            "connected",
            "ip_not_allowed",
            "error",
        )
        assert data["exchange"] == "okx"
        assert data["findings"] == [{"code": "ip_not_allowed", "severity": "error"}]
    assert events[0].body() == events[0].body()  # the exact bytes are stable across attempts


def test_states_of_two_connections_are_not_compared() -> None:
    other = ConnectionState(connection_id="conn-10", tenant_id="tenant-3", exchange="okx")
    with pytest.raises(ValueError, match="same connection"):
        detect_events(fresh(), other, now=NOW)


def test_ping_event_belongs_to_the_tenant_and_no_connection() -> None:
    event = ping_event("tenant-3", now=NOW)
    assert event.type is E.TEST and event.connection_id is None and event.tenant_id == "tenant-3"
    assert json.loads(event.body())["type"] == "webhook.test"
