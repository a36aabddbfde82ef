"""Rate budgets: never send an exchange more than its published limits allow, across all workers.

Exchanges count requests in pools: per egress IP (Binance's request weight, Bybit's 600 per 5 s,
public endpoints) or per account (OKX's per-endpoint limits, Bybit's per-UID ones, KuCoin's
resource pools). `PUBLISHED` lists the pools, `ENDPOINTS` what each request our adapters send
costs in them (reference sections 1.8, 2.8, 3.8, 4.8 and the simulators' route tables).

A `Budget` paces each pool evenly (a GCRA, "virtual scheduling"): a pool of limit L per window
W lets `units` = L x utilisation through per W + slack seconds, one unit every
T = (W + slack) / units seconds, never in bursts. Each pool keeps the time its next request may
go (its theoretical arrival time, TAT); a request of weight n waits until the TAT of every pool
it is charged to has come and moves each on by n x T. Requests are handed their slot in the
order they ask (a reservation, then a sleep until the slot): no polling, one storage round trip
per request. The state lives in memory in local mode and in Redis in distributed mode (one Lua
script reserves atomically on Redis's own clock, so every worker draws on the same pace; each
worker estimates its offset from Redis's clock from the answers).

Why even pacing: exchanges count fixed windows aligned to their own clock, on arrival. Take
the requests that arrive within one such window: their slots lie within W + J seconds (J: how
much later than another one request may reach the exchange after its slot: waking late,
event-loop delays, network jitter), and the slots of all but the last are at least their
weight x T apart, so the window holds fewer than units x (W + J) / (W + slack) + n units, n
being the last request's weight. With J <= slack that is fewer than units + n <= L + 1: `units`
is capped at L + 1 - h (h: the heaviest charge the tables make, `_HEAVIEST`) and no charge may
weigh more than L + 1 - units. So no window ever holds more than L, whatever its phase against
ours and from the first request on (a fresh pool lets one request through at once, then
paces). With the default slack of 0 the utilisation margin absorbs J: up to
(L + 1 - h) x T - W, about 0.24 s on Bybit's 600 per 5 s at 0.95 and 3 s on Binance's one-minute
windows (`_Pace.late_s` gives half of it to waking late). A request that wakes later than that
after its slot (a stalled process) does not go with the next slots' requests: where no one is
queued behind it its slot moves to now, as if it had just asked; otherwise it lets its slots go
and asks again. Over time the pace uses `utilisation` of the limit, evenly in every window.

`acquire` picks the egress IP whose pools are free soonest (round robin among equals; several
IPs share the load) and waits for the slot; it never hands out more than the pace, and gives up
(`BudgetExhausted`, nothing reserved) when the slot is further away than the allowed wait.
`penalize` records a 429's Retry-After or a ban in the same storage: no request goes to that
exchange from that IP (or for that account) until it ends, including one already waiting for its
slot.

How a check uses it: the scheduler acquires the cost of the check's first round
(`check_calls`, `cost_of`) and sends from the leased IP first (`CheckRequest.egress_ips`), through
a `BudgetedTransport` told those calls are prepaid; anything else the adapter sends (a second
round after a failure, a re-ask from another address) is charged as it goes out, and a request
that would wait too long is not sent at all (the adapter sees a connection error: a temporary
issue, never a verdict on the key). After the check, `observe` each outcome to obey 429/418.

Pauses are stored as unix times of the worker that recorded them, so workers keep their clocks in
sync (as exchanges demand anyway); workers sharing a Redis prefix should share the pool table,
utilisation and slack, or each paces by its own reading of them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from yarl import URL

from keysentry.exchanges.base import Cause, Probe, ProbeOutcome
from keysentry.exchanges.transport import HttpTransport, RawResponse, Timeouts, TransportConnectionError
from keysentry.settings import Settings

__all__ = [
    "DEFAULT_PAUSE_S",
    "ENDPOINTS",
    "PUBLISHED",
    "Budget",
    "BudgetExhausted",
    "BudgetedTransport",
    "Call",
    "Cost",
    "Lease",
    "Pool",
    "check_calls",
    "cost_of",
    "match_call",
]

Scope = Literal["ip", "account"]
Call = tuple[str, str]  # (method, path)
Cost = Mapping[str, int]  # pool name -> weight


@dataclass(frozen=True, slots=True)
class Pool:
    scope: Scope
    limit: int  # published weight allowed per window
    window_s: int


# fmt: off
PUBLISHED: Mapping[str, Mapping[str, Pool]] = {
    "binance": {  # weight per IP and family per minute; sapi also per account (UID)
        "api": Pool("ip", 6000, 60), "sapi": Pool("ip", 12000, 60), "fapi": Pool("ip", 2400, 60),
        "sapi_uid": Pool("account", 180000, 60),
    },
    "okx": {  # private: per account and endpoint; public: per IP and endpoint
        "account_config": Pool("account", 5, 2), "account_balance": Pool("account", 10, 2),
        "deposit_address": Pool("account", 6, 1),
        "public_time": Pool("ip", 10, 2), "system_status": Pool("ip", 1, 5),
    },
    "bybit": {  # every request per IP; private endpoints also per account
        "ip": Pool("ip", 600, 5),
        "query_api": Pool("account", 10, 1), "order_create_spot": Pool("account", 20, 1),
        "position_list": Pool("account", 50, 1), "deposit_address": Pool("account", 300, 60),
    },
    "kucoin": {  # VIP0 resource pools per 30 s: private per account, public per IP
        "management": Pool("account", 2000, 30), "spot": Pool("account", 4000, 30),
        "futures": Pool("account", 2000, 30), "public": Pool("ip", 2000, 30),
    },
}

ENDPOINTS: Mapping[str, Mapping[Call, Cost]] = {
    "binance": {
        ("GET", "/sapi/v1/account/apiRestrictions"): {"sapi": 1, "sapi_uid": 1},
        ("GET", "/api/v3/account"): {"api": 20},
        ("POST", "/api/v3/order/test"): {"api": 1},  # 20 with computeCommissionRates, never sent
        ("GET", "/fapi/v2/account"): {"fapi": 5},
        ("GET", "/sapi/v1/capital/deposit/address"): {"sapi": 10, "sapi_uid": 10},
        ("GET", "/api/v3/time"): {"api": 1},
        ("GET", "/sapi/v1/system/status"): {"sapi": 1},
        ("GET", "/sapi/v1/account/info"): {"sapi": 1, "sapi_uid": 1},
        ("GET", "/sapi/v1/account/status"): {"sapi": 1, "sapi_uid": 1},
    },
    "okx": {
        ("GET", "/api/v5/account/config"): {"account_config": 1},
        ("GET", "/api/v5/account/balance"): {"account_balance": 1},
        ("GET", "/api/v5/asset/deposit-address"): {"deposit_address": 1},
        ("GET", "/api/v5/public/time"): {"public_time": 1},
        ("GET", "/api/v5/system/status"): {"system_status": 1},
    },
    "bybit": {
        ("GET", "/v5/user/query-api"): {"ip": 1, "query_api": 1},
        ("POST", "/v5/order/create"): {"ip": 1, "order_create_spot": 1},
        ("GET", "/v5/position/list"): {"ip": 1, "position_list": 1},
        ("GET", "/v5/asset/deposit/query-address"): {"ip": 1, "deposit_address": 1},
        ("GET", "/v5/market/time"): {"ip": 1},
        ("GET", "/v5/system/status"): {"ip": 1},
    },
    "kucoin": {
        ("GET", "/api/v1/user/api-key"): {"management": 20},
        ("GET", "/api/v1/accounts"): {"management": 5},
        ("POST", "/api/v1/hf/orders/test"): {"spot": 1},
        ("GET", "/api/v1/account-overview"): {"futures": 5},
        ("GET", "/api/v3/deposit-addresses"): {"management": 5},
        ("GET", "/api/v1/timestamp"): {"public": 3},
        ("GET", "/api/v1/status"): {"public": 3},
    },
}

# The calls every check's first round sends, then those added by the profile (adapters' check()).
_FIRST_ROUND: Mapping[str, tuple[tuple[Call, ...], Call | None, Call | None]] = {
    "binance": (
        (("GET", "/sapi/v1/account/apiRestrictions"), ("POST", "/api/v3/order/test"), ("GET", "/api/v3/account")),
        ("GET", "/fapi/v2/account"), ("GET", "/sapi/v1/capital/deposit/address"),
    ),
    "okx": (
        (("GET", "/api/v5/account/config"), ("GET", "/api/v5/account/balance")),
        None, ("GET", "/api/v5/asset/deposit-address"),  # futures: read from account/config
    ),
    "bybit": (
        (("GET", "/v5/user/query-api"), ("POST", "/v5/order/create")),
        ("GET", "/v5/position/list"), ("GET", "/v5/asset/deposit/query-address"),
    ),
    "kucoin": (
        (("GET", "/api/v1/user/api-key"), ("GET", "/api/v1/accounts"), ("POST", "/api/v1/hf/orders/test")),
        ("GET", "/api/v1/account-overview"), ("GET", "/api/v3/deposit-addresses"),
    ),
}
# fmt: on

# Rejections counted per account rather than per IP: pausing the IP for them would stop every key.
_ACCOUNT_LIMIT_CODES: Mapping[str, frozenset[str]] = {
    "okx": frozenset({"50011", "50061"}),
    "bybit": frozenset({"10006"}),
    "kucoin": frozenset({"429000"}),
}
_PUBLIC_PROBES = frozenset({Probe.SERVER_TIME, Probe.SYSTEM_STATUS})
# Pause when an exchange says stop without saying how long: (rate limited, banned) seconds.
# Binance bans start at 2 minutes, Bybit's last at least 10; the rest is one window / a guess.
DEFAULT_PAUSE_S: Mapping[str, tuple[float, float]] = {
    "binance": (60.0, 120.0),
    "okx": (2.0, 60.0),
    "bybit": (5.0, 600.0),
    "kucoin": (30.0, 60.0),
}
_DEFAULT_IP = "default"  # the pools of the system's own source address, when none is configured


def check_calls(exchange: str, *, needs_futures: bool = False, deposit: bool = False) -> tuple[Call, ...]:
    """The requests the first round of one check sends (a second round only follows a failure)."""
    try:
        always, futures, deposit_call = _FIRST_ROUND[exchange]
    except KeyError:
        raise ValueError(f"no published rate limits for exchange {exchange!r}") from None
    extra = [c for c, wanted in ((futures, needs_futures), (deposit_call, deposit)) if wanted and c]
    return (*always, *extra)


def cost_of(exchange: str, calls: Iterable[Call]) -> dict[str, int]:
    """The summed weight of `calls` per pool. Calls the table does not know cost nothing."""
    table = ENDPOINTS.get(exchange, {})
    total: Counter[str] = Counter()
    for call in calls:
        total.update(table.get(call, {}))
    return dict(total)


def match_call(exchange: str, method: str, path: str) -> Call | None:
    """The table's call for a request path (a base URL may put a prefix in front of it)."""
    found = [c for c in ENDPOINTS.get(exchange, {}) if c[0] == method.upper() and path.endswith(c[1])]
    return max(found, key=lambda c: len(c[1])) if found else None


