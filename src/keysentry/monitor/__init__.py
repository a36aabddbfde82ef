"""The monitor room: re-check policy, rate budgets, events, webhooks and metrics.

- `policy`: when to check a connection again, and the "a temporary issue never flips a key" merge;
- `budget`: rate budgets per exchange, egress IP and account paced evenly (GCRA-style slots, in
  memory or on Redis through one Lua script) so no fixed window of the exchange's clock overflows;
- `events`: the events a change of a connection's known state emits;
- `webhooks`: signing, verifying and delivering events to tenants' endpoints, with a delivery log;
- `metrics`: the monitor's Prometheus metrics.

Submodules are imported where used, not here: budget pulls in redis and webhooks aiohttp, and
the CLI must start fast.
"""

__all__ = ["budget", "events", "metrics", "policy", "webhooks"]
