"""Rate budgets: in memory on a fake clock, shared through the real Redis, and against a simulator."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import limits.aio.storage.memory as limits_memory
import pytest
import redis.asyncio
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
    Pool,
    check_calls,
    cost_of,
)
from keysentry.settings import Settings
from keysentry.sim import binance as binance_sim
from keysentry.sim import kucoin as kucoin_sim
from keysentry.sim import okx as okx_sim
from keysentry.sim.bybit import BybitSim
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster

REDIS_URL = "redis://127.0.0.1:6379/0"
IPS = ("127.0.0.2", "127.0.0.3")


class FakeClock:
    """Virtual time for the budget and for `limits`' memory storage: sleeping moves it forward."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)  # let the other waiters run, as a real sleep would
        self.now = max(self.now, target)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(limits_memory, "time", fake)  # limits reads time.time() through its module
    return fake


def memory_budget(clock: FakeClock, pools: Mapping[str, Mapping[str, Pool]], **options: Any) -> Budget:
    options = {"utilisation": 1.0, "latency_slack_s": 0, **options}
    return Budget.memory(pools=pools, clock=clock.time, sleep=clock.sleep, **options)


def one_pool(limit: int, window_s: int, scope: str = "ip") -> dict[str, dict[str, Pool]]:
    return {"ex": {"p": Pool(scope, limit, window_s)}}  # type: ignore[arg-type]


def never_more_than(limit: int, window_s: float, times: list[float]) -> bool:
    ordered = sorted(times)
    return all(b - a >= window_s for a, b in zip(ordered, ordered[limit:], strict=False))


def test_public_api_is_pinned() -> None:
    assert set(budget_module.__all__) == {
        "DEFAULT_PAUSE_S", "ENDPOINTS", "PUBLISHED", "Budget", "BudgetExhausted", "BudgetedTransport", "Call",
        "Cost", "Lease", "Pool", "check_calls", "cost_of", "match_call",
    }  # fmt: skip


# -- memory: the moving window ---------------------------------------------------------------------------


async def test_concurrent_acquirers_never_exceed_the_limit_over_any_window(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(5, 10))
    granted: list[float] = []

    async def worker() -> None:
        await budget.acquire("ex", {"p": 1})
        granted.append(clock.time())

    await asyncio.gather(*(worker() for _ in range(32)))
    assert len(granted) == 32
    assert never_more_than(5, 10, granted)
    # and the budget was used: 32 grants in 7 batches of 5, one window apart
    assert max(granted) - min(granted) < 6 * 10 + 1
    assert clock.slept  # some had to wait


async def test_weights_count_against_the_limit(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(10, 60))
    for _ in range(3):
        assert (await budget.acquire("ex", {"p": 3}, max_wait_s=0)).waited_s == 0
    with pytest.raises(BudgetExhausted, match="no rate budget"):
        await budget.acquire("ex", {"p": 3}, max_wait_s=0)
    await budget.acquire("ex", {"p": 1}, max_wait_s=0)  # the last unit still fits
    lease = await budget.acquire("ex", {"p": 3})
    assert lease.waited_s >= 60


async def test_utilisation_keeps_a_margin_under_the_published_limit(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(100, 60), utilisation=0.95)
    for _ in range(95):
        await budget.acquire("ex", {"p": 1}, max_wait_s=0)
    with pytest.raises(BudgetExhausted):
        await budget.acquire("ex", {"p": 1}, max_wait_s=0)


async def test_a_one_request_pool_stretches_its_window_and_adds_the_slack(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(1, 5), utilisation=0.95, latency_slack_s=1)
    first = clock.time()
    await budget.acquire("ex", {"p": 1})
    await budget.acquire("ex", {"p": 1})
    assert clock.time() - first >= 7  # ceil(5 / 0.95) = 6 s, plus 1 s of slack


async def test_several_egress_ips_share_the_load(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(4, 60), egress_ips=IPS)
    leases = [await budget.acquire("ex", {"p": 1}, max_wait_s=0) for _ in range(8)]
    assert Counter(lease.egress_ip for lease in leases) == {IPS[0]: 4, IPS[1]: 4}
    assert [lease.egress_ip for lease in leases[:4]] == [IPS[0], IPS[1], IPS[0], IPS[1]]
    with pytest.raises(BudgetExhausted):
        await budget.acquire("ex", {"p": 1}, max_wait_s=0)


async def test_account_pools_follow_the_account_across_ips(clock: FakeClock) -> None:
    pools = {"ex": {"ip": Pool("ip", 100, 60), "uid": Pool("account", 2, 60)}}
    budget = memory_budget(clock, pools, egress_ips=IPS)
    for _ in range(2):
        await budget.acquire("ex", {"ip": 1, "uid": 1}, account="A", max_wait_s=0)
    with pytest.raises(BudgetExhausted):  # another IP does not help: the limit is the account's
        await budget.acquire("ex", {"ip": 1, "uid": 1}, account="A", max_wait_s=0)
    await budget.acquire("ex", {"ip": 1, "uid": 1}, account="B", max_wait_s=0)
    await budget.acquire("ex", {"ip": 1, "uid": 1}, max_wait_s=0)  # account unknown yet: IP pools only