def _heaviest() -> dict[tuple[str, str], int]:
    """The heaviest charge each pool takes at once: one request, or a check's first round (sent together)."""
    heaviest: dict[tuple[str, str], int] = {}
    for exchange, table in ENDPOINTS.items():
        costs = list(table.values())
        if exchange in _FIRST_ROUND:
            costs += [
                cost_of(exchange, check_calls(exchange, needs_futures=futures, deposit=deposit))
                for futures in (False, True)
                for deposit in (False, True)
            ]
        for cost in costs:
            for pool, weight in cost.items():
                heaviest[(exchange, pool)] = max(weight, heaviest.get((exchange, pool), 1))
    return heaviest


_HEAVIEST: Mapping[tuple[str, str], int] = _heaviest()  # pools the tables do not charge: 1


# -- storage -------------------------------------------------------------------------------------------


class BudgetExhausted(Exception):
    """No room in the budget within the allowed wait; the message says where and for how long."""


@dataclass(frozen=True, slots=True)
class Lease:
    egress_ip: str | None  # None: the system's default source address (none configured)
    waited_s: float
    slot: float = 0.0  # when the pace let it go: unix seconds on the storage's clock (Redis's, shared)


@dataclass(frozen=True, slots=True)
class _Pace:
    interval_s: float  # seconds of pace one unit of weight takes
    heaviest: int  # the most weight one charge may carry
    late_s: float  # how late after its slot a request may still go (module docstring)


