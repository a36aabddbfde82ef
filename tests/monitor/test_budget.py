"""Rate budgets: paced in memory on a fake clock, shared through the real Redis, and against a simulator."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import require_service

import canary
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.exchanges import binance, bybit, kucoin, okx
from keysentry.exchanges.base import Cause, CheckRequest, Probe, ProbeOutcome
from keysentry.exchanges.bybit import BybitAdapter
from keysentry.exchanges.transport import MockTransport, RawResponse, Transport, TransportConnectionError
from keysentry.monitor import budget as budget_module
from keysentry.monitor.budget import (
    ENDPOINTS,
    PUBLISHED,
    Budget,
    BudgetedTransport,
    BudgetExhausted,
    Lease,
    Pool,
    check_calls,
    cost_of,
)
from keysentry.monitor.service import MonitorConfig
from keysentry.settings import Settings
from keysentry.sim import binance as binance_sim
from keysentry.sim import kucoin as kucoin_sim
from keysentry.sim import okx as okx_sim
from keysentry.sim.bybit import BybitSim
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster

REDIS_URL = "redis://127.0.0.1:6379/0"
IPS = ("127.0.0.2", "127.0.0.3")
T0 = 1_800_000_000.0  # a whole number of every window below: fixed windows start on it
ROUNDING = 1e-6  # float noise in slot arithmetic, far below any interval here


class FakeClock:
    """Virtual time for the budget: sleeping moves it forward."""

    def __init__(self) -> None:
        self.now = T0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)  # let the other waiters run, as a real sleep would
        self.now = max(self.now, target)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def memory_budget(clock: FakeClock, pools: Mapping[str, Mapping[str, Pool]], **options: Any) -> Budget:
    options = {"utilisation": 1.0, "latency_slack_s": 0, **options}
    return Budget.memory(pools=pools, clock=clock.time, sleep=clock.sleep, **options)


def one_pool(limit: int, window_s: int, scope: str = "ip") -> dict[str, dict[str, Pool]]:
    return {"ex": {"p": Pool(scope, limit, window_s)}}  # type: ignore[arg-type]


def fixed_windows(arrivals: Sequence[tuple[float, int]], window_s: float, phase: float) -> dict[int, int]:
    """Weight per fixed window [phase + k*window, phase + (k+1)*window), as an exchange counts."""
    counts: Counter[int] = Counter()
    for at, weight in arrivals:
        counts[math.floor((at - phase) / window_s)] += weight
    return dict(counts)


def heaviest_window(arrivals: Sequence[tuple[float, int]], window_s: float) -> int:
    """The most weight any window of this length holds, whatever its phase (a window that holds
    the most can start at an arrival)."""
    ordered = sorted(arrivals)
    return max(
        (
            sum(w for t, w in ordered[i:] if t < start + window_s - ROUNDING)
            for i, (start, _) in enumerate(ordered)
        ),
        default=0,
    )


def test_public_api_is_pinned() -> None:
    assert set(budget_module.__all__) == {
        "DEFAULT_PAUSE_S", "ENDPOINTS", "PUBLISHED", "Budget", "BudgetExhausted", "BudgetedTransport", "Call",
        "Cost", "Lease", "Pool", "check_calls", "cost_of", "match_call",
    }  # fmt: skip


# -- memory: the pace ------------------------------------------------------------------------------------


async def test_a_fresh_pool_lets_one_request_through_then_paces(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(600, 5), utilisation=0.95)
    first = await budget.acquire("ex", {"p": 1}, max_wait_s=0)
    assert (first.waited_s, first.slot) == (0, T0)
    with pytest.raises(BudgetExhausted, match=r"next room in 0\.0 s"):  # no burst, even at start-up
        await budget.acquire("ex", {"p": 1}, max_wait_s=0)
    leases = [await budget.acquire("ex", {"p": 1}) for _ in range(20)]
    gaps = [b.slot - a.slot for a, b in zip([first, *leases], leases, strict=False)]
    assert gaps == pytest.approx([5 / 570] * 20, abs=ROUNDING)  # 600 x 0.95 per 5 s, one every 8.8 ms
    assert budget.pace("ex", "p") == pytest.approx(114)


async def test_no_fixed_window_holds_more_than_the_limit_whatever_its_phase(clock: FakeClock) -> None:
    # 8 per second at full utilisation: one every 1/8 s, exact in binary, so windows are exact too
    budget = memory_budget(clock, one_pool(8, 1))
    leases = await asyncio.gather(*(budget.acquire("ex", {"p": 1}) for _ in range(100)))
    arrivals = [(lease.slot, 1) for lease in leases]
    assert sorted(t for t, _ in arrivals) == [T0 + k / 8 for k in range(100)]
    for phase in (k / 32 for k in range(32)):
        windows = fixed_windows(arrivals, 1, phase)
        assert max(windows.values()) <= 8
        complete = [count for k, count in windows.items() if min(windows) < k < max(windows)]
        assert complete and set(complete) == {8}  # and every complete window gets the whole limit


async def test_weighted_requests_never_overfill_a_window(clock: FakeClock) -> None:
    # 20 per 2 s at 0.8: 16 units per 2 s, one every 1/8 s; a charge may weigh up to 21 - 16 = 5
    budget = memory_budget(clock, one_pool(20, 2), utilisation=0.8, egress_ips=IPS)
    rng = random.Random(7)
    weights = [rng.randint(1, 5) for _ in range(300)]
    leases = await asyncio.gather(*(budget.acquire("ex", {"p": w}) for w in weights))
    for ip in IPS:
        arrivals = [
            (lease.slot, w) for lease, w in zip(leases, weights, strict=True) if lease.egress_ip == ip
        ]
        assert heaviest_window(arrivals, 2) <= 20
        span = max(t for t, _ in arrivals) - T0
        assert sum(w for _, w in arrivals) >= 8 * span  # and the pace is kept: 16 per 2 s
    with pytest.raises(ValueError, match="exceeds what ex pool 'p' can take at once"):
        await budget.acquire("ex", {"p": 6})


async def test_a_weighted_request_holds_the_pace_for_its_weight(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(100, 10), utilisation=0.9)  # 90 per 10 s: 1/9 s each
    first = await budget.acquire("ex", {"p": 3})
    second = await budget.acquire("ex", {"p": 1})
    third = await budget.acquire("ex", {"p": 1})
    assert second.slot - first.slot == pytest.approx(3 / 9)
    assert third.slot - second.slot == pytest.approx(1 / 9)


async def test_the_slack_stretches_the_pace(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(1, 5), utilisation=0.95, latency_slack_s=1)
    first = await budget.acquire("ex", {"p": 1})
    second = await budget.acquire("ex", {"p": 1})
    assert second.slot - first.slot == pytest.approx(6 / 0.95)  # (5 s + 1 s) / 0.95 units
    half = memory_budget(clock, one_pool(600, 5), utilisation=0.95, latency_slack_s=0.25)
    assert half.pace("ex", "p") == pytest.approx(570 / 5.25)  # a fraction of a second is allowed


async def test_bybit_at_the_default_settings_uses_95_percent_and_never_more_than_600(
    clock: FakeClock,
) -> None:
    """Issue 7's phase (b) on virtual time: two addresses, every check a fresh account, 200 in flight."""
    config = MonitorConfig()
    budget = Budget.memory(
        egress_ips=IPS,
        utilisation=config.utilisation,
        latency_slack_s=config.budget_slack_s,
        clock=clock.time,
        sleep=clock.sleep,
    )
    cost = cost_of("bybit", check_calls("bybit"))
    assert cost["ip"] == 2
    gate = asyncio.Semaphore(200)

    async def check(n: int) -> Lease:
        async with gate:
            return await budget.acquire("bybit", cost, account=str(n))

    leases = await asyncio.gather(*(check(n) for n in range(3000)))
    rng = random.Random(3)
    for ip in IPS:
        slots = [(lease.slot, 2) for lease in leases if lease.egress_ip == ip]
        assert heaviest_window(slots, 5) <= 600
        # requests reach the exchange up to 0.2 s apart from their slots: still within the limit
        assert heaviest_window([(t + rng.uniform(0, 0.2), w) for t, w in slots], 5) <= 600
        for phase in (0, 1.3, 2.5, 4.99):
            windows = fixed_windows(slots, 5, phase)
            complete = [count for k, count in windows.items() if min(windows) < k < max(windows)]
            assert len(complete) >= 3
            assert min(complete) >= 0.93 * 600  # every window, not just on average
            assert max(complete) <= 600
        assert sum(w for _, w in slots) / (max(t for t, _ in slots) + 10 / 570 - T0) == pytest.approx(
            114, rel=1e-5
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(1, 60),
    window_s=st.integers(1, 10),
    utilisation=st.floats(0.5, 1.0),
    slack=st.sampled_from([0.0, 0.1, 0.5, 2.0]),
    requests=st.lists(
        st.tuples(st.floats(0, 3), st.integers(1, 60), st.floats(0, 1)), min_size=1, max_size=80
    ),
)
def test_any_asks_arriving_within_the_slack_never_exceed_the_limit(
    limit: int,
    window_s: int,
    utilisation: float,
    slack: float,
    requests: list[tuple[float, int, float]],
) -> None:
    """Whatever the pool, the moments of asking and the weights (up to what the pool takes at
    once), requests arriving at the exchange up to `slack` after their slots never put more
    than the limit in any window, from the first request on."""

    async def run() -> list[tuple[float, int]]:
        clock = FakeClock()
        budget = memory_budget(
            clock, one_pool(limit, window_s), utilisation=utilisation, latency_slack_s=slack
        )
        heaviest = math.floor(limit + 1 - min(limit * utilisation, limit))
        arrivals = []
        for gap, weight, delay in requests:
            clock.now += gap * window_s / limit  # asks now and then, or all the time
            w = 1 + (weight - 1) % heaviest
            lease = await budget.acquire("ex", {"p": w})
            arrivals.append((lease.slot + delay * slack, w))
        return arrivals

    assert heaviest_window(asyncio.run(run()), window_s) <= limit


