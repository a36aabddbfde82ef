"""Prometheus metrics of the API, exposed at /metrics together with the monitor's.

Labels come from closed sets only: route templates (`/v1/connections/{connection_id}`, never a
real id), methods, status codes, rate-limited actions and failure reasons. No tenant, no token,
no key and no free text can become a label. Checks the API makes (diagnose, add, update,
refresh) are counted in the monitor's `keysentry_checks` by exchange and status, so one
dashboard sees every check whoever made it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from keysentry.domain import Diagnosis
from keysentry.monitor.metrics import MonitorMetrics

__all__ = ["ApiMetrics"]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_AUTH_FAILURES = frozenset({"missing", "unknown", "forbidden"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    """The API's counters on a registry of its own, and the monitor's metrics beside them."""

    def __init__(self, monitor: MonitorMetrics | None = None, *, namespace: str = "keysentry") -> None:
        self.monitor = monitor or MonitorMetrics(namespace=namespace)
        self.registry = CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.requests = Counter(
            "api_requests", "API requests by route template, method and status code",
            ["route", "method", "status"], namespace=ns, registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "api_request_duration_seconds", "API request duration by route template", ["route"],
            namespace=ns, registry=r, buckets=_BUCKETS,
        )  # fmt: skip
        self.rate_limited = Counter(
            "api_rate_limited", "Requests refused by a per-tenant rate limit", ["action"], namespace=ns, registry=r
        )  # fmt: skip
        self.auth_failures = Counter(
            "api_auth_failures", "Requests refused for their token: missing, unknown or forbidden",
            ["reason"], namespace=ns, registry=r,
        )  # fmt: skip

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route).observe(max(0.0, seconds))

    def limited(self, action: str) -> None:
        self.rate_limited.labels(action).inc()

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason if reason in _AUTH_FAILURES else "other").inc()

    def check(self, diagnosis: Diagnosis) -> None:
        latency = (diagnosis.latency_ms or 0.0) / 1000
        self.monitor.record_check(diagnosis.exchange, diagnosis.status, latency)

    def render(self) -> bytes:
        return generate_latest(self.registry) + self.monitor.render()
