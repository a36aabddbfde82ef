"""`keysentry monitor`, `keysentry worker` and `keysentry beat`: the monitor's commands.

- `monitor`: the local scheduler in this process (SQLite or PostgreSQL; no broker). Re-checks
  due connections within the rate budgets and delivers webhook events until Ctrl-C or SIGTERM;
  `--once` checks what is due now, delivers, and exits (for cron).
- `worker`: a Celery worker of distributed mode (KEYSENTRY_REDIS_URL names the broker).
- `beat`: the Celery beat that enqueues due batches; run exactly one per deployment.

Each function takes the command's options as plain values and returns the exit code (0 ok,
2 failure, 3 usage or configuration error); cli.py only wires typer to them. No traceback
reaches the user: expected failures print one sentence on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keysentry.monitor.scheduler import Monitor
    from keysentry.monitor.service import MonitorConfig, MonitorRuntime
    from keysentry.settings import Settings

__all__ = ["beat", "monitor", "worker"]

OK, FAILED, USAGE = 0, 2, 3


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _guarded(body: Callable[[], int]) -> int:
    """Run a command; every expected failure becomes its sentence and exit code."""
    from pydantic import ValidationError

    from keysentry.store.errors import DatabaseConfigError, StoreError
    from keysentry.vault import VaultError, VaultSealed

    try:
        return body()
    except ValidationError as e:  # KEYSENTRY_* settings: name the variable, never repeat the value
        from keysentry.settings import settings_problem

        _say(f"keysentry: invalid setting: {settings_problem(e)}")
        return USAGE
    except (DatabaseConfigError, VaultSealed) as e:
        _say(f"keysentry: {e}")
        return USAGE
    except (StoreError, VaultError) as e:
        _say(f"keysentry: {e}")
        return FAILED
    except ValueError as e:  # operator configuration (profiles file, broker URL)
        _say(f"keysentry: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return USAGE
    except KeyboardInterrupt:
        return OK


# -- local mode ----------------------------------------------------------------------------------------


def monitor(*, once: bool = False, metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> int:
    """Run the local monitor until interrupted (or, with `once`, until nothing is due)."""

    def body() -> int:
        from keysentry.monitor.service import MonitorConfig
        from keysentry.process import tune_collector
        from keysentry.settings import load_settings

        settings, config = load_settings(), MonitorConfig()
        tune_collector(settings.gc_threshold)
        return asyncio.run(
            _monitor(settings, config, once=once, metrics_port=metrics_port, host=metrics_host)
        )

    return _guarded(body)


async def _monitor(
    settings: Settings, config: MonitorConfig, *, once: bool, metrics_port: int | None, host: str
) -> int:
    from keysentry.monitor.scheduler import Monitor
    from keysentry.monitor.service import MonitorRuntime

    runtime = await MonitorRuntime.open(settings, config)
    try:
        if metrics_port is not None:
            _serve_metrics(runtime, host, metrics_port)
        mode = "shared in Redis" if settings.redis_url else "in this process"
        _say(
            f"keysentry monitor: watching {runtime.db.display_url}, healthy keys every "
            f"{config.interval_hours:g} h, rate budgets {mode}" + ("" if once else "; Ctrl-C stops")
        )
        work = Monitor(runtime)
        if once:
            checked = await _sweep_once(work)
            _say(f"keysentry monitor: {checked} connection(s) checked")
            return OK
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await work.run(stop)
        _say("keysentry monitor: stopped")
        return OK
    finally:
        await runtime.close()


async def _sweep_once(work: Monitor) -> int:
    checked = 0
    while (claim := await work.claim()) is not None:
        checked += (await work.check_batch(claim.ids, claim.lease_until)).checked
    while (due := await work.claim_deliveries()) is not None:
        await work.deliver(due)
    return checked


def _serve_metrics(runtime: MonitorRuntime, host: str, port: int) -> None:
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=runtime.metrics.registry)
    runtime.metrics.served = True  # now the run loop measures the backlog gauges too


# -- distributed mode ----------------------------------------------------------------------------------


def worker(
    *,
    concurrency: int = 2,
    pool: str = "prefork",
    loglevel: str = "INFO",
    hostname: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    """A Celery worker (distributed mode): checks the batches the beat enqueues.

    With `metrics_port`, the worker serves the Prometheus metrics of all its pool processes
    (celery_app.py reads them from KEYSENTRY_MONITOR_METRICS_PORT/_HOST, set here, so that
    `celery -A keysentry.monitor.celery_app worker` with those variables does the same)."""
    argv = ["worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if metrics_port is not None:
        os.environ["KEYSENTRY_MONITOR_METRICS_PORT"] = str(metrics_port)
        os.environ["KEYSENTRY_MONITOR_METRICS_HOST"] = metrics_host
    return _celery(argv)


def beat(*, schedule_file: Path | None = None, loglevel: str = "INFO") -> int:
    """The Celery beat (distributed mode): enqueues due batches; run exactly one."""
    argv = ["beat", f"--loglevel={loglevel}"]
    if schedule_file is not None:
        argv.append(f"--schedule={schedule_file}")
    return _celery(argv)


def _celery(argv: list[str]) -> int:
    def body() -> int:
        from keysentry.monitor.celery_app import DistributedModeError, app, metrics_config

        try:
            _ = app.conf.broker_url  # configure now: a missing broker is one sentence, not a traceback
            metrics_config()  # a bad metrics setting too
        except DistributedModeError as e:
            _say(f"keysentry: {e}")
            return USAGE
        try:
            code = app.start(argv)
        except SystemExit as e:
            return int(e.code) if isinstance(e.code, int) else OK
        return int(code or OK)

    return _guarded(body)
