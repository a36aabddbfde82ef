"""Prometheus metrics of the monitor, on a registry of its own (exposed by the API or a worker).

Label values come from closed sets only (known exchanges, contract statuses, event types):
anything else is counted as "other", so neither a secret nor a tenant's free text can ever
reach a label, and a label cannot grow without bound.

A Celery worker's pool processes run prometheus_client in multiprocess mode (celery_app.py):
each process writes its values to files under PROMETHEUS_MULTIPROC_DIR, and the worker's
/metrics serves `multiprocess_registry(dir)`, which sums them. The same MonitorMetrics code
records in both modes; gauges say how to combine processes (`mostrecent`: the latest value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from keysentry.domain import Status
from keysentry.monitor.events import EventType
from keysentry.settings import EXCHANGES

__all__ = ["OTHER", "MonitorMetrics"]

OTHER = "other"
_OUTCOMES = frozenset({s.value for s in Status} | {"failed"})  # failed: the check itself crashed
_EVENT_TYPES = frozenset(t.value for t in EventType)
# Exchange round trips take tens of ms to the request timeout; waits and lags reach minutes.
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
_LAG_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class MonitorMetrics:
    """The monitor's counters and histograms. One instance per process; `render()` is the exposition."""

    def __init__(self, *, exchanges: tuple[str, ...] = EXCHANGES, namespace: str = "keysentry") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._exchanges = frozenset(exchanges)
        self._namespace = namespace
        self._backlog: tuple[Gauge, Gauge] | None = None  # made by the first record_backlog
        # Set by whoever exposes this registry (`keysentry monitor --metrics-port`): the local
        # monitor only spends queries on the backlog gauges when someone can read them.
        self.served = False
        r, ns = self.registry, namespace
        self.checks = Counter(
            "checks",
            "Key checks by exchange and outcome (the status)",
            ["exchange", "outcome"],
            namespace=ns,
            registry=r,
        )
        self.check_latency = Histogram(
            "check_latency_seconds", "Duration of one key check", ["exchange"], namespace=ns, registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.ratelimit_wait = Histogram(
            "ratelimit_wait_seconds", "Time spent waiting for rate budget before a check", ["exchange"],
            namespace=ns, registry=r, buckets=_WAIT_BUCKETS,
        )  # fmt: skip
        self.rejections = Counter(
            "exchange_rejections", "Answers telling us to slow down (429) or banning our address (418)",
            ["exchange", "kind"], namespace=ns, registry=r,
        )  # fmt: skip
        self.due_lag = Histogram(
            "due_lag_seconds", "How late a due check started after its next_check_at", namespace=ns, registry=r,
            buckets=_LAG_BUCKETS,
        )  # fmt: skip
        self.events_delivered = Counter(
            "events_delivered", "Webhook events delivered (2xx)", ["type"], namespace=ns, registry=r
        )
        self.events_failed = Counter(
            "events_failed",
            "Webhook events given up after the last retry",
            ["type"],
            namespace=ns,
            registry=r,
        )

    # -- recording --------------------------------------------------------------------------------

    def record_check(self, exchange: str, outcome: Status | str, latency_s: float) -> None:
        label = self._exchange(exchange)
        value = outcome.value if isinstance(outcome, Status) else outcome
        self.checks.labels(label, value if value in _OUTCOMES else OTHER).inc()
        self.check_latency.labels(label).observe(max(0.0, latency_s))

    def record_wait(self, exchange: str, waited_s: float) -> None:
        self.ratelimit_wait.labels(self._exchange(exchange)).observe(max(0.0, waited_s))

    def record_rejection(self, exchange: str, kind: Literal["429", "418"]) -> None:
        """429: told to slow down; 418: our address is banned (Binance's 418, Bybit's 403 ban alike)."""
        self.rejections.labels(self._exchange(exchange), kind if kind in ("429", "418") else OTHER).inc()

    def record_due_lag(self, lag_s: float) -> None:
        self.due_lag.observe(max(0.0, lag_s))

    def record_backlog(self, due: int, oldest_s: float) -> None:
        """Due connections not yet claimed, and how long the oldest has been due (measured by
        `Monitor.record_backlog`: after each enqueue task in distributed mode, every
        BACKLOG_EVERY_S in a local monitor that serves its metrics). Registered on first use, so a
        process that never measures the backlog does not show a misleading zero."""
        if self._backlog is None:
            r, ns = self.registry, self._namespace
            self._backlog = (
                Gauge(
                    "due_unclaimed", "Due connections the last claiming round left unclaimed (counted up to a cap)",
                    namespace=ns, registry=r, multiprocess_mode="mostrecent",
                ),
                Gauge(
                    "due_oldest_seconds", "How long the oldest unclaimed due connection has been due",
                    namespace=ns, registry=r, multiprocess_mode="mostrecent",
                ),
            )  # fmt: skip
        unclaimed, oldest = self._backlog
        unclaimed.set(max(0, due))
        oldest.set(max(0.0, oldest_s))

    def record_delivery(self, event_type: EventType | str, *, delivered: bool) -> None:
        value = event_type.value if isinstance(event_type, EventType) else event_type
        counter = self.events_delivered if delivered else self.events_failed
        counter.labels(value if value in _EVENT_TYPES else OTHER).inc()

    def render(self) -> bytes:
        """The text exposition format, for a /metrics endpoint."""
        return generate_latest(self.registry)

    def _exchange(self, exchange: str) -> str:
        return exchange if exchange in self._exchanges else OTHER


def multiprocess_registry(path: Path | str) -> CollectorRegistry:
    """A registry summing what every process wrote under `path` (prometheus_client's multiprocess
    mode): counters and histograms added up, those of exited processes included."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return registry
