"""Distributed mode: the monitor as Celery tasks on the Redis broker named by KEYSENTRY_REDIS_URL.

    celery -A keysentry.monitor.celery_app worker --concurrency 4     (keysentry worker)
    celery -A keysentry.monitor.celery_app beat                       (keysentry beat; exactly one)

- `enqueue_due` (the beat task, every KEYSENTRY_MONITOR_BEAT_S): claims due connections in
  batches through the `next_check_at` index and sends one `check_batch` per batch, keeping at
  most KEYSENTRY_MONITOR_MAX_QUEUED_BATCHES waiting in the broker (a claim's lease must not run
  out while its batch waits); it also hands due webhook deliveries to `deliver`.
- `check_batch(ids, lease_until)`: a worker checks the batch concurrently with asyncio, on an
  event loop, store, transport and Redis-shared rate budget kept for the life of its process.

At least once, at most once per claim: tasks are acknowledged late and rejected when their
worker process dies, so a batch whose worker was killed is delivered again (by the broker's
visibility timeout when the whole worker died); the lease end travels with the batch and a
result is recorded only while the row still holds that lease, so the re-run skips every
connection the first run already recorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Celery, signals  # type: ignore[import-untyped]  # no stubs published

if TYPE_CHECKING:
    from keysentry.monitor.scheduler import Monitor
    from keysentry.monitor.service import MonitorConfig
    from keysentry.settings import Settings

__all__ = ["app", "celery_config", "check_batch", "deliver", "enqueue_due"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ENQUEUE_DUE = "keysentry.monitor.enqueue_due"
CHECK_BATCH = "keysentry.monitor.check_batch"
DELIVER = "keysentry.monitor.deliver"


class DistributedModeError(RuntimeError):
    """Distributed mode cannot start; the message says what to set."""


def celery_config(settings: Settings, config: MonitorConfig) -> dict[str, Any]:
    """Celery settings of the monitor (what `app.conf` gets)."""
    if not settings.redis_url:
        raise DistributedModeError(
            "distributed mode needs a broker: set KEYSENTRY_REDIS_URL (e.g. redis://127.0.0.1:6379/0); "
            "without it, run the local monitor (`keysentry monitor`)"
        )
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # a batch whose worker died unacknowledged is delivered again after this long
            "visibility_timeout": config.visibility_timeout_s,
            "unacked_restore_interval": config.restore_interval_s,
            "unacked_restore_throttle": 1,
            # every key of this deployment under its prefix: several can share one Redis
            "global_keyprefix": f"{config.key_prefix}:celery:",
        },
        "task_default_queue": config.queue,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # at least once: acknowledged after the batch, requeued when its worker process dies
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "enqueue-due": {
                "task": ENQUEUE_DUE,
                "schedule": config.beat_s,
                "options": {"expires": config.beat_s * 4},
            }
        },
        "timezone": "UTC",
    }


class _MonitorCelery(Celery):  # type: ignore[misc]  # celery is untyped
    def on_configure(self) -> None:
        """Read the settings when the configuration is first used (a method, not the signal:
        the signal would log a missing broker and carry on with Celery's defaults)."""
        from keysentry.monitor.service import MonitorConfig
        from keysentry.settings import load_settings

        self.conf.update(celery_config(load_settings(), MonitorConfig()))


app = _MonitorCelery("keysentry", set_as_current=False)


# -- one event loop and runtime per worker process ---------------------------------------------------


class _Process:
    """The worker process's event loop and monitor, made on its first task (after any fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.monitor: Monitor | None = None

    def run(self, work: Callable[[Monitor], Awaitable[T]]) -> T:
        if self.pid != os.getpid():  # inherited through a fork: the parent's loop is not ours
            self.__init__()  # type: ignore[misc]
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(self._run(work))

    async def _run(self, work: Callable[[Monitor], Awaitable[T]]) -> T:
        if self.monitor is None:
            from keysentry.monitor.scheduler import Monitor
            from keysentry.monitor.service import MonitorConfig, MonitorRuntime
            from keysentry.settings import load_settings

            self.monitor = Monitor(await MonitorRuntime.open(load_settings(), MonitorConfig()))
        return await work(self.monitor)

    def close(self) -> None:
        if self.loop is None or self.pid != os.getpid():
            return
        if self.monitor is not None:
            self.loop.run_until_complete(self.monitor.rt.close())
            self.monitor = None
        self.loop.close()
        self.loop = None


_process = _Process()


def _close(**_: Any) -> None:
    _process.close()


def _preload(**_: Any) -> None:
    """Import the heavy modules in the worker's main process, before its pool forks: every
    child shares them instead of importing them again on its first batch."""
    import importlib

    from keysentry.diagnosis.engine import ADAPTERS

    for name in (
        "keysentry.monitor.scheduler",
        "keysentry.monitor.service",
        "keysentry.monitor.budget",
        "keysentry.monitor.delivery",
        "keysentry.store.migrate",
        "sqlalchemy.dialects.postgresql.asyncpg",
        "sqlalchemy.dialects.sqlite.aiosqlite",
        "limits.aio.storage",
        *(target.partition(":")[0] for target in ADAPTERS.values()),
    ):
        importlib.import_module(name)


signals.worker_init.connect(_preload)


signals.worker_process_shutdown.connect(_close)
signals.worker_shutdown.connect(_close)


# -- tasks ---------------------------------------------------------------------------------------------


# Tasks are registered by call, not decorator: celery publishes no type information.


def _enqueue_due() -> dict[str, int]:
    """Claim due batches and deliveries and send them to the workers (the beat task)."""
    return _process.run(_enqueue)


async def _enqueue(monitor: Monitor) -> dict[str, int]:
    config = monitor.config
    room = config.max_queued_batches - _backlog(config.queue)
    batches = deliveries = 0
    while batches < room:
        claim = await monitor.claim()
        if claim is None:
            break
        check_batch.apply_async((list(claim.ids), claim.lease_until.isoformat()), queue=config.queue)
        batches += 1
    while True:
        claim = await monitor.claim_deliveries()
        if claim is None:
            break
        deliver.apply_async(([int(i) for i in claim.ids], claim.lease_until.isoformat()), queue=config.queue)
        deliveries += 1
    return {"batches": batches, "deliveries": deliveries}


def _backlog(queue: str) -> int:
    """Messages waiting in the broker for the monitor's queue."""
    with app.connection_for_write() as conn:
        # Declared (not passively): before the first worker binds it, the queue does not exist yet.
        declared = conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
        return int(declared.message_count)


def _check_batch(ids: list[str], lease_until: str) -> dict[str, int]:
    """Check one claimed batch (run again after a worker's death: recorded rows are skipped)."""
    lease = datetime.fromisoformat(lease_until)
    report = _process.run(lambda m: m.check_batch(ids, lease))
    return asdict(report)


def _deliver(ids: list[int], lease_until: str) -> int:
    """Attempt claimed webhook deliveries once each (failures are retried as new pending attempts)."""
    from keysentry.store.monitoring import Claim

    lease = datetime.fromisoformat(lease_until)
    return _process.run(lambda m: m.deliver(Claim(lease, tuple(ids), ())))


enqueue_due: Any = app.task(name=ENQUEUE_DUE, ignore_result=True)(_enqueue_due)
check_batch: Any = app.task(name=CHECK_BATCH, ignore_result=True)(_check_batch)
deliver: Any = app.task(name=DELIVER, ignore_result=True)(_deliver)
