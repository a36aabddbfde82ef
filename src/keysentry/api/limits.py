"""Per-tenant rate limits on the routes that make keysentry call out: an exchange with a key
(diagnose, add, update, refresh), or a URL the tenant chose (a webhook test).

Moving windows from the `limits` library: in this process's memory by default, in Redis when
KEYSENTRY_REDIS_URL is set (every API process then shares one budget per tenant). A limit hit
answers 429 with Retry-After. When Redis cannot be reached the request is refused (503): an
open door while the limiter is down would make keysentry an unthrottled key checker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from keysentry.api.config import ACTIONS, Action, ApiConfig

if TYPE_CHECKING:
    from keysentry.settings import Settings

__all__ = ["LimiterUnavailable", "RateLimiter"]

_PREFIX = "keysentry:api"


class LimiterUnavailable(Exception):
    """The shared limiter's storage (Redis) did not answer."""


class RateLimiter:
    def __init__(
        self,
        storage: Storage,
        rules: Mapping[Action, list[RateLimitItem]],
        *,
        close: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        self._rules = dict(rules)
        self._close = close

    @staticmethod
    def rules(config: ApiConfig) -> dict[Action, list[RateLimitItem]]:
        return {action: parse_many(config.rate(action)) for action in ACTIONS}

    @classmethod
    def memory(cls, config: ApiConfig) -> RateLimiter:
        return cls(MemoryStorage(), cls.rules(config))

    @classmethod
    def redis(cls, url: str, config: ApiConfig) -> RateLimiter:
        import redis.asyncio
        from limits.aio.storage import RedisStorage

        plain = url.removeprefix("async+")
        # Our own pool, so shutdown can close it (limits' storage has no close of its own).
        pool = redis.asyncio.ConnectionPool.from_url(plain, socket_timeout=2.0, socket_connect_timeout=2.0)
        storage = RedisStorage(
            f"async+{plain}",
            implementation="redispy",
            key_prefix=_PREFIX,
            wrap_exceptions=True,
            connection_pool=pool,  # type: ignore[arg-type]  # limits passes it on to redis-py
        )
        return cls(storage, cls.rules(config), close=pool.disconnect)

    @classmethod
    def from_settings(cls, settings: Settings, config: ApiConfig) -> RateLimiter:
        if settings.redis_url:
            return cls.redis(settings.redis_url, config)
        return cls.memory(config)

    async def hit(self, action: Action, tenant: str) -> int | None:
        """Count one `action` of `tenant`; None when allowed, else the seconds to wait."""
        from limits.errors import StorageError

        try:
            for item in self._rules[action]:
                if not await self._limiter.hit(item, action, tenant):
                    stats = await self._limiter.get_window_stats(item, action, tenant)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except (StorageError, OSError, ConnectionError) as e:
            raise LimiterUnavailable(type(e).__name__) from None
        return None

    async def close(self) -> None:
        if self._close is not None:
            await self._close()