# The storage's clock may drift from ours by this much per reservation before an answer shows it.
_OFFSET_DRIFT_S = 1e-4
# Half of the delay a pool's margin absorbs goes to waking up late, the rest to the way there.
_MIN_LATE_S = 0.005  # at utilisation 1 without slack there is no margin: still some for timers


@dataclass(frozen=True, slots=True)
class _Charge:
    key: str  # the pace's storage key
    seconds: float  # of pace the charge takes: weight x interval
    late_s: float


@dataclass(frozen=True, slots=True)
class _Option:
    """One way to send a request: the pauses that hold it back and what it charges to which pace."""

    egress_ip: str | None
    pauses: tuple[str, ...]
    charges: tuple[_Charge, ...]


@dataclass(frozen=True, slots=True)
class _Reservation:
    index: int | None  # the option reserved; None: none is free within the allowed wait
    wait_s: float  # from now until the slot (or until the earliest option would be free)
    slot: float  # the slot, on the storage's clock
    now: float  # the storage's clock when it reserved
    ends: tuple[float, ...] = ()  # each charged pace's TAT as this reservation left it (storage units)


class _Store(Protocol):
    async def reserve(
        self, options: Sequence[_Option], wall_now: float, max_wait_s: float
    ) -> _Reservation: ...
    async def catch_up(self, moves: Sequence[tuple[str, float, float]]) -> float | None: ...
    async def paused(self, keys: Sequence[str], wall_now: float) -> float | None: ...
    async def extend(self, key: str, until: float, now: float) -> float: ...
    async def until(self, key: str) -> float | None: ...
    async def close(self) -> None: ...