async def test_a_request_woken_too_late_for_its_slot_never_crowds_the_next_ones(clock: FakeClock) -> None:
    """A stalled process must not send the requests of the slots it slept through together with
    those of the next slots: they would crowd a window. A little late (within half the delay the
    margin absorbs) keeps the slot; later, a request still last in its queue moves its slot to
    now; one with others queued behind it lets its slot go and asks again."""
    stalls: list[float] = []

    async def stalling_sleep(seconds: float) -> None:
        await clock.sleep(seconds + (stalls.pop(0) if stalls else 0.0))

    budget = Budget.memory(pools=one_pool(600, 5), clock=clock.time, sleep=stalling_sleep)  # 0.95
    interval = 5 / 570  # and (601 - 1) x interval - 5 s = 0.26 s of delay absorbed: 0.13 s to wake
    first = await budget.acquire("ex", {"p": 1})
    stalls.append(0.1)
    on_time = await budget.acquire("ex", {"p": 1})
    assert on_time.slot == pytest.approx(first.slot + interval, abs=ROUNDING)

    fresh = await budget.acquire("ex", {"p": 1})  # the clock moved on: at once
    stalls.append(1.0)
    last = await budget.acquire("ex", {"p": 1})  # woke 1 s late, no one behind it: its slot moves
    assert last.slot == pytest.approx(fresh.slot + interval + 1, abs=ROUNDING) == clock.time()

    async def sent() -> tuple[Lease, float]:
        lease = await budget.acquire("ex", {"p": 1})
        return lease, clock.time()

    await budget.acquire("ex", {"p": 1})
    stalls.append(1.0)  # the first of two queued requests stalls, and with it the process
    (stalled, stalled_at), (behind, behind_at) = await asyncio.gather(sent(), sent())
    assert stalled.slot == stalled_at and behind.slot == behind_at  # each went in its own slot
    assert behind_at - stalled_at == pytest.approx(interval, abs=ROUNDING)  # one pace apart, not together


