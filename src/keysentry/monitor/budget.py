"""Rate budgets: never send an exchange more than its published limits allow, across all workers.

Exchanges count requests in pools: per egress IP (Binance's request weight, Bybit's 600 per 5 s,
public endpoints) or per account (OKX's per-endpoint limits, Bybit's per-UID ones, KuCoin's
resource pools). `PUBLISHED` lists the pools, `ENDPOINTS` what each request our adapters send
costs in them (reference sections 1.8, 2.8, 3.8, 4.8 and the simulators' route tables).

A `Budget` keeps moving windows (the `limits` library; in memory in local mode, in Redis in
distributed mode so every worker draws on the same budget) at a target utilisation of each
published limit (margin for other clients and clocks), each window lengthened by a latency
slack (exchanges count fixed windows on arrival). `acquire` picks an egress IP whose
pools have room (several IPs share the load) and waits when none has; it never hands out more
than the budget. `penalize` records a 429's Retry-After or a ban in the same storage: no
request goes to that exchange from that IP (or for that account) until it ends.

How a check uses it: the scheduler acquires the cost of the check's first round
(`check_calls`, `cost_of`) and sends from the leased IP first (`CheckRequest.egress_ips`), through
a `BudgetedTransport` told those calls are prepaid; anything else the adapter sends (a second
round after a failure, a re-ask from another address) is charged as it goes out, and a request
that would wait too long is not sent at all (the adapter sees a connection error: a temporary
issue, never a verdict on the key). After the check, `observe` each outcome to obey 429/418.

All workers must share the pool table and utilisation (they are part of the storage keys) and
keep their clocks in sync (moving windows are timestamped by the client), as exchanges demand
anyway.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
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
_MIN_SLEEP_S = 0.01


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


# -- storage -------------------------------------------------------------------------------------------


class BudgetExhausted(Exception):
    """No room in the budget within the allowed wait; the message says where and for how long."""


@dataclass(frozen=True, slots=True)
class Lease:
    egress_ip: str | None  # None: the system's default source address (none configured)
    waited_s: float


class _Pauses(Protocol):
    async def extend(self, key: str, until: float, now: float) -> float: ...
    async def until(self, key: str) -> float | None: ...
    async def close(self) -> None: ...


class _MemoryPauses:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def extend(self, key: str, until: float, now: float) -> float:
        self._until[key] = max(until, self._until.get(key, 0.0))
        return self._until[key]

    async def until(self, key: str) -> float | None:
        return self._until.get(key)

    async def close(self) -> None:
        self._until.clear()


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


class _RedisPauses:
    def __init__(self, pool: Any) -> None:
        import redis.asyncio  # only distributed mode needs it

        self._pool = pool
        self._client: Any = redis.asyncio.Redis(connection_pool=pool)
        self._extend = self._client.register_script(_EXTEND)

    async def extend(self, key: str, until: float, now: float) -> float:
        keep_ms = max(1, math.ceil((until - now) * 1000) + 1000)  # garbage-collected a second after
        return float(await self._extend(keys=[key], args=[repr(until), keep_ms]))

    async def until(self, key: str) -> float | None:
        value = await self._client.get(key)
        return None if value is None else float(value)

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.aclose()  # the windows' connections too: the pool is shared


# -- the budget ----------------------------------------------------------------------------------------


class Budget:
    """Shared rate budgets per (exchange, egress IP) and (exchange, account).

    Create it in the event loop that uses it (its locks and Redis connections belong to one
    loop) and `close()` it there.
    """

    def __init__(
        self,
        storage: Storage,
        pauses: _Pauses,
        *,
        egress_ips: Sequence[str] = (),
        pools: Mapping[str, Mapping[str, Pool]] = PUBLISHED,
        utilisation: float = 0.95,
        latency_slack_s: int = 1,
        max_wait_s: float = 300.0,
        key_prefix: str = "keysentry",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], not {utilisation}")
        if isinstance(latency_slack_s, bool) or not isinstance(latency_slack_s, int) or latency_slack_s < 0:
            raise ValueError(
                f"latency_slack_s must be a whole number of seconds >= 0, not {latency_slack_s!r}"
            )
        if isinstance(egress_ips, str):
            raise TypeError("egress_ips must be a sequence of addresses, not one string")
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._pauses = pauses
        self.egress_ips: tuple[str | None, ...] = tuple(egress_ips) or (None,)
        self.pools = pools
        self.utilisation = utilisation
        self.latency_slack_s = latency_slack_s
        self.max_wait_s = max_wait_s
        self._prefix = key_prefix
        self._clock = clock
        self._sleep = sleep
        self._items: dict[tuple[str, str], RateLimitItem] = {}
        self._next: dict[str, int] = {}  # round robin start per exchange
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def memory(cls, **options: Any) -> Budget:
        """Local mode: budgets of this process only."""
        return cls(MemoryStorage(), _MemoryPauses(), **options)

    @classmethod
    def redis(cls, url: str, *, key_prefix: str = "keysentry", **options: Any) -> Budget:
        """Distributed mode: every Budget on the same Redis and prefix shares the budgets."""
        import redis.asyncio
        from limits.aio.storage import RedisStorage

        plain = url.removeprefix("async+")
        # One pool for the windows and the pauses, ours to close (limits' storage has no close).
        pool = redis.asyncio.ConnectionPool.from_url(plain)
        storage = RedisStorage(
            f"async+{plain}",
            implementation="redispy",
            key_prefix=f"{key_prefix}:limits",
            connection_pool=pool,  # type: ignore[arg-type]  # limits passes it on to redis-py
        )
        return cls(storage, _RedisPauses(pool), key_prefix=key_prefix, **options)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Budget:
        """Redis when KEYSENTRY_REDIS_URL is set (distributed mode), memory otherwise; from KEYSENTRY_EGRESS_IPS."""
        options.setdefault("egress_ips", settings.egress_ip_list)
        if settings.redis_url:
            return cls.redis(settings.redis_url, **options)
        return cls.memory(**options)

    async def close(self) -> None:
        await self._pauses.close()

    # -- acquiring -------------------------------------------------------------------------------------

    async def acquire(
        self, exchange: str, cost: Cost, *, account: str | None = None, max_wait_s: float | None = None
    ) -> Lease:
        """Charge `cost` to the first egress IP with room (round robin), waiting while none has."""
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
        by_ip = [(name, w) for name, w in charges if self.pools[exchange][name].scope == "ip"]
        by_account = [(name, w) for name, w in charges if self.pools[exchange][name].scope == "account"]
        if account is None:
            by_account = []  # not known yet (a first check): the account's pools cannot be keyed
        started = self._clock()
        deadline = started + (self.max_wait_s if max_wait_s is None else max_wait_s)
        lock = self._locks.setdefault(exchange, asyncio.Lock())
        while True:
            async with lock:  # within one process, test-then-hit never races itself
                now = self._clock()
                account_ready = await self._ready_at(exchange, "account", account, by_account, now)
                earliest = math.inf
                for ip in self._rotation(exchange, ips):
                    ready = max(account_ready, await self._ready_at(exchange, "ip", _ip_key(ip), by_ip, now))
                    if ready <= now:
                        if await self._hit(exchange, ip, account, by_ip, by_account):
                            self._advance(exchange, ips, ip)
                            return Lease(ip, max(0.0, self._clock() - started))
                        ready = now + _MIN_SLEEP_S  # another worker took the room in between
                    earliest = min(earliest, ready)
            if earliest > deadline:
                where = ", ".join(_ip_key(ip) for ip in ips)
                raise BudgetExhausted(
                    f"{exchange}: no rate budget from {where} within {deadline - started:g} s "
                    f"(next room in {earliest - now:.1f} s)"
                )
            await self._sleep(max(earliest - now, _MIN_SLEEP_S))

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
            if weight > self._item(exchange, name).amount:
                raise ValueError(f"weight {weight} exceeds the whole budget of {exchange} pool {name!r}")
            if weight:
                charges.append((name, weight))
        return charges

    def _item(self, exchange: str, pool_name: str) -> RateLimitItem:
        item = self._items.get((exchange, pool_name))
        if item is None:
            pool = self.pools[exchange][pool_name]
            allowed = pool.limit * self.utilisation
            # Exchanges count in fixed windows when requests arrive: a batch sent just before a
            # window ends may land in the next one, next to the batch sent a window later. The
            # slack keeps any window plus the network delay within the limit.
            if allowed >= 1:
                item = RateLimitItemPerSecond(math.floor(allowed), pool.window_s + self.latency_slack_s)
            else:  # a one-request pool: keep the rate by stretching the window instead
                stretched = math.ceil(pool.window_s / allowed)
                item = RateLimitItemPerSecond(1, stretched + self.latency_slack_s)
            self._items[(exchange, pool_name)] = item
        return item

    def _ids(self, exchange: str, pool_name: str, subject: str) -> tuple[str, ...]:
        scope = self.pools[exchange][pool_name].scope
        return (self._prefix, exchange, pool_name, scope, subject)

    async def _ready_at(
        self, exchange: str, scope: Scope, subject: str | None, charges: list[tuple[str, int]], now: float
    ) -> float:
        """When these pools and pauses would let the charges through (<= now: already)."""
        if subject is None:
            return now
        ready = now
        paused = await self._pauses.until(self._pause_key(exchange, scope, subject))
        if paused is not None and paused > now:
            ready = paused
        for name, weight in charges:
            item, ids = self._item(exchange, name), self._ids(exchange, name, subject)
            if not await self._limiter.test(item, *ids, cost=weight):
                stats = await self._limiter.get_window_stats(item, *ids)
                ready = max(ready, stats.reset_time)
        return ready

    async def _hit(
        self,
        exchange: str,
        ip: str | None,
        account: str | None,
        by_ip: list[tuple[str, int]],
        by_account: list[tuple[str, int]],
    ) -> bool:
        # A failed hit after successful ones leaves those charged: wasting budget is safe,
        # sending beyond it is not.
        charges = [(name, weight, str(account)) for name, weight in by_account]
        charges += [(name, weight, _ip_key(ip)) for name, weight in by_ip]
        for name, weight, subject in charges:
            item, ids = self._item(exchange, name), self._ids(exchange, name, subject)
            if not await self._limiter.hit(item, *ids, cost=weight):
                return False
        return True

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
        return await self._pauses.extend(key, now + wait, now)

    async def paused_until(
        self, exchange: str, egress_ip: str | None, *, account: str | None = None
    ) -> float | None:
        key = (
            self._pause_key(exchange, "account", account)
            if account
            else self._ip_pause_key(exchange, egress_ip)
        )
        until = await self._pauses.until(key)
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