class _MemoryStore:
    """One process's paces and pauses. Every method runs to completion without yielding: atomic."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._until: dict[str, float] = {}
        self._prune_at = 4096

    async def reserve(self, options: Sequence[_Option], wall_now: float, max_wait_s: float) -> _Reservation:
        now = self._clock()
        best, best_ready = 0, math.inf
        for i, option in enumerate(options):
            ready = now
            for key in option.pauses:
                until = self._until.get(key)
                if until is not None and until > wall_now:
                    ready = max(ready, now + (until - wall_now))
            for charge in option.charges:
                ready = max(ready, self._tat.get(charge.key, ready))
            if ready < best_ready:
                best, best_ready = i, ready
        if best_ready - now > max_wait_s:
            return _Reservation(None, best_ready - now, best_ready, now)
        ends = tuple(self._move(c.key, best_ready, c.seconds) for c in options[best].charges)
        if len(self._tat) > self._prune_at:  # forget paces that have caught up with the clock
            self._tat = {k: t for k, t in self._tat.items() if t > now}
            self._prune_at = max(4096, 2 * len(self._tat))
        return _Reservation(best, best_ready - now, best_ready, now, ends)

    def _move(self, key: str, slot: float, seconds: float) -> float:
        tat = slot + seconds
        if tat - slot < seconds:  # rounded down: never let the next one go sooner
            tat = math.nextafter(tat, math.inf)
        self._tat[key] = tat
        return tat

    async def catch_up(self, moves: Sequence[tuple[str, float, float]]) -> float | None:
        if any(self._tat.get(key, end) != end for key, end, _ in moves):
            return None  # another request holds a later slot of one of these paces
        now = self._clock()
        for key, _, seconds in moves:
            self._move(key, now, seconds)
        return now

    async def paused(self, keys: Sequence[str], wall_now: float) -> float | None:
        found = [u for u in (self._until.get(k) for k in keys) if u is not None and u > wall_now]
        return max(found, default=None)

    async def extend(self, key: str, until: float, now: float) -> float:
        self._until[key] = max(until, self._until.get(key, 0.0))
        return self._until[key]

    async def until(self, key: str) -> float | None:
        return self._until.get(key)

    async def close(self) -> None:
        self._tat.clear()
        self._until.clear()


# Reserve the earliest of several options atomically, on Redis's clock (microseconds).
# KEYS: each option's pause keys, then its pace keys. ARGV: the caller's unix time (pauses are
# stored in it), the longest wait in us, the number of options, then per option the number of
# pauses, the number of charges and each charge's pace in us. Returns {option (1-based; 0: none
# within the wait), wait in us, slot in us, Redis's time in us, then each charged pace's new TAT
# in us}. A pace key
# holds its TAT and expires a second after it has passed.
_RESERVE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('time')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wall = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local best, best_ready, best_k, best_a = 0, 0, 0, 0
local k, a = 1, 4
for i = 1, tonumber(ARGV[3]) do
  local np, nc = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local ready = now
  for j = 0, np - 1 do
    local delay = (tonumber(redis.call('get', KEYS[k + j]) or '0') - wall) * 1000000
    if now + delay > ready then ready = now + delay end
  end
  for j = 0, nc - 1 do
    local tat = tonumber(redis.call('get', KEYS[k + np + j]) or '0')
    if tat > ready then ready = tat end
  end
  if best == 0 or ready < best_ready then
    best, best_ready, best_k, best_a = i, ready, k, a
  end
  k = k + np + nc
  a = a + 2 + nc
end
best_ready = math.ceil(best_ready)
local wait = best_ready - now
if wait > max_wait then return {0, wait, best_ready, now} end  -- integers: exact up to 2^53 us
local np, nc = tonumber(ARGV[best_a]), tonumber(ARGV[best_a + 1])
local result = {best, wait, best_ready, now}
for j = 0, nc - 1 do
  local tat = math.ceil(best_ready + tonumber(ARGV[best_a + 2 + j]))
  local keep = math.ceil((tat - now) / 1000) + 1000
  redis.call('set', KEYS[best_k + np + j], string.format('%.0f', tat), 'PX', string.format('%.0f', keep))
  result[5 + j] = tat
end
return result
"""