async def test_several_egress_ips_share_the_load(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(4, 60), egress_ips=IPS)  # one every 15 s per address
    leases = await asyncio.gather(*(budget.acquire("ex", {"p": 1}) for _ in range(8)))
    assert Counter(lease.egress_ip for lease in leases) == {IPS[0]: 4, IPS[1]: 4}
    assert [(lease.egress_ip, lease.slot - T0) for lease in leases[:4]] == [
        (IPS[0], 0), (IPS[1], 0), (IPS[0], 15), (IPS[1], 15)
    ]  # fmt: skip
    for ip in IPS:
        slots = sorted(lease.slot - T0 for lease in leases if lease.egress_ip == ip)
        assert slots == [0, 15, 30, 45]


async def test_account_pools_follow_the_account_across_ips(clock: FakeClock) -> None:
    pools = {"ex": {"ip": Pool("ip", 100, 60), "uid": Pool("account", 2, 60)}}
    budget = memory_budget(clock, pools, egress_ips=IPS)
    await budget.acquire("ex", {"ip": 1, "uid": 1}, account="A", max_wait_s=0)
    with pytest.raises(BudgetExhausted):  # another IP does not help: the limit is the account's
        await budget.acquire("ex", {"ip": 1, "uid": 1}, account="A", max_wait_s=0)
    await budget.acquire("ex", {"ip": 1, "uid": 1}, account="B", max_wait_s=0)
    unknown = await budget.acquire("ex", {"ip": 1, "uid": 1}, max_wait_s=1)  # account unknown: IP pools only
    assert unknown.slot - T0 < 1
    lease = await budget.acquire("ex", {"ip": 1, "uid": 1}, account="A")
    assert lease.slot - T0 == 30  # 2 per 60 s


