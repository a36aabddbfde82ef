"""The REST API for platforms: FastAPI under /v1, multi-tenant, on the connection lifecycle.

    app = create_app(load_settings())        # what `keysentry serve` runs (keysentry.api.server)

Rooms: app (the factory), deps (who is calling, the tenant-scoped connection loader), problems
(RFC 9457 errors), schemas (request and response models; none can carry a secret), routes (one
module per resource), tokens (API tokens and the admin token), limits (per-tenant rate limits),
guards (body size, the catch-all), metrics, runtime (the store, vault and engine of one process),
server (uvicorn). docs/api.md documents every endpoint.

FastAPI is imported on first use of `create_app`, so `import keysentry.api` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keysentry.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from keysentry.api.app import create_app

        return create_app
    raise AttributeError(f"module 'keysentry.api' has no attribute {name!r}")