# Move a late request's slot to now in paces where it is still the last (KEYS), if it is in all:
# ARGV: per key the TAT its reservation left and its pace in us. Returns the new slot in us, or 0.
_CATCH_UP = """
for i = 1, #KEYS do
  local tat = redis.call('get', KEYS[i])
  if tat and tonumber(tat) ~= tonumber(ARGV[2 * i - 1]) then return 0 end
end
local t = redis.call('time')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local tat = math.ceil(now + tonumber(ARGV[2 * i]))
  local keep = math.ceil((tat - now) / 1000) + 1000
  redis.call('set', KEYS[i], string.format('%.0f', tat), 'PX', string.format('%.0f', keep))
end
return now
"""

# Keep the later of two pauses: a short 429 must not shorten a ban another worker recorded.
_EXTEND = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return tostring(current)
"""


class _RedisStore:
    """Paces and pauses in Redis, shared by every Budget on the same Redis and key prefix."""

    def __init__(self, url: str) -> None:
        import redis.asyncio  # only distributed mode needs it

        # Hundreds of checks may ask at once: they queue for a connection rather than fail.
        self._pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=32, timeout=30)
        self._client: Any = redis.asyncio.Redis(connection_pool=self._pool)
        self._reserve = self._client.register_script(_RESERVE)
        self._catch_up = self._client.register_script(_CATCH_UP)
        self._extend = self._client.register_script(_EXTEND)

    async def reserve(self, options: Sequence[_Option], wall_now: float, max_wait_s: float) -> _Reservation:
        keys: list[str] = []
        args: list[str | int] = [repr(wall_now), math.floor(min(max_wait_s, 1e9) * 1e6), len(options)]
        for option in options:
            keys += option.pauses
            keys += (charge.key for charge in option.charges)
            args += [len(option.pauses), len(option.charges)]
            args += (repr(charge.seconds * 1e6) for charge in option.charges)
        index, wait_us, slot_us, now_us, *ends = await self._reserve(keys=keys, args=args)
        return _Reservation(
            int(index) - 1 if index else None,
            int(wait_us) / 1e6,
            int(slot_us) / 1e6,
            int(now_us) / 1e6,
            tuple(float(end) for end in ends),  # whole microseconds: exact as floats
        )

    async def catch_up(self, moves: Sequence[tuple[str, float, float]]) -> float | None:
        args: list[str] = []
        for _, end, seconds in moves:
            args += [f"{end:.0f}", repr(seconds * 1e6)]
        now_us = int(await self._catch_up(keys=[key for key, _, _ in moves], args=args))
        return now_us / 1e6 if now_us else None

    async def paused(self, keys: Sequence[str], wall_now: float) -> float | None:
        found = [float(v) for v in await self._client.mget(list(keys)) if v is not None]
        return max((u for u in found if u > wall_now), default=None)

    async def extend(self, key: str, until: float, now: float) -> float:
        keep_ms = max(1, math.ceil((until - now) * 1000) + 1000)  # garbage-collected a second after
        return float(await self._extend(keys=[key], args=[repr(until), keep_ms]))

    async def until(self, key: str) -> float | None:
        value = await self._client.get(key)
        return None if value is None else float(value)

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.aclose()


# -- the budget ----------------------------------------------------------------------------------------


class Budget:
    """Shared rate budgets per (exchange, egress IP) and (exchange, account), paced evenly.

    Create it in the event loop that uses it (its Redis connections belong to one loop) and
    `close()` it there.
    """

    def __init__(
        self,
        store: _Store,
        *,
        egress_ips: Sequence[str] = (),
        pools: Mapping[str, Mapping[str, Pool]] = PUBLISHED,
        utilisation: float = 0.95,
        latency_slack_s: float = 0.0,
        max_wait_s: float = 300.0,
        key_prefix: str = "keysentry",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], not {utilisation}")
        if (
            isinstance(latency_slack_s, bool)
            or not isinstance(latency_slack_s, int | float)
            or not 0 <= latency_slack_s < math.inf
        ):
            raise ValueError(f"latency_slack_s must be a number of seconds >= 0, not {latency_slack_s!r}")
        if isinstance(egress_ips, str):
            raise TypeError("egress_ips must be a sequence of addresses, not one string")
        self._store = store
        self.egress_ips: tuple[str | None, ...] = tuple(egress_ips) or (None,)
        self.pools = pools
        self.utilisation = utilisation
        self.latency_slack_s = float(latency_slack_s)
        self.max_wait_s = max_wait_s
        self._prefix = key_prefix
        self._clock = clock
        self._sleep = sleep
        self._paces: dict[tuple[str, str], _Pace] = {}
        self._next: dict[str, int] = {}  # round robin start per exchange
        self._offset = math.inf  # this clock minus the storage's, as estimated (`_acquire`)

    @classmethod
    def memory(cls, **options: Any) -> Budget:
        """Local mode: budgets of this process only."""
        return cls(_MemoryStore(options.get("clock", time.time)), **options)

    @classmethod
    def redis(cls, url: str, *, key_prefix: str = "keysentry", **options: Any) -> Budget:
        """Distributed mode: every Budget on the same Redis and prefix shares the budgets."""
        return cls(_RedisStore(url.removeprefix("async+")), key_prefix=key_prefix, **options)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Budget:
        """Redis when KEYSENTRY_REDIS_URL is set (distributed mode), memory otherwise; from KEYSENTRY_EGRESS_IPS."""
        options.setdefault("egress_ips", settings.egress_ip_list)
        if settings.redis_url:
            return cls.redis(settings.redis_url, **options)
        return cls.memory(**options)

    async def close(self) -> None:
        await self._store.close()

    def pace(self, exchange: str, pool_name: str) -> float:
        """Weight per second this budget lets through the pool (per IP or per account)."""
        return 1 / self._pace(exchange, pool_name).interval_s

    def _pace(self, exchange: str, pool_name: str) -> _Pace:
        found = self._paces.get((exchange, pool_name))
        if found is None:
            pool = self.pools[exchange][pool_name]
            heaviest = _HEAVIEST.get((exchange, pool_name), 1)
            # Fewer than units * (W + J) / (W + slack) + n arrive in a window (module docstring):
            # at most `limit` when n <= limit + 1 - units, and J stays within the delay allowed.
            units = min(pool.limit * self.utilisation, max(1, pool.limit + 1 - heaviest))
            interval = (pool.window_s + self.latency_slack_s) / units
            delay = max(0.0, (pool.limit + 1 - heaviest) * interval - pool.window_s)
            found = _Pace(interval, math.floor(pool.limit + 1 - units), max(delay / 2, _MIN_LATE_S))
            self._paces[(exchange, pool_name)] = found
        return found

    # -- acquiring -------------------------------------------------------------------------------------

    async def acquire(
        self, exchange: str, cost: Cost, *, account: str | None = None, max_wait_s: float | None = None
    ) -> Lease:
        """Charge `cost` to the egress IP free soonest (round robin among equals) and wait for its slot."""
        return await self._acquire(exchange, cost, self.egress_ips, account, max_wait_s)

    async def acquire_at(
        self,
        exchange: str,
        egress_ip: str | None,
        cost: Cost,
        *,
        account: str | None = None,
        max_wait_s: float | None = None,
    ) -> Lease:
        """Charge `cost` to this one egress IP (a request already bound to its source address)."""
        return await self._acquire(exchange, cost, (egress_ip,), account, max_wait_s)

    async def _acquire(
        self,
        exchange: str,
        cost: Cost,
        ips: tuple[str | None, ...],
        account: str | None,
        max_wait_s: float | None,
    ) -> Lease:
        charges = self._charges(exchange, cost)
        pools = self.pools[exchange]

        def charge(name: str, weight: int, subject: str) -> _Charge:
            pace = self._pace(exchange, name)
            return _Charge(self._pace_key(exchange, name, subject), weight * pace.interval_s, pace.late_s)

        by_ip = [(name, w) for name, w in charges if pools[name].scope == "ip"]
        held: tuple[str, ...] = ()
        shared: tuple[_Charge, ...] = ()
        if account is not None:  # unknown yet (a first check): the account's pools cannot be keyed
            held = (self._pause_key(exchange, "account", account),)
            shared = tuple(charge(n, w, account) for n, w in charges if pools[n].scope == "account")
        options = [
            _Option(
                ip,
                (self._ip_pause_key(exchange, ip), *held),
                (*(charge(n, w, _ip_key(ip)) for n, w in by_ip), *shared),
            )
            for ip in self._rotation(exchange, ips)
        ]
        started = self._clock()
        deadline = started + (self.max_wait_s if max_wait_s is None else max_wait_s)
        while True:
            now = self._clock()
            got = await self._store.reserve(options, now, max(0.0, deadline - now))
            if got.index is None:
                where = ", ".join(_ip_key(ip) for ip in ips)
                raise BudgetExhausted(
                    f"{exchange}: no rate budget from {where} within {deadline - started:g} s "
                    f"(next room in {got.wait_s:.1f} s)"
                )
            chosen = options[got.index]
            self._advance(exchange, ips, chosen.egress_ip)
            # The slot on this process's clock. The offset from the storage's clock (Redis's) is
            # estimated by the smallest recent gap between an answer's arrival here and the time
            # it carries: not below the true offset (drift aside), close to it once one answer is quick.
            answered = self._clock()
            self._offset = min(answered - got.now, self._offset + _OFFSET_DRIFT_S)
            due = got.slot + self._offset
            if due > answered:
                await self._sleep(due - answered)
            woke = self._clock()
            # Woken too late for its slot (a stalled process, a slow answer): going now is safe
            # only where no one queued behind it, its slot moving to now there; elsewhere it
            # would crowd the next slots, so it lets its slots go and asks again.
            stale = [
                (c.key, end, c.seconds)
                for c, end in zip(chosen.charges, got.ends, strict=True)
                if woke - due > c.late_s
            ]
            slot = got.slot
            if stale:
                moved = await self._store.catch_up(stale)
                if moved is None:
                    continue
                slot = moved
            # A 429 or a ban recorded while this request waited for its slot holds it back too.
            if due > answered and await self._store.paused(chosen.pauses, woke) is not None:
                continue
            return Lease(chosen.egress_ip, max(0.0, woke - started), slot)

    def _charges(self, exchange: str, cost: Cost) -> list[tuple[str, int]]:
        pools = self.pools.get(exchange)
        if pools is None:
            raise ValueError(f"no rate budget configured for exchange {exchange!r}")
        charges = []
        for name, weight in cost.items():
            if name not in pools:
                raise ValueError(f"{exchange} has no rate pool {name!r}; pools: {', '.join(pools)}")
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise ValueError(
                    f"weight for {exchange} pool {name!r} must be a whole number, not {weight!r}"
                )
            heaviest = self._pace(exchange, name).heaviest
            if weight > heaviest:
                raise ValueError(
                    f"weight {weight} exceeds what {exchange} pool {name!r} can take at once at "
                    f"utilisation {self.utilisation:g} ({heaviest})"
                )
            if weight:
                charges.append((name, weight))
        return charges

    def _pace_key(self, exchange: str, pool_name: str, subject: str) -> str:
        scope = self.pools[exchange][pool_name].scope
        return f"{self._prefix}:pace:{exchange}:{pool_name}:{scope}:{subject}"

    def _rotation(self, exchange: str, ips: tuple[str | None, ...]) -> list[str | None]:
        start = self._next.get(exchange, 0) % len(ips)
        return [*ips[start:], *ips[:start]]

    def _advance(self, exchange: str, ips: tuple[str | None, ...], used: str | None) -> None:
        if len(ips) > 1:
            self._next[exchange] = ips.index(used) + 1

    # -- being told to stop ----------------------------------------------------------------------------

    async def penalize(
        self,
        exchange: str,
        egress_ip: str | None,
        retry_after_s: float | None,
        banned: bool,
        *,
        account: str | None = None,
    ) -> float:
        """Send nothing to `exchange` from `egress_ip` (or for `account`, when given) until the
        wait is over; return when that is (unix seconds). Without a Retry-After, the exchange's
        usual pause applies."""
        limited, ban = DEFAULT_PAUSE_S.get(exchange, (60.0, 600.0))
        wait = (
            retry_after_s
            if retry_after_s is not None and retry_after_s >= 0
            else (ban if banned else limited)
        )
        now = self._clock()
        key = (
            self._pause_key(exchange, "account", account)
            if account
            else self._ip_pause_key(exchange, egress_ip)
        )
        return await self._store.extend(key, now + wait, now)

    async def paused_until(
        self, exchange: str, egress_ip: str | None, *, account: str | None = None
    ) -> float | None:
        key = (
            self._pause_key(exchange, "account", account)
            if account
            else self._ip_pause_key(exchange, egress_ip)
        )
        until = await self._store.until(key)
        return until if until is not None and until > self._clock() else None

    async def observe(
        self, exchange: str, outcome: ProbeOutcome, *, account: str | None = None
    ) -> float | None:
        """Obey a probe's 429 or ban: pause its IP, or its account for per-account limits."""
        if outcome.cause not in (Cause.RATE_LIMITED, Cause.IP_BANNED):
            return None
        banned = outcome.cause is Cause.IP_BANNED
        per_account = (
            not banned
            and account is not None
            and outcome.probe not in _PUBLIC_PROBES
            and (outcome.code or "") in _ACCOUNT_LIMIT_CODES.get(exchange, frozenset())
        )
        return await self.penalize(
            exchange,
            outcome.egress_ip,
            outcome.retry_after_s,
            banned,
            account=account if per_account else None,
        )

    def _pause_key(self, exchange: str, scope: Scope, subject: str | None) -> str:
        return f"{self._prefix}:pause:{exchange}:{scope}:{subject}"

    def _ip_pause_key(self, exchange: str, egress_ip: str | None) -> str:
        return self._pause_key(exchange, "ip", _ip_key(egress_ip))