async def test_penalize_stops_an_ip_until_the_time_passes(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(100, 1), egress_ips=IPS)
    until = await budget.penalize("ex", IPS[0], 30, banned=False)
    assert until == clock.time() + 30
    assert await budget.paused_until("ex", IPS[0]) == until
    leases = [await budget.acquire("ex", {"p": 1}, max_wait_s=1) for _ in range(4)]
    assert {lease.egress_ip for lease in leases} == {IPS[1]}

    await budget.penalize("ex", IPS[1], 45, banned=True)
    with pytest.raises(BudgetExhausted, match=r"next room in 30\.0 s"):
        await budget.acquire("ex", {"p": 1}, max_wait_s=10)
    lease = await budget.acquire("ex", {"p": 1})
    assert lease.egress_ip == IPS[0] and clock.time() >= until and lease.slot == pytest.approx(until)
    assert await budget.paused_until("ex", IPS[0]) is None


async def test_a_pause_recorded_while_a_request_waits_holds_it_back(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(1, 10))
    await budget.acquire("ex", {"p": 1})
    waiting = asyncio.create_task(budget.acquire("ex", {"p": 1}))  # its slot: in 10 s
    await asyncio.sleep(0)
    until = await budget.penalize("ex", None, 60, banned=False)
    lease = await waiting
    assert lease.slot == pytest.approx(until) and clock.time() >= until


async def test_a_short_429_never_shortens_a_ban(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(100, 60))
    ban = await budget.penalize("ex", None, 120, banned=True)
    assert await budget.penalize("ex", None, 5, banned=False) == ban


async def test_penalize_without_retry_after_uses_the_exchange_pause(clock: FakeClock) -> None:
    budget = memory_budget(clock, PUBLISHED)
    assert await budget.penalize("bybit", "127.0.0.2", None, banned=True) == clock.time() + 600
    assert await budget.penalize("binance", "127.0.0.2", None, banned=False) == clock.time() + 60


async def test_observe_pauses_the_account_for_per_account_limits(clock: FakeClock) -> None:
    budget = memory_budget(clock, PUBLISHED, egress_ips=IPS)
    per_uid = ProbeOutcome(Probe.INTROSPECTION, Cause.RATE_LIMITED, 429, "50011", egress_ip=IPS[0])
    await budget.observe("okx", per_uid, account="uid-1")
    assert await budget.paused_until("okx", None, account="uid-1") is not None
    assert await budget.paused_until("okx", IPS[0]) is None
    with pytest.raises(BudgetExhausted):  # the account waits on every address
        await budget.acquire("okx", {"account_config": 1}, account="uid-1", max_wait_s=0.5)
    await budget.acquire("okx", {"account_config": 1}, account="uid-2", max_wait_s=0)

    ban = ProbeOutcome(Probe.ACCOUNT, Cause.IP_BANNED, 418, "-1003", retry_after_s=77, egress_ip=IPS[1])
    assert await budget.observe("binance", ban, account="uid-1") == clock.time() + 77
    assert await budget.paused_until("binance", IPS[1]) == clock.time() + 77
    fine = ProbeOutcome(Probe.ACCOUNT, Cause.OK, 200, egress_ip=IPS[0])
    assert await budget.observe("binance", fine) is None


