"""The re-check schedule and the merge rule: pure functions, a fixed `now` and seeded randomness."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysentry.domain import Diagnosis, Finding, Severity, Status, severity_of
from keysentry.monitor import policy as policy_module
from keysentry.monitor.policy import (
    ConnectionState,
    RecheckPolicy,
    backoff_bound,
    merge,
    next_check_at,
    next_check_function,
    next_slot,
    phase_of,
    schedule,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
POLICY = RecheckPolicy()
DEFINITIVE = [s for s in Status if s not in (Status.TEMPORARY_ISSUE, Status.UNCHECKED)]


def diagnosis(status: Status, *, at: datetime = NOW, expires_at: datetime | None = None) -> Diagnosis:
    findings = []
    if status is not Status.CONNECTED:
        findings.append(Finding(status.value, severity_of(status), f"{status.value} seen", status=status))
    return Diagnosis("binance", "mainnet", findings=findings, checked_at=at, expires_at=expires_at)


def state(status: Status = Status.CONNECTED) -> ConnectionState:
    base = ConnectionState(connection_id="conn-1", tenant_id="tenant-1", exchange="binance")
    return merge(base, diagnosis(status), now=NOW) if status is not Status.UNCHECKED else base


def plan(previous: Status, current: Status, **kw: object) -> datetime:
    args: dict[str, object] = {
        "connection_id": "conn-1",
        "now": NOW,
        "previous": previous,
        "current": current,
        "temporary_failures": 0,
        "error_streak": 0,
        "expires_at": None,
        "rng": random.Random(7),
        **kw,
    }
    return next_check_at(POLICY, **args)  # type: ignore[arg-type]


def test_public_api_is_pinned() -> None:
    assert set(policy_module.__all__) == {
        "ConnectionState", "NextCheck", "RecheckPolicy", "backoff_bound", "full_jitter", "merge",
        "next_check_at", "next_check_function", "next_slot", "phase_of", "schedule",
    }  # fmt: skip


# -- spreading -------------------------------------------------------------------------------------


def test_ten_thousand_healthy_keys_spread_evenly_over_six_hours() -> None:
    interval = timedelta(hours=6)
    times = [plan(Status.CONNECTED, Status.CONNECTED, connection_id=f"conn-{i}") for i in range(10_000)]
    window_start = NOW + interval / 2
    assert all(window_start <= t < window_start + interval for t in times)
    buckets = Counter(int((t - window_start) / timedelta(minutes=15)) for t in times)
    assert set(buckets) == set(range(24))
    mean = 10_000 / 24  # about 417 a bucket; a uniform spread stays within a few dozen of it
    assert all(abs(count - mean) < 0.2 * mean for count in buckets.values()), sorted(buckets.values())


def test_phase_is_stable_and_differs_between_connections() -> None:
    assert phase_of("conn-1") == phase_of("conn-1")
    assert 0 <= phase_of("conn-1") < 1
    assert len({phase_of(f"conn-{i}") for i in range(100)}) == 100


def test_a_key_checked_at_its_slot_comes_back_one_interval_later() -> None:
    slot = next_slot("conn-1", not_before=NOW, interval=POLICY.interval)
    assert NOW <= slot < NOW + POLICY.interval
    again = plan(Status.CONNECTED, Status.CONNECTED, now=slot)
    assert again == slot + POLICY.interval


def test_a_key_checked_off_its_slot_returns_to_it() -> None:
    slot = next_slot("conn-1", not_before=NOW, interval=POLICY.interval)
    off = slot + POLICY.interval / 4  # checked late (an outage delayed it)
    again = plan(Status.CONNECTED, Status.CONNECTED, now=off)
    assert (again - slot) % POLICY.interval == timedelta(0)
    assert again - off >= POLICY.interval / 2  # not twice in a row


# -- temporary issues and failures: backoff with full jitter -------------------------------------------


def test_backoff_bound_doubles_then_stays_at_the_cap() -> None:
    base, cap = timedelta(minutes=1), timedelta(hours=1)
    bounds = [backoff_bound(n, base=base, cap=cap) for n in range(1, 12)]
    assert bounds[:4] == [base, 2 * base, 4 * base, 8 * base]
    assert all(a <= b for a, b in itertools.pairwise(bounds))
    assert bounds[-1] == cap
    assert backoff_bound(10**6, base=base, cap=cap) == cap  # no overflow after a long outage
    assert backoff_bound(0, base=base, cap=cap) == base


@pytest.mark.parametrize("failures", [1, 3, 6, 40])
def test_temporary_retry_is_jittered_within_its_bound(failures: int) -> None:
    bound = backoff_bound(failures, base=POLICY.temporary_base, cap=POLICY.temporary_cap)
    rng = random.Random(failures)
    delays = [
        plan(Status.CONNECTED, Status.TEMPORARY_ISSUE, temporary_failures=failures, rng=rng) - NOW
        for _ in range(500)
    ]
    assert all(POLICY.min_delay <= d <= max(bound, POLICY.min_delay) for d in delays)
    if bound > 4 * POLICY.min_delay:  # full jitter: spread over the whole range, not bunched
        assert max(delays) - min(delays) > bound / 2


def test_temporary_retries_back_off_as_failures_accumulate() -> None:
    def mean_delay(failures: int) -> float:
        rng = random.Random(1)
        delays = [
            plan(Status.CONNECTED, Status.TEMPORARY_ISSUE, temporary_failures=failures, rng=rng) - NOW
            for _ in range(300)
        ]
        return sum(d.total_seconds() for d in delays) / len(delays)

    means = [mean_delay(n) for n in (2, 4, 6, 8)]
    assert means == sorted(means) and means[-1] > 4 * means[0]
    assert mean_delay(30) <= POLICY.temporary_cap.total_seconds()


def test_a_broken_key_is_retried_with_backoff_never_slower_than_the_interval() -> None:
    rng = random.Random(3)
    for streak in (1, 2, 5, 50):
        bound = min(backoff_bound(streak, base=POLICY.error_base, cap=POLICY.error_cap), POLICY.interval)
        at = plan(Status.INVALID_KEY, Status.INVALID_KEY, error_streak=streak, rng=rng)
        assert NOW + POLICY.min_delay <= at <= NOW + bound


# -- status changes and expiry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current"),
    [
        (Status.CONNECTED, Status.INVALID_KEY),
        (Status.INVALID_KEY, Status.CONNECTED),
        (Status.CONNECTED, Status.EXPIRES_SOON),
    ],
)
def test_a_status_change_is_confirmed_soon(previous: Status, current: Status) -> None:
    assert plan(previous, current) == NOW + POLICY.after_change


def test_the_first_check_is_not_a_change() -> None:
    assert plan(Status.UNCHECKED, Status.CONNECTED) >= NOW + POLICY.interval / 2


@pytest.mark.parametrize("days_left", [14, 7, 3, 1])
def test_a_key_is_checked_just_after_each_expiry_threshold(days_left: int) -> None:
    expires_at = NOW + timedelta(days=days_left, hours=2)  # the threshold is two hours away
    at = plan(Status.CONNECTED, Status.CONNECTED, expires_at=expires_at)
    assert at == expires_at - timedelta(days=days_left) + POLICY.expiry_grace


def test_a_key_about_to_expire_is_checked_right_after_it_expires() -> None:
    expires_at = NOW + timedelta(minutes=40)
    at = plan(Status.EXPIRES_SOON, Status.EXPIRES_SOON, expires_at=expires_at)
    assert at == expires_at + POLICY.expiry_grace


def test_a_far_expiry_keeps_the_regular_slot() -> None:
    regular = plan(Status.CONNECTED, Status.CONNECTED)
    assert plan(Status.CONNECTED, Status.CONNECTED, expires_at=NOW + timedelta(days=60)) == regular
    # already expired: no moment left to wait for, no check storm either
    assert plan(Status.CONNECTED, Status.CONNECTED, expires_at=NOW - timedelta(days=1)) == regular


def test_times_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan(Status.CONNECTED, Status.CONNECTED, now=datetime(2026, 3, 10, 12))


def test_policy_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="interval"):
        RecheckPolicy(interval=timedelta(0))
    with pytest.raises(ValueError, match="cap"):
        RecheckPolicy(temporary_base=timedelta(hours=2), temporary_cap=timedelta(hours=1))
    with pytest.raises(ValueError, match="expiring_days"):
        RecheckPolicy(expiring_days=(7, 0))


# -- the merge rule: a temporary issue never flips a key ---------------------------------------------------


def test_a_temporary_issue_keeps_the_last_known_state() -> None:
    expires = NOW + timedelta(days=30)
    before = merge(state(Status.UNCHECKED), diagnosis(Status.EXPIRES_SOON, expires_at=expires), now=NOW)
    later = NOW + timedelta(hours=6)
    after = merge(before, diagnosis(Status.TEMPORARY_ISSUE, at=later), now=later)
    assert after.status is Status.TEMPORARY_ISSUE
    assert after.last_known_status is Status.EXPIRES_SOON
    assert after.findings == before.findings and after.expires_at == expires
    assert after.last_definitive_at == NOW and after.last_checked_at == later
    assert [f.code for f in after.temporary_findings] == ["temporary_issue"]
    assert (after.temporary_since, after.temporary_failures) == (later, 1)

    again = merge(after, diagnosis(Status.TEMPORARY_ISSUE, at=later + timedelta(hours=1)), now=later)
    assert again.temporary_since == later and again.temporary_failures == 2

    back = merge(again, diagnosis(Status.CONNECTED, at=later + timedelta(hours=2)), now=later)
    assert back.status is back.last_known_status is Status.CONNECTED
    assert (back.temporary_findings, back.temporary_since, back.temporary_failures) == ((), None, 0)


def test_a_broken_key_stays_known_broken_through_a_temporary_issue() -> None:
    broken = state(Status.INVALID_KEY)
    after = merge(broken, diagnosis(Status.TEMPORARY_ISSUE), now=NOW)
    assert after.last_known_status is Status.INVALID_KEY and after.error_streak == broken.error_streak


def test_error_streak_counts_definitive_errors_in_a_row() -> None:
    s = state(Status.CONNECTED)
    for expected, status in [
        (1, Status.IP_NOT_ALLOWED),
        (2, Status.INVALID_KEY),
        (2, Status.TEMPORARY_ISSUE),
    ]:
        s = merge(s, diagnosis(status), now=NOW)
        assert s.error_streak == expected
    assert merge(s, diagnosis(Status.CONNECTED), now=NOW).error_streak == 0


def test_last_known_status_never_holds_temporary_issue() -> None:
    with pytest.raises(ValueError, match="never temporary_issue"):
        ConnectionState(
            connection_id="c", tenant_id="t", exchange="okx", last_known_status=Status.TEMPORARY_ISSUE
        )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*DEFINITIVE, Status.TEMPORARY_ISSUE]), min_size=1, max_size=12))
def test_only_definitive_answers_change_the_known_status(results: list[Status]) -> None:
    s = state(Status.UNCHECKED)
    for status in results:
        s = merge(s, diagnosis(status), now=NOW)
    definitive = [r for r in results if r is not Status.TEMPORARY_ISSUE]
    assert s.last_known_status is (definitive[-1] if definitive else Status.UNCHECKED)
    assert s.status is results[-1]
    trailing = len(results) - max((i + 1 for i, r in enumerate(results) if r in definitive), default=0)
    assert s.temporary_failures == trailing


def test_schedule_reads_the_change_from_the_two_states() -> None:
    before = state(Status.CONNECTED)
    after = merge(before, diagnosis(Status.SECRET_MISMATCH), now=NOW)
    assert schedule(POLICY, before, after, now=NOW) == NOW + POLICY.after_change
    flaky = merge(before, diagnosis(Status.TEMPORARY_ISSUE), now=NOW)
    at = schedule(POLICY, before, flaky, now=NOW, rng=random.Random(2))
    assert NOW + POLICY.min_delay <= at <= NOW + max(POLICY.temporary_base, POLICY.min_delay)
    assert severity_of(after.last_known_status) is Severity.ERROR


# -- the schedule as the lifecycle takes it (ConnectionService(next_check=...)) -----------------------


def test_the_next_check_function_is_schedule_with_the_connections_own_phase() -> None:
    plan = next_check_function(POLICY, random.Random(3))
    healthy = [ConnectionState(connection_id=f"con-{i}", tenant_id="t", exchange="bybit") for i in range(50)]
    for before in healthy:
        before = merge(before, diagnosis(Status.CONNECTED), now=NOW - POLICY.interval)
        after = merge(before, diagnosis(Status.CONNECTED), now=NOW)
        planned = plan(before, after, NOW)
        # the connection's slot, whoever asks and however often: never a random one
        assert planned == next_slot(
            before.connection_id, not_before=NOW + POLICY.interval / 2, interval=POLICY.interval
        )
        assert planned == plan(before, after, NOW) == schedule(POLICY, before, after, now=NOW)


def test_the_next_check_function_confirms_a_change_and_backs_off_by_the_streaks_given() -> None:
    before = state(Status.CONNECTED)
    broken = merge(before, diagnosis(Status.EXPIRED), now=NOW)
    assert next_check_function(POLICY)(before, broken, NOW) == NOW + POLICY.after_change
    # the same random draws as the monitor's `schedule`: the same time for the same states
    flaky = before
    for failures in range(1, 6):
        after = merge(flaky, diagnosis(Status.TEMPORARY_ISSUE), now=NOW)
        assert after.temporary_failures == failures
        by_function = next_check_function(POLICY, random.Random(failures))(flaky, after, NOW)
        assert by_function == schedule(POLICY, flaky, after, now=NOW, rng=random.Random(failures))
        assert by_function <= NOW + max(
            backoff_bound(failures, base=POLICY.temporary_base, cap=POLICY.temporary_cap), POLICY.min_delay
        )
        flaky = after
    still_broken = merge(broken, diagnosis(Status.EXPIRED), now=NOW)
    assert still_broken.error_streak == 2
    assert next_check_function(POLICY, random.Random(9))(broken, still_broken, NOW) == schedule(
        POLICY, broken, still_broken, now=NOW, rng=random.Random(9)
    )
