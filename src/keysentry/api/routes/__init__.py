"""One module per resource; `ROUTERS` is the order they are mounted in."""

from __future__ import annotations

from fastapi import APIRouter

from keysentry.api.routes import connections, diagnose, exchanges, health, statuses, tenants, webhooks

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    exchanges.router,
    statuses.router,
    diagnose.router,
    connections.router,
    webhooks.router,
    tenants.router,
)
