"""The OpenAPI document: problem responses declared per route, served as application/problem+json.

`problem_responses(401, 404, ...)` declares which problems a route answers; `openapi(app)` builds
the document with every error response as application/problem+json (FastAPI would call them
application/json) and a 500 on every operation (the catch-all's answer, which should never be
seen). docs/openapi.json is this document, committed; `python -m keysentry.api.spec` prints it
and a test fails when the two drift apart.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from keysentry import __version__

_DESCRIPTIONS = {
    400: "The request cannot be read",
    401: "No token, or an unknown or revoked one",
    403: "The token may not use this route",
    404: "Not found (also: another tenant's connection or webhook)",
    409: "Conflict with what is stored",
    413: "Request body too large",
    422: "Invalid request, or a key that failed its check",
    429: "Rate limit of the tenant reached; Retry-After says when to retry",
    500: "Internal error (a bug; logged without details)",
    503: "The database or the key vault is unavailable",
}

TITLE = "keysentry"
SUMMARY = "Connect exchange accounts by API key, know exactly why a key is refused, keep keys safe."
DESCRIPTION = (
    "The REST API of keysentry for platforms: the backend of a “My Exchanges” page and of bots' "
    "pre-flight checks. Every /v1 route takes `Authorization: Bearer <token>`: a tenant API token, or "
    "the admin token for /v1/tenants. Errors are RFC 9457 problem details "
    "(`application/problem+json`) with a stable `type` per cause. docs/api.md has a curl example for "
    "every endpoint."
)


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    from keysentry.api.problems import Problem

    return {code: {"model": Problem, "description": _DESCRIPTIONS.get(code, "Problem")} for code in codes}


def openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=TITLE,
        version=__version__,
        summary=SUMMARY,
        description=DESCRIPTION,
        routes=app.routes,
        tags=[
            {"name": "connections", "description": "Stored exchange connections of the calling tenant"},
            {
                "name": "webhooks",
                "description": (
                    "The calling tenant's webhook endpoints: signed events when a connection changes "
                    "(docs/webhooks.md has the events and the signature scheme)"
                ),
            },
            {"name": "checks", "description": "Checks that store nothing, and the status contract"},
            {"name": "tenants", "description": "Tenants and their API tokens (admin token)"},
            {"name": "operations", "description": "Health, readiness and metrics"},
        ],
    )
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault(
                "500",
                {
                    "description": _DESCRIPTIONS[500],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            )
            for code, answer in responses.items():
                content = answer.get("content", {})
                if code.isdigit() and int(code) >= 400 and "application/json" in content:
                    content["application/problem+json"] = content.pop("application/json")
    app.openapi_schema = schema
    return schema


def render(app: FastAPI) -> str:
    return json.dumps(openapi(app), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main() -> None:
    """Print the document of the app `keysentry serve` runs (built on a throwaway store)."""
    import tempfile

    from keysentry.api.app import create_app
    from keysentry.api.runtime import database
    from keysentry.connections import ConnectionService
    from keysentry.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=folder, database_url=None, admin_token=None)
        service = ConnectionService(database(settings), vault=None, engine=None)
        sys.stdout.write(render(create_app(settings, service=service)))


if __name__ == "__main__":
    main()
