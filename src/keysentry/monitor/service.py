"""What a monitor process runs on, built from the operator's settings.

`MonitorConfig` reads the monitor's own `KEYSENTRY_MONITOR_*` variables (docs/deploy.md lists
them); `MonitorRuntime.open(settings)` opens the store (migrating it), the vault, one shared
Transport, the rate budget (in memory, or in Redis when KEYSENTRY_REDIS_URL is set, shared by
every worker) and the webhook sender, in the running event loop, and `close()` closes them
there. Both the local scheduler and the Celery workers use it.

`next_check_function(config.policy())` (keysentry.monitor.policy) is the monitor's re-check
policy in the shape `ConnectionService(next_check=...)` takes, so a key added, updated or
refreshed through the API or the CLI is scheduled by the same rule, with the same inputs
(connection id, last definitive status, backoff streaks), as the monitor's own checks.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keysentry.monitor.policy import RecheckPolicy, next_check_function

if TYPE_CHECKING:
    from keysentry.diagnosis.options import OptionsFactory
    from keysentry.diagnosis.profiles import Profile
    from keysentry.exchanges.transport import Transport
    from keysentry.monitor.budget import Budget
    from keysentry.monitor.metrics import MonitorMetrics
    from keysentry.monitor.webhooks import WebhookSender
    from keysentry.settings import Settings
    from keysentry.store.db import Database
    from keysentry.vault import Vault

__all__ = ["MonitorConfig", "MonitorRuntime", "next_check_function"]

Clock = Callable[[], datetime]


class MonitorConfig(BaseSettings):
    """The monitor's settings (`KEYSENTRY_MONITOR_*`). Durations in seconds unless named otherwise."""

    model_config = SettingsConfigDict(env_prefix="KEYSENTRY_MONITOR_", extra="ignore", frozen=True)

    interval_hours: float = Field(6.0, gt=0, le=24 * 30)  # a healthy key is re-checked this often
    batch_size: int = Field(100, ge=1, le=5000)  # connections claimed at a time
    concurrency: int = Field(50, ge=1, le=2000)  # checks in flight per process
    batches_in_flight: int = Field(2, ge=1, le=100)  # local mode: batches checked at once
    lease_s: float = Field(600.0, gt=0)  # a claimed row returns to the queue if not recorded by then
    tick_s: float = Field(1.0, gt=0, le=300)  # local mode: how often due rows are looked for
    budget_wait_s: float = Field(60.0, ge=0)  # longest wait for rate budget before giving a row back
    request_wait_s: float = Field(10.0, ge=0)  # longest wait for budget of a follow-up request
    utilisation: float = Field(0.95, gt=0, le=1)  # share of each published rate limit used
    # The budget paces each pool evenly over window + slack, so a request may reach the exchange
    # up to `slack` later than others without a window holding more than the limit. 0: the
    # utilisation margin alone absorbs the delay spread (about 0.24 s on Bybit's 5 s windows at
    # 0.95, 3 s on one-minute ones); each second costs 1/(window+slack) of the pace.
    budget_slack_s: float = Field(0.0, ge=0, le=60)
    expiring_days: tuple[int, ...] = (14, 7, 3, 1)
    # distributed mode (Celery)
    queue: str = Field("keysentry-monitor", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    key_prefix: str = Field("keysentry", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")  # shared budgets in Redis
    beat_s: float = Field(5.0, gt=0, le=3600)  # how often the beat task enqueues due batches
    max_queued_batches: int = Field(20, ge=1, le=10000)  # backlog kept in the broker, no more
    visibility_timeout_s: int = Field(900, ge=5)  # an unacknowledged batch is redelivered after this
    restore_interval_s: int = Field(10, ge=1)  # how often workers look for such batches
    # webhooks
    webhook_allow_private: bool = False  # allow endpoints on private/loopback addresses (tests, intranets)
    webhook_concurrency: int = Field(20, ge=1, le=1000)
    webhook_attempts: int = Field(15, ge=1, le=100)
    webhook_base_s: float = Field(30.0, gt=0)  # first retry after about this long, doubling

    def policy(self) -> RecheckPolicy:
        interval = timedelta(hours=self.interval_hours)
        defaults = RecheckPolicy()
        # Short intervals (tests, demos) scale every other delay down with them.
        scale = min(1.0, interval / defaults.interval)
        return RecheckPolicy(
            interval=interval,
            min_delay=defaults.min_delay * scale,
            after_change=defaults.after_change * scale,
            temporary_base=defaults.temporary_base * scale,
            temporary_cap=defaults.temporary_cap * scale,
            error_base=defaults.error_base * scale,
            error_cap=defaults.error_cap * scale,
            expiring_days=self.expiring_days,
            expiry_grace=defaults.expiry_grace * scale,
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)


def custom_profiles(settings: Settings) -> Mapping[str, Profile]:
    """The operator's requirement profiles (KEYSENTRY_PROFILES_FILE), read as the CLI reads them."""
    path = settings.profiles_file
    if path is None:
        return {}
    import yaml

    from keysentry.diagnosis.profiles import load_profiles

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read profiles file {path}: {e}") from None
    return load_profiles(data.get("profiles", data) if isinstance(data, dict) else data)


@dataclass
class MonitorRuntime:
    """The store, vault, transport, budget and webhook sender of one monitor process (one event loop)."""

    settings: Settings
    config: MonitorConfig
    db: Database
    vault: Vault
    transport: Transport
    budget: Budget
    options: OptionsFactory
    policy: RecheckPolicy
    metrics: MonitorMetrics
    sender: WebhookSender
    clock: Clock
    worker_id: str

    @classmethod
    async def open(
        cls,
        settings: Settings,
        config: MonitorConfig | None = None,
        *,
        metrics: MonitorMetrics | None = None,
        options: OptionsFactory | None = None,
        policy: RecheckPolicy | None = None,
        clock: Clock | None = None,
    ) -> MonitorRuntime:
        """Open everything in the running loop. Raises VaultSealed, DatabaseUnavailable,
        MigrationError or ValueError (a bad profiles file): the monitor must not start."""
        from keysentry.diagnosis.options import options_factory
        from keysentry.exchanges.transport import Timeouts, Transport
        from keysentry.monitor.budget import Budget
        from keysentry.monitor.delivery import StoreDeliveryLog
        from keysentry.monitor.metrics import MonitorMetrics
        from keysentry.monitor.webhooks import RetryPolicy, WebhookSender
        from keysentry.store import credentials as creds
        from keysentry.store.db import Database, resolve_url
        from keysentry.vault import Vault

        config = config or MonitorConfig()
        profiles = custom_profiles(settings)
        db = await Database.open(resolve_url(settings.database_url, settings.data_dir))
        try:
            async with db.session() as s:
                stored = await creds.any_stored(s)
            # Never a fresh keyring over stored secrets: that would be a loss, not a start.
            vault = Vault.open(
                settings.data_dir,
                master_key=settings.master_key.get_secret_value() if settings.master_key else None,
                master_key_file=settings.master_key_file,
                kms_uri=settings.kms_uri,
                create=not stored,
            )
        except BaseException:
            await db.close()
            raise
        timeouts = Timeouts(connect=min(5.0, settings.request_timeout_s), total=settings.request_timeout_s)
        transport = Transport(egress_ips=settings.egress_ip_list, timeouts=timeouts)
        budget = Budget.from_settings(
            settings,
            utilisation=config.utilisation,
            latency_slack_s=config.budget_slack_s,
            key_prefix=config.key_prefix,
        )
        metrics = metrics or MonitorMetrics()
        retry = RetryPolicy(max_attempts=config.webhook_attempts, base_s=config.webhook_base_s)
        return cls(
            settings=settings,
            config=config,
            db=db,
            vault=vault,
            transport=transport,
            budget=budget,
            options=options or options_factory(settings, custom_profiles=profiles),
            policy=policy or config.policy(),
            metrics=metrics,
            sender=WebhookSender(
                StoreDeliveryLog(db),
                policy=retry,
                allow_private=config.webhook_allow_private,
                metrics=metrics,
            ),
            clock=clock or (lambda: datetime.now(UTC)),
            worker_id=secrets.token_hex(4),
        )

    async def close(self) -> None:
        try:
            await self.sender.close()
            await self.transport.close()
            await self.budget.close()
        finally:
            await self.db.close()