async def test_penalize_stops_an_ip_until_the_time_passes(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(100, 60), egress_ips=IPS)
    until = await budget.penalize("ex", IPS[0], 30, banned=False)
    assert until == clock.time() + 30
    assert await budget.paused_until("ex", IPS[0]) == until
    leases = [await budget.acquire("ex", {"p": 1}, max_wait_s=0) for _ in range(4)]
    assert {lease.egress_ip for lease in leases} == {IPS[1]}

    await budget.penalize("ex", IPS[1], 45, banned=True)
    with pytest.raises(BudgetExhausted, match="next room in 30"):
        await budget.acquire("ex", {"p": 1}, max_wait_s=10)
    lease = await budget.acquire("ex", {"p": 1})
    assert lease.egress_ip == IPS[0] and clock.time() >= until and lease.waited_s >= 30
    assert await budget.paused_until("ex", IPS[0]) is None


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

    ban = ProbeOutcome(Probe.ACCOUNT, Cause.IP_BANNED, 418, "-1003", retry_after_s=77, egress_ip=IPS[1])
    assert await budget.observe("binance", ban, account="uid-1") == clock.time() + 77
    assert await budget.paused_until("binance", IPS[1]) == clock.time() + 77
    fine = ProbeOutcome(Probe.ACCOUNT, Cause.OK, 200, egress_ip=IPS[0])
    assert await budget.observe("binance", fine) is None


async def test_costs_are_checked(clock: FakeClock) -> None:
    budget = memory_budget(clock, one_pool(5, 10))
    with pytest.raises(ValueError, match="no rate pool 'q'"):
        await budget.acquire("ex", {"q": 1})
    with pytest.raises(ValueError, match="exceeds the whole budget"):
        await budget.acquire("ex", {"p": 6})
    with pytest.raises(ValueError, match="no rate budget configured"):
        await budget.acquire("nowhere", {"p": 1})


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


# -- Redis: two workers, one budget -----------------------------------------------------------------------------


@pytest.fixture
async def two_workers() -> AsyncIterator[tuple[Budget, Budget]]:
    require_service("127.0.0.1", 6379, "Redis")
    prefix = f"keysentry-test-{uuid.uuid4().hex}"
    pools = {"ex": {"p": Pool("ip", 7, 60), "fast": Pool("ip", 2, 1)}}
    workers = [
        Budget.redis(
            REDIS_URL, key_prefix=prefix, egress_ips=IPS, pools=pools, utilisation=1.0, latency_slack_s=0
        )
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
async def test_two_workers_share_one_budget_under_concurrency(two_workers: tuple[Budget, Budget]) -> None:
    a, b = two_workers

    async def attempt(worker: Budget) -> str | None:
        try:
            return (await worker.acquire("ex", {"p": 1}, max_wait_s=0)).egress_ip
        except BudgetExhausted:
            return None

    results = await asyncio.gather(*(attempt(w) for _ in range(15) for w in (a, b)))
    granted = [ip for ip in results if ip is not None]
    assert len(granted) == 14  # 7 per IP in all, whichever worker asked
    assert Counter(granted) == {IPS[0]: 7, IPS[1]: 7}


@pytest.mark.services
async def test_a_pause_recorded_by_one_worker_stops_the_other(two_workers: tuple[Budget, Budget]) -> None:
    a, b = two_workers
    until = await a.penalize("ex", IPS[0], 120, banned=True)
    assert await b.paused_until("ex", IPS[0]) == pytest.approx(until)
    leases = [await b.acquire("ex", {"p": 1}, max_wait_s=0) for _ in range(3)]
    assert {lease.egress_ip for lease in leases} == {IPS[1]}
    await b.penalize("ex", IPS[0], 5, banned=False)  # shorter: the ban stands
    assert await a.paused_until("ex", IPS[0]) == pytest.approx(until)


@pytest.mark.services
async def test_a_worker_waits_for_room_the_other_used(two_workers: tuple[Budget, Budget]) -> None:
    a, b = two_workers
    await a.acquire_at("ex", IPS[0], {"fast": 2}, max_wait_s=0)
    with pytest.raises(BudgetExhausted):
        await b.acquire_at("ex", IPS[0], {"fast": 1}, max_wait_s=0)
    lease = await b.acquire_at("ex", IPS[0], {"fast": 1}, max_wait_s=5)
    assert lease.egress_ip == IPS[0] and lease.waited_s > 0


# -- against the Bybit simulator: a sweep stays under its limits --------------------------------------------------


async def sweep(checks: int, budget: Budget | None) -> list[Cause]:
    """Check one key `checks` times at once (as keys of one account would be) against the simulator."""
    api_key, secret = "BYBITKEY0000000042", canary.bybit_secret()
    key = {"api_key": api_key, "secret": secret, "permissions": ["Spot.SpotTrade"]}
    scenario = {"exchanges": {"bybit": {"accounts": [{"id": "30000042", "keys": [key]}]}}}
    creds = ApiCredentials(api_key, Secret(secret))
    async with SimCluster(parse_scenario(scenario)) as cluster, Transport() as shared:

        async def one() -> Cause:
            transport: Any = shared
            if budget is not None:
                calls = check_calls("bybit")
                await budget.acquire("bybit", cost_of("bybit", calls), account="30000042")
                transport = BudgetedTransport(shared, budget, "bybit", account="30000042", prepaid=calls)
            adapter = BybitAdapter(transport, base_url=cluster.url("bybit"))
            return (await adapter.check(CheckRequest(creds))).cause

        return list(await asyncio.gather(*(one() for _ in range(checks))))


async def test_without_a_budget_the_simulator_rate_limits_a_burst() -> None:
    causes = await sweep(30, None)  # query-api allows 10 per second per account
    assert Cause.RATE_LIMITED in causes


async def test_a_budgeted_sweep_gets_no_rate_limit_from_the_simulator() -> None:
    causes = await sweep(12, Budget.memory())
    assert causes == [Cause.OK] * 12


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