def _ip_key(ip: str | None) -> str:
    return ip if ip is not None else _DEFAULT_IP


# -- charging each request as it goes out ---------------------------------------------------------------


class BudgetedTransport:
    """An `HttpTransport` for one check: charges each request to the budget before sending it.

    `prepaid` calls (the first round, acquired by the scheduler) go out without a second charge.
    A request that finds no room within `max_wait_s` is not sent: it fails as a connection
    error, which the adapter reports as a temporary issue.
    """

    def __init__(
        self,
        inner: HttpTransport,
        budget: Budget,
        exchange: str,
        *,
        account: str | None = None,
        prepaid: Iterable[Call] = (),
        max_wait_s: float = 10.0,
    ) -> None:
        self._inner = inner
        self._budget = budget
        self._exchange = exchange
        self._account = account
        self._prepaid = Counter(prepaid)
        self._max_wait_s = max_wait_s

    @property
    def egress_ips(self) -> tuple[str, ...]:
        return self._inner.egress_ips

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        egress_ip: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> RawResponse:
        target = URL(url, encoded=True)
        call = match_call(self._exchange, method, target.path)
        if call is not None and self._prepaid[call] > 0:
            self._prepaid[call] -= 1
        elif call is not None:
            source = egress_ip if egress_ip is not None else next(iter(self._inner.egress_ips), None)
            try:
                await self._budget.acquire_at(
                    self._exchange,
                    source,
                    cost_of(self._exchange, [call]),
                    account=self._account,
                    max_wait_s=self._max_wait_s,
                )
            except BudgetExhausted as e:
                raise TransportConnectionError(f"not sent: {e}", host=f"{target.host}:{target.port}") from e
        return await self._inner.request(
            method, url, headers=headers, body=body, egress_ip=egress_ip, timeouts=timeouts
        )

    async def close(self) -> None:
        """Nothing to close: the shared transport belongs to whoever made it."""
