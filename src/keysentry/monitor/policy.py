"""When to check a connection again, and what a new result changes in its stored state.

Two pure rules, no I/O, no clock of their own (`now` and the random source are arguments):

- `merge`: the state stored after a check, by the store's rule (`check_values`): only a
  definitive answer changes the key's known state; a temporary issue (the exchange could not
  answer) only changes what is shown: `status` becomes temporary_issue while
  `last_known_status`, `findings` and `expires_at` keep the last definitive answer. A hiccup
  at the exchange never marks a working key broken.
- `next_check_at`: when to check again. Healthy keys come back once per interval at a fixed
  per-connection phase (a hash of the id), so a million keys spread evenly over the interval
  instead of bunching where they were added; sooner just after each expiry warning threshold
  and at the expiry itself; soon after a status change (to confirm it); with capped exponential
  backoff and full jitter after temporary issues and while a key stays broken.

`next_check_function(policy)` is `schedule` in the shape every recorder of a check takes
(`NextCheck`: the state replaced, the state recorded, now): the monitor's scheduler and the
lifecycle's add, refresh and key update (keysentry.connections) plan by the same call, with the
connection's id (its phase), its last definitive status and its backoff streaks.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.sql.elements import ClauseElement

from keysentry.domain import Diagnosis, Finding, Severity, Status, severity_of
from keysentry.store.connections import check_values
from keysentry.store.records import findings_from_json

__all__ = [
    "ConnectionState",
    "NextCheck",
    "RecheckPolicy",
    "backoff_bound",
    "full_jitter",
    "merge",
    "next_check_at",
    "next_check_function",
    "next_slot",
    "phase_of",
    "schedule",
]

# Slots are counted from a fixed origin so that a connection's phase is the same in every process.
_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
_NO_ANSWER = frozenset({Status.TEMPORARY_ISSUE, Status.UNCHECKED})


@dataclass(frozen=True, slots=True, kw_only=True)
class RecheckPolicy:
    """Operator settings of the re-check schedule. All durations are positive."""

    interval: timedelta = timedelta(hours=6)  # a healthy key is checked once per interval
    min_delay: timedelta = timedelta(seconds=30)  # never sooner than this after a check
    after_change: timedelta = timedelta(minutes=10)  # confirm a status change this soon
    temporary_base: timedelta = timedelta(minutes=1)  # first retry bound after a temporary issue
    temporary_cap: timedelta = timedelta(hours=1)
    error_base: timedelta = timedelta(minutes=30)  # a broken key: the user may fix it soon
    error_cap: timedelta = timedelta(hours=6)  # never above `interval` either
    expiring_days: tuple[int, ...] = (14, 7, 3, 1)  # warning thresholds (events.py uses the same)
    expiry_grace: timedelta = timedelta(minutes=5)  # check this long after a threshold or the expiry

    def __post_init__(self) -> None:
        for name in (
            "interval",
            "min_delay",
            "after_change",
            "temporary_base",
            "temporary_cap",
            "error_base",
            "error_cap",
            "expiry_grace",
        ):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise ValueError(f"re-check policy: {name} must be a positive duration, not {value!r}")
        if self.temporary_cap < self.temporary_base or self.error_cap < self.error_base:
            raise ValueError("re-check policy: a backoff cap must not be below its base")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.expiring_days):
            raise ValueError(
                f"re-check policy: expiring_days must be whole days of at least 1, not {self.expiring_days!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionState:
    """What the monitor keeps about one connection between checks (the store's columns of the same names).

    `status` is what is shown now; `last_known_status`, `findings`, `expires_at` and
    `last_definitive_at` are the last definitive answer. `temporary_failures` counts temporary
    results in a row, `error_streak` definitive error results in a row (both drive the backoff).
    """

    connection_id: str
    tenant_id: str
    exchange: str
    status: Status = Status.UNCHECKED
    last_known_status: Status = Status.UNCHECKED
    findings: tuple[Finding, ...] = ()
    temporary_findings: tuple[Finding, ...] = ()
    expires_at: datetime | None = None
    last_checked_at: datetime | None = None
    last_definitive_at: datetime | None = None
    temporary_since: datetime | None = None
    temporary_failures: int = 0
    error_streak: int = 0

    def __post_init__(self) -> None:
        if self.last_known_status is Status.TEMPORARY_ISSUE:
            raise ValueError("last_known_status holds definitive answers only, never temporary_issue")


def merge(before: ConnectionState, diagnosis: Diagnosis, *, now: datetime) -> ConnectionState:
    """The state stored after `diagnosis`: the store's rule for recording a check
    (`keysentry.store.connections.check_values`, the one place it lives) applied to `before`,
    plus the two streaks that drive the backoff."""
    values = check_values(diagnosis, now=now, next_check_at=None)
    checked_at: datetime = values["last_checked_at"]
    temporary_findings = findings_from_json(values["temporary_findings"])
    if "last_known_status" not in values:  # the rule kept the last definitive state
        since = values["temporary_since"]
        return replace(
            before,
            status=Status(values["status"]),
            temporary_findings=temporary_findings,
            last_checked_at=checked_at,
            # the store keeps the first temporary moment in a row (a SQL coalesce over the column)
            temporary_since=(before.temporary_since or checked_at) if _is_sql(since) else since,
            temporary_failures=before.temporary_failures + 1,
        )
    status = Status(values["last_known_status"])
    broken = severity_of(status) is Severity.ERROR
    return replace(
        before,
        status=Status(values["status"]),
        last_known_status=status,
        findings=findings_from_json(values["findings"]),
        temporary_findings=temporary_findings,
        expires_at=values["expires_at"],
        last_checked_at=checked_at,
        last_definitive_at=values["last_definitive_at"],
        temporary_since=values["temporary_since"],
        temporary_failures=0,
        error_streak=before.error_streak + 1 if broken else 0,
    )


def _is_sql(value: object) -> bool:
    return isinstance(value, ClauseElement)


# -- the schedule ------------------------------------------------------------------------------------


def phase_of(connection_id: str) -> float:
    """A stable number in [0, 1) for the id: where in each interval this connection is checked."""
    digest = hashlib.sha256(connection_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def next_slot(connection_id: str, *, not_before: datetime, interval: timedelta) -> datetime:
    """The connection's first slot at or after `not_before` (slots are `interval` apart)."""
    _require_aware(not_before)
    offset = phase_of(connection_id) * interval
    cycles = (not_before - _ORIGIN - offset) // interval
    slot = _ORIGIN + offset + cycles * interval
    return slot if slot >= not_before else slot + interval


def backoff_bound(failures: int, *, base: timedelta, cap: timedelta) -> timedelta:
    """base, 2·base, 4·base... for the 1st, 2nd, 3rd failure in a row, never above cap."""
    doublings = min(max(failures, 1) - 1, 60)  # in float seconds: a timedelta would overflow first
    return min(cap, timedelta(seconds=min(cap.total_seconds(), base.total_seconds() * 2.0**doublings)))


def full_jitter(bound: timedelta, rng: random.Random) -> timedelta:
    """Uniform in [0, bound]: retries of many keys failing together spread instead of marching in step."""
    return bound * rng.random()


def next_check_at(
    policy: RecheckPolicy,
    *,
    connection_id: str,
    now: datetime,
    previous: Status,
    current: Status,
    temporary_failures: int,
    error_streak: int,
    expires_at: datetime | None,
    rng: random.Random | None = None,
) -> datetime:
    """When to check again, given the last definitive status before this check and this check's result.

    `previous` is the last definitive status before the check, `current` the check's own
    status (temporary_issue when the exchange could not answer).
    """
    _require_aware(now)
    rng = rng if rng is not None else random.Random()
    earliest = now + policy.min_delay
    if current in _NO_ANSWER:
        bound = backoff_bound(temporary_failures, base=policy.temporary_base, cap=policy.temporary_cap)
        planned = now + full_jitter(bound, rng)
    elif previous is not Status.UNCHECKED and previous != current:
        planned = now + policy.after_change
    elif severity_of(current) is Severity.ERROR:
        cap = min(policy.error_cap, policy.interval)
        planned = now + full_jitter(backoff_bound(error_streak, base=policy.error_base, cap=cap), rng)
    else:
        # Half an interval at least: a key checked off its slot (after an outage, say) drifts back
        # to its slot instead of being checked twice in a row.
        planned = next_slot(connection_id, not_before=now + policy.interval / 2, interval=policy.interval)
    if expires_at is not None:
        moment = _next_expiry_moment(expires_at, policy.expiring_days, now)
        if moment is not None:
            planned = min(planned, moment + policy.expiry_grace)
    return max(planned, earliest)


def schedule(
    policy: RecheckPolicy,
    before: ConnectionState,
    after: ConnectionState,
    *,
    now: datetime,
    rng: random.Random | None = None,
) -> datetime:
    """`next_check_at` for a stored state `before` and its `merge`d successor `after`."""
    return next_check_at(
        policy,
        connection_id=after.connection_id,
        now=now,
        previous=before.last_known_status,
        current=after.status,
        temporary_failures=after.temporary_failures,
        error_streak=after.error_streak,
        expires_at=after.expires_at,
        rng=rng,
    )


# (the stored state a check replaces, the state it records (`merge`), now) -> when to check again
NextCheck = Callable[[ConnectionState, ConnectionState, datetime], datetime]


def next_check_function(policy: RecheckPolicy, rng: random.Random | None = None) -> NextCheck:
    """`schedule` by `policy` as a `NextCheck`: what `ConnectionService(next_check=...)` takes, so a
    check recorded by hand is planned exactly as the monitor plans its own (same phase, same
    re-check after a status change, same backoff from the same streaks)."""
    source = rng if rng is not None else random.Random()

    def next_check(before: ConnectionState, after: ConnectionState, now: datetime) -> datetime:
        return schedule(policy, before, after, now=now, rng=source)

    return next_check


def _next_expiry_moment(expires_at: datetime, thresholds: tuple[int, ...], now: datetime) -> datetime | None:
    """The next warning threshold (expiry minus N days) or the expiry itself still ahead of `now`."""
    moments = [expires_at - timedelta(days=d) for d in thresholds] + [expires_at]
    ahead = [m for m in moments if m > now]
    return min(ahead) if ahead else None


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware (UTC), not naive: {moment.isoformat()}")
