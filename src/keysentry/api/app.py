"""The FastAPI application: `create_app(settings, *, service=None)`.

Without a `service`, the app owns one Runtime for its lifetime (keysentry.api.runtime): the vault
is opened here (a sealed vault refuses to build the app), and the lifespan migrates the database
on start and closes the transport and the pool on shutdown. With a `service` (tests, embedding),
the caller owns those.

The admin token is checked here too: a short or placeholder KEYSENTRY_ADMIN_TOKEN refuses to
build the app. The "My Exchanges" page (keysentry.web) is mounted outside /v1 when it exists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from keysentry import __version__
from keysentry.api import docs, errors, problems, spec
from keysentry.api.config import ApiConfig
from keysentry.api.deps import ApiState, no_unknown_query
from keysentry.api.guards import BodyLimit, Guard
from keysentry.api.limits import RateLimiter
from keysentry.api.metrics import ApiMetrics
from keysentry.api.routes import ROUTERS
from keysentry.api.runtime import Runtime, custom_profiles
from keysentry.api.tokens import AdminToken, authenticate

if TYPE_CHECKING:
    from keysentry.connections import ConnectionService
    from keysentry.monitor.metrics import MonitorMetrics
    from keysentry.settings import Settings
    from keysentry.store.tokens import TokenView

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    service: ConnectionService | None = None,
    config: ApiConfig | None = None,
    limiter: RateLimiter | None = None,
    monitor_metrics: MonitorMetrics | None = None,
) -> FastAPI:
    """The API app. Raises AdminTokenRejected (a weak admin token), VaultSealed (no usable master
    key, when it builds its own runtime) or UsageError (a bad profiles file): refuse to start."""
    config = config or ApiConfig()
    admin = AdminToken(settings.admin_token.get_secret_value()) if settings.admin_token is not None else None
    runtime: Runtime | None = None
    if service is None:
        runtime = Runtime.build(settings)
        service, profiles = runtime.service, runtime.profiles
    else:
        profiles = custom_profiles(settings)
    limiter = limiter or RateLimiter.from_settings(settings, config)
    db, clock = service.db, service.clock

    async def token_of(token: str) -> TokenView | None:
        return await authenticate(db, token, clock())

    state = ApiState(
        settings=settings,
        config=config,
        service=service,
        admin=admin,
        limiter=limiter,
        metrics=ApiMetrics(monitor_metrics),
        profiles=profiles,
        authenticate=token_of,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            await runtime.start()
        try:
            yield
        finally:
            try:
                await limiter.close()
            finally:
                if runtime is not None:
                    await runtime.close()

    app = FastAPI(
        title=spec.TITLE,
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own page loads Swagger UI from a CDN: docs.install serves it here
        redoc_url=None,
        openapi_url="/openapi.json",
        generate_unique_id_function=_operation_id,
    )
    docs.install(app)  # /docs, /docs/oauth2-redirect, /docs/static
    app.state.keysentry = state
    problems.install(app)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(no_unknown_query)])
    app.openapi = lambda: spec.openapi(app)  # type: ignore[method-assign]
    # Added last is outermost: Guard sees everything, including BodyLimit's refusals.
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(Guard, metrics=lambda: state.metrics, static_paths=lambda: _static_paths(app))

    async def tenant_of(token: str) -> str | None:
        found = await token_of(token)
        return found.tenant_id if found is not None else None

    _mount_web(app, service, tenant_of, settings)
    return app


def _operation_id(route: APIRoute) -> str:
    """operationId: the endpoint's name (get_connection, add_connection...), what client generators show."""
    return route.name


def _static_paths(app: FastAPI) -> set[str]:
    """Paths of routes without parameters: each is its own metrics label."""
    from fastapi.routing import iter_route_contexts

    cached: set[str] | None = getattr(app.state, "static_paths", None)
    if cached is None:
        cached = {c.path for c in iter_route_contexts(app.routes) if c.path and "{" not in c.path}
        app.state.static_paths = cached
    return cached


def _mount_web(
    app: FastAPI,
    service: ConnectionService,
    authenticate: Callable[[str], Awaitable[str | None]],
    settings: Settings,
) -> None:
    """Mount the "My Exchanges" page when keysentry.web provides `mount` (it lives outside /v1)."""
    try:
        from keysentry.web import mount  # type: ignore[import-not-found,attr-defined,unused-ignore]
    except ImportError as e:
        if e.name != "keysentry.web":
            raise  # the web package exists but something it needs does not: a real error
        return
    mount(app, service=service, authenticate=authenticate, settings=settings)