async def test_costs_are_checked(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(5, 10))
    with pytest.raises(ValueError, match="no rate pool 'q'"):
        await budget.acquire("ex", {"q": 1})
    with pytest.raises(ValueError, match="exceeds"):
        await budget.acquire("ex", {"p": 6})
    with pytest.raises(ValueError, match="whole number"):
        await budget.acquire("ex", {"p": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="no rate budget configured"):
        await budget.acquire("nowhere", {"p": 1})
    with pytest.raises(ValueError, match="latency_slack_s"):
        memory_budget(clock, one_pool(5, 10), latency_slack_s=-1)


@pytest.mark.parametrize("utilisation", [0.95, 1.0])
async def test_every_charge_the_tables_make_fits_its_pools(clock: FakeClock, utilisation: float) -> None:
    """The pace leaves room for the heaviest charge, even at full utilisation: a check's first
    round (sent at once) may land at the very end of a window."""
    budget = memory_budget(clock, PUBLISHED, utilisation=utilisation)
    for exchange, table in ENDPOINTS.items():
        costs = [*table.values()]
        costs += [
            cost_of(exchange, check_calls(exchange, needs_futures=f, deposit=d))
            for f in (False, True)
            for d in (False, True)
        ]
        for cost in costs:
            await budget.acquire(exchange, cost, account="A")
            for name, weight in cost.items():
                pool = PUBLISHED[exchange][name]
                assert budget.pace(exchange, name) * pool.window_s + weight <= pool.limit + 1 + ROUNDING
    assert budget.pace("bybit", "ip") == pytest.approx(114 if utilisation < 1 else 597 / 5)


# -- the tables: what our adapters send, priced as the exchanges (and simulators) count ------------------------


def test_every_request_an_adapter_can_send_is_priced() -> None:
    sent = {
        "binance": {(method, path) for _, method, _, path in binance.CALLS.values()},
        "okx": {("GET", path) for path in okx.PATHS.values()},
        "bybit": {("POST" if p is Probe.TRADE else "GET", path) for p, path in bybit.PATHS.items()},
        "kucoin": {(method, path) for _, method, path in kucoin.ROUTES.values()},
    }
    for exchange, calls in sent.items():
        assert calls <= set(ENDPOINTS[exchange]), (exchange, calls - set(ENDPOINTS[exchange]))
        for cost in ENDPOINTS[exchange].values():
            assert set(cost) <= set(PUBLISHED[exchange])


def test_weights_and_limits_agree_with_the_simulators() -> None:
    for route in binance_sim.ROUTES:
        cost = ENDPOINTS["binance"].get((route.method, route.path))
        if cost is not None:
            assert cost[route.family] == route.weight, route.path
    limits = binance_sim.BinanceSim.default_limits
    for family in ("api", "sapi", "fapi"):
        assert PUBLISHED["binance"][family] == Pool("ip", int(limits[f"{family}_ip_weight_per_minute"]), 60)
    for kroute in kucoin_sim.ROUTES:
        kcost = ENDPOINTS["kucoin"].get((kroute.method, kroute.path))
        if kcost is not None:
            assert kcost == {kroute.pool.lower(): kroute.weight}, kroute.path
    for oroute in okx_sim.ROUTES:
        if (oroute.method, oroute.path) in ENDPOINTS["okx"]:
            pool = PUBLISHED["okx"][oroute.limit]
            sim = okx_sim.OkxSim.default_limits
            assert (pool.limit, pool.window_s) == (
                sim[f"{oroute.limit}_requests"],
                sim[f"{oroute.limit}_window_s"],
            )
    assert PUBLISHED["bybit"]["ip"] == Pool("ip", 600, 5)
    assert PUBLISHED["bybit"]["query_api"].limit == BybitSim.default_limits["uid_query_api"]


def test_check_calls_follow_the_profile() -> None:
    assert check_calls("okx") == (("GET", "/api/v5/account/config"), ("GET", "/api/v5/account/balance"))
    assert len(check_calls("binance", needs_futures=True, deposit=True)) == 5
    assert cost_of("binance", check_calls("binance")) == {"sapi": 1, "sapi_uid": 1, "api": 21}
    assert cost_of("kucoin", check_calls("kucoin", deposit=True)) == {"management": 30, "spot": 1}
    with pytest.raises(ValueError, match="no published rate limits"):
        check_calls("nowhere")


# -- charging each request -----------------------------------------------------------------------------------


async def test_budgeted_transport_charges_what_was_not_prepaid(clock: FakeClock) -> None:
    seen: list[str] = []

    def answer(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        seen.append(url)
        return RawResponse(200)

    budget = memory_budget(clock, PUBLISHED, egress_ips=IPS)
    inner = MockTransport(answer, egress_ips=IPS)
    prepaid = check_calls("okx")
    transport = BudgetedTransport(inner, budget, "okx", account="uid-7", prepaid=prepaid, max_wait_s=0)
    base = "http://127.0.0.1:1/prefix"
    for _, path in prepaid:  # prepaid: sent without touching the budget
        await transport.request("GET", base + path, egress_ip=IPS[0])
    status = base + "/api/v5/system/status"
    await transport.request("GET", status, egress_ip=IPS[0])  # 1 per 5 s per IP: now used up
    with pytest.raises(TransportConnectionError, match=r"not sent: okx: no rate budget from 127\.0\.0\.2"):
        await transport.request("GET", status, egress_ip=IPS[0])
    await transport.request("GET", status, egress_ip=IPS[1])  # another address has its own
    assert seen == [base + p for _, p in prepaid] + [status, status]
    assert transport.egress_ips == IPS


# -- Redis: two workers, one pace -----------------------------------------------------------------------------


class Naps:
    """A sleep that only records: the workers below take their slots without waiting them out."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def two_workers() -> AsyncIterator[tuple[Budget, Budget]]:
    require_service("127.0.0.1", 6379, "Redis")
    prefix = f"keysentry-test-{uuid.uuid4().hex}"
    pools = {"ex": {"p": Pool("ip", 8, 1), "slow": Pool("ip", 2, 60), "uid": Pool("account", 4, 1)}}
    workers = [
        Budget.redis(REDIS_URL, key_prefix=prefix, egress_ips=IPS, pools=pools, utilisation=1.0, sleep=Naps())
        for _ in range(2)
    ]
    yield workers[0], workers[1]
    for worker in workers:
        await worker.close()
    await drop_keys(prefix)


async def drop_keys(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    assert not [k async for k in client.scan_iter(match=f"{prefix}*")]
    await client.aclose()


@pytest.mark.services
async def test_two_workers_share_one_pace_under_concurrency(two_workers: tuple[Budget, Budget]) -> None:
    a, b = two_workers

    async def attempt(worker: Budget) -> str | None:
        try:
            return (await worker.acquire("ex", {"slow": 1}, max_wait_s=0)).egress_ip
        except BudgetExhausted:
            return None

    results = await asyncio.gather(*(attempt(w) for _ in range(15) for w in (a, b)))
    granted = [ip for ip in results if ip is not None]
    assert Counter(granted) == {IPS[0]: 1, IPS[1]: 1}  # one now per address, whichever worker asked


@pytest.mark.services
async def test_two_workers_interleave_on_one_pace(two_workers: tuple[Budget, Budget]) -> None:
    a, b = two_workers
    leases = await asyncio.gather(*(w.acquire("ex", {"p": 1}) for _ in range(20) for w in (a, b)))
    for ip in IPS:  # each address keeps its pace of 8 per second, whichever worker asked
        slots = sorted(lease.slot for lease in leases if lease.egress_ip == ip)
        assert len(slots) == 20
        assert all(later - earlier >= 0.125 - ROUNDING for earlier, later in itertools.pairwise(slots))
        assert heaviest_window([(t, 1) for t in slots], 1) <= 8
    leases = await asyncio.gather(
        *(w.acquire("ex", {"p": 1, "uid": 1}, account="A") for _ in range(20) for w in (a, b))
    )
    # 4 per second for the account, on whichever address: the account sets the pace
    slots = sorted(lease.slot for lease in leases)
    assert all(later - earlier >= 0.25 - ROUNDING for earlier, later in itertools.pairwise(slots))
    assert heaviest_window([(t, 1) for t in slots], 1) <= 4
    naps = [t for w in (a, b) for t in w._sleep.taken]  # type: ignore[attr-defined]
    assert naps and max(naps) > 1  # slots were handed out ahead, in order, not in a burst


@pytest.mark.services
async def test_a_stalled_worker_never_crowds_the_slots_after_its_own() -> None:
    require_service("127.0.0.1", 6379, "Redis")
    prefix = f"keysentry-test-{uuid.uuid4().hex}"

    async def stalling(seconds: float) -> None:
        await asyncio.sleep(seconds + 0.3)  # a process that got no CPU for 0.3 s

    options: dict[str, Any] = {"key_prefix": prefix, "pools": one_pool(2, 1), "utilisation": 1.0}
    quick = Budget.redis(REDIS_URL, sleep=Naps(), **options)
    slow = Budget.redis(REDIS_URL, sleep=stalling, **options)
    try:
        first = await quick.acquire("ex", {"p": 1})
        alone = await slow.acquire("ex", {"p": 1})  # late, but last in the queue: its slot moves
        assert alone.slot >= first.slot + 0.5 + 0.25  # one every 0.5 s
        waiting = asyncio.create_task(slow.acquire("ex", {"p": 1}))
        await asyncio.sleep(0.05)  # it holds the next slot and sleeps through it
        behind = await quick.acquire("ex", {"p": 1})  # the slot after it, taken by the other worker
        stalled = await waiting  # late, with another request behind it: it asked again
        assert behind.slot - alone.slot == pytest.approx(1, abs=ROUNDING)
        assert stalled.slot >= behind.slot + 0.5 - ROUNDING
    finally:
        for budget in (quick, slow):
            await budget.close()
        await drop_keys(prefix)


@pytest.mark.services
async def test_paces_in_redis_expire_once_caught_up(two_workers: tuple[Budget, Budget]) -> None:
    a, _ = two_workers
    await a.acquire("ex", {"slow": 1}, account="A")
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{a._prefix}:pace:*")]  # type: ignore[attr-defined]
        assert len(keys) == 1
        ttl_ms = await client.pttl(keys[0])
        assert 30_000 < ttl_ms <= 31_000  # one interval of 30 s, plus a second
    finally:
        await client.aclose()


@pytest.mark.services
async def test_a_pause_recorded_by_one_worker_stops_the_other(two_workers: tuple[Budget, Budget]) -> None:
    a, b = two_workers
    until = await a.penalize("ex", IPS[0], 120, banned=True)
    assert await b.paused_until("ex", IPS[0]) == pytest.approx(until)
    leases = [await b.acquire("ex", {"p": 1}, max_wait_s=5) for _ in range(3)]
    assert {lease.egress_ip for lease in leases} == {IPS[1]}
    await b.penalize("ex", IPS[0], 5, banned=False)  # shorter: the ban stands
    assert await a.paused_until("ex", IPS[0]) == pytest.approx(until)
    with pytest.raises(BudgetExhausted, match=r"127\.0\.0\.2 within 60 s \(next room in 1[12]\d\.\d s\)"):
        await b.acquire_at("ex", IPS[0], {"p": 1}, max_wait_s=60)


@pytest.mark.services
async def test_a_worker_waits_for_room_the_other_used(two_workers: tuple[Budget, Budget]) -> None:
    a, b = two_workers
    first = await a.acquire_at("ex", IPS[0], {"slow": 1}, max_wait_s=0)
    with pytest.raises(BudgetExhausted):
        await b.acquire_at("ex", IPS[0], {"slow": 1}, max_wait_s=0)
    lease = await b.acquire_at("ex", IPS[0], {"slow": 1}, max_wait_s=60)
    assert lease.egress_ip == IPS[0] and lease.slot == pytest.approx(first.slot + 30, abs=ROUNDING)
    assert b._sleep.taken[-1] > 29  # type: ignore[attr-defined]


# -- against the Bybit simulator: a sweep stays under its limits --------------------------------------------------


async def sweep(
    accounts: int, checks: int, budget: Budget | None, limits: Mapping[str, float] = {}
) -> list[Cause]:
    """`checks` checks at once of the keys of `accounts` accounts, against the simulator."""
    secret = canary.bybit_secret()
    keys = [f"BYBITKEY{n:010d}" for n in range(accounts)]
    spec = [
        {
            "id": str(30_000_000 + n),
            "keys": [{"api_key": k, "secret": secret, "permissions": ["Spot.SpotTrade"]}],
        }
        for n, k in enumerate(keys)
    ]
    scenario = {"exchanges": {"bybit": {"accounts": spec, "limits": dict(limits)}}}
    async with SimCluster(parse_scenario(scenario)) as cluster, Transport() as shared:

        async def one(n: int) -> Cause:
            account, creds = (
                str(30_000_000 + n % accounts),
                ApiCredentials(keys[n % accounts], Secret(secret)),
            )
            transport: Any = shared
            if budget is not None:
                calls = check_calls("bybit")
                await budget.acquire("bybit", cost_of("bybit", calls), account=account)
                transport = BudgetedTransport(shared, budget, "bybit", account=account, prepaid=calls)
            adapter = BybitAdapter(transport, base_url=cluster.url("bybit"))
            return (await adapter.check(CheckRequest(creds))).cause

        return list(await asyncio.gather(*(one(n) for n in range(checks))))


async def test_without_a_budget_the_simulator_rate_limits_a_burst() -> None:
    causes = await sweep(1, 30, None)  # query-api allows 10 per second per account
    assert Cause.RATE_LIMITED in causes


async def test_a_budgeted_sweep_gets_no_rate_limit_from_the_simulator() -> None:
    causes = await sweep(1, 12, Budget.memory())
    assert causes == [Cause.OK] * 12


async def test_a_paced_sweep_crosses_the_simulators_fixed_windows_without_a_ban() -> None:
    # 60 requests per 1 s per address, counted in the simulator's clock-aligned windows; at 0.7
    # the budget sends 42 per second (room for (61 - 4) / 42 - 1 = 0.36 s of delay spread)
    pools = {**PUBLISHED, "bybit": {**PUBLISHED["bybit"], "ip": Pool("ip", 60, 1)}}
    budget = Budget.memory(pools=pools, utilisation=0.7)
    causes = await sweep(60, 60, budget, {"ip_requests": 60, "ip_window_s": 1})  # 120 requests: 2.9 s
    assert causes == [Cause.OK] * 60


# -- settings choose the mode ----------------------------------------------------------------------------------


@pytest.mark.services
async def test_settings_choose_local_or_shared_budgets() -> None:
    require_service("127.0.0.1", 6379, "Redis")
    pools = one_pool(1, 60)
    local = [Budget.from_settings(Settings(egress_ips="127.0.0.2"), pools=pools) for _ in range(2)]
    for budget in local:  # memory: each process has its own
        assert (await budget.acquire("ex", {"p": 1}, max_wait_s=0)).egress_ip == "127.0.0.2"
    prefix = f"keysentry-test-{uuid.uuid4().hex}"
    shared = [
        Budget.from_settings(Settings(redis_url=REDIS_URL), pools=pools, key_prefix=prefix) for _ in range(2)
    ]
    try:
        assert (await shared[0].acquire("ex", {"p": 1}, max_wait_s=0)).egress_ip is None
        with pytest.raises(BudgetExhausted):
            await shared[1].acquire("ex", {"p": 1}, max_wait_s=0)
    finally:
        for budget in [*local, *shared]:
            await budget.close()
        await drop_keys(prefix)
