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

Metrics (`keysentry worker --metrics-port`, KEYSENTRY_MONITOR_METRICS_PORT): the prefork pool
checks batches in child processes, so the worker uses prometheus_client's multiprocess mode.
Before the pool forks, the main process points PROMETHEUS_MULTIPROC_DIR at a directory of its
own (a fresh temporary one, or the operator's, emptied) and serves /metrics from there with a
MultiProcessCollector: every pool process writes its counters to its own file, and a scrape
sums the files, those of pool processes that have since exited included (mark_process_dead
runs on worker_process_shutdown). The beat only sends the enqueue task; the worker that runs
it measures the due backlog, so the beat serves no metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from celery import Celery, signals  # type: ignore[import-untyped]  # no stubs published
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from keysentry.monitor.scheduler import Monitor
    from keysentry.monitor.service import MonitorConfig
    from keysentry.settings import Settings

__all__ = ["MetricsConfig", "app", "celery_config", "check_batch", "deliver", "enqueue_due", "metrics_config"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ENQUEUE_DUE = "keysentry.monitor.enqueue_due"
CHECK_BATCH = "keysentry.monitor.check_batch"
DELIVER = "keysentry.monitor.deliver"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode


class DistributedModeError(RuntimeError):
    """Distributed mode cannot start; the message says what to set."""


class MetricsConfig(BaseSettings):
    """Where a worker serves Prometheus metrics (`KEYSENTRY_MONITOR_METRICS_*`, or
    `keysentry worker --metrics-port/--metrics-host`); no port: no metrics."""

    model_config = SettingsConfigDict(
        env_prefix="KEYSENTRY_MONITOR_METRICS_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    port: int | None = Field(None, ge=0, le=65535)  # 0: a free port, logged on start
    host: str = "127.0.0.1"


def metrics_config() -> MetricsConfig:
    """The worker's metrics settings; ValueError naming the variable when one is wrong."""
    try:
        return MetricsConfig()
    except ValidationError as e:
        names = sorted({f"KEYSENTRY_MONITOR_METRICS_{err['loc'][0]}".upper() for err in e.errors()})
        raise ValueError(f"invalid setting {', '.join(names)}: expected a port number, 0 to 65535") from None


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
            from keysentry.process import tune_collector
            from keysentry.settings import load_settings

            settings = load_settings()
            tune_collector(settings.gc_threshold)  # in the pool process, where checks run
            self.monitor = Monitor(await MonitorRuntime.open(settings, MonitorConfig()))
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


class _WorkerMetrics:
    """prometheus_client's multiprocess mode for a worker: the main process serves what every pool
    process writes under PROMETHEUS_MULTIPROC_DIR (see the module's docstring)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.server: WSGIServer | None = None
        self.owned: Path | None = None  # a temporary directory this worker made, removed on shutdown
        self.url = ""
        self.enabled = False  # serving: pool processes (forked from here) write to the directory

    def start(self, **_: Any) -> None:
        """worker_init, in the main process before the pool forks (and before `_preload` imports
        prometheus_client, which picks its value class from the environment when first imported)."""
        try:
            config = metrics_config()
        except ValueError as e:
            _exit(str(e))
        if config.port is None:
            return
        path = self._directory()
        from prometheus_client import start_http_server, values

        # In case something imported prometheus_client before the variable was set.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        from keysentry.monitor.metrics import multiprocess_registry

        try:
            self.server, _thread = start_http_server(
                config.port, addr=config.host, registry=multiprocess_registry(path)
            )
        except OSError as e:
            self.stop()
            _exit(f"cannot serve metrics on {config.host} port {config.port}: {e.strerror or e}")
        self.pid, self.enabled = os.getpid(), True
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.url = f"http://{host}:{self.server.server_port}/metrics"

    def ready(self, **_: Any) -> None:
        """worker_ready: say where the metrics are (logging is set up by now)."""
        if self.server is not None:
            log.info(
                "metrics of this worker and its pool processes on %s (files in %s)",
                self.url,
                os.environ.get(MULTIPROC_DIR),
            )

    def child_started(self, **_: Any) -> None:
        """worker_process_init: a forked pool process closes its copy of the listening socket."""
        if self.server is not None and self.pid != os.getpid():
            self.server.server_close()
            self.server = None
            self.owned = None  # the main process removes it

    def child_exited(self, pid: int | None = None, **_: Any) -> None:
        """worker_process_shutdown: the live gauges of the exiting pool process stop counting."""
        if self.enabled:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]

    def stop(self, **_: Any) -> None:
        """worker_shutdown: stop serving and remove the temporary directory."""
        if self.pid != os.getpid():
            return
        self.enabled = False
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.owned is not None:
            shutil.rmtree(self.owned, ignore_errors=True)
            self.owned = None

    def _directory(self) -> Path:
        given = os.environ.get(MULTIPROC_DIR)
        if not given:
            remove_orphaned_metrics_dirs(Path(tempfile.gettempdir()))
            # The pid in the name lets a later worker remove it should this one be SIGKILLed.
            self.owned = Path(tempfile.mkdtemp(prefix=f"{_METRICS_DIR_PREFIX}{self.pid}-"))
            os.environ[MULTIPROC_DIR] = str(self.owned)
            return self.owned
        # The operator's directory (a tmpfs, say): one per worker, emptied as prometheus_client
        # requires, or the counts of an earlier run would be added to this one's.
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path


_METRICS_DIR_PREFIX = "keysentry-metrics-"


def remove_orphaned_metrics_dirs(parent: Path) -> list[Path]:
    """Remove the temporary metrics directories of workers that died without shutting down
    (SIGKILL, OOM): those whose creating process no longer exists. Returns what was removed."""
    removed = []
    for path in parent.glob(f"{_METRICS_DIR_PREFIX}*-*"):
        pid_text = path.name.removeprefix(_METRICS_DIR_PREFIX).partition("-")[0]
        if not pid_text.isdigit() or not path.is_dir() or _alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to judge
        return True
    return True


def _exit(message: str) -> NoReturn:
    """Stop the worker's start with one sentence (logging is not set up yet)."""
    sys.stderr.write(f"keysentry: {message}\n")
    sys.stderr.flush()
    raise SystemExit(3)


_metrics = _WorkerMetrics()

# Metrics first: `_preload` imports prometheus_client, which must see PROMETHEUS_MULTIPROC_DIR.
signals.worker_init.connect(_metrics.start)
signals.worker_init.connect(_preload)
signals.worker_ready.connect(_metrics.ready)
signals.worker_process_init.connect(_metrics.child_started)
signals.worker_process_shutdown.connect(_metrics.child_exited)
signals.worker_shutdown.connect(_metrics.stop)


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
    # What this round left unclaimed; a failed measurement is a warning (its batches are sent already).
    await monitor.record_backlog()
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
