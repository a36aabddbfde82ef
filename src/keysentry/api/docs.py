"""/docs: Swagger UI served by the service itself, so the page works on a host without internet access.

FastAPI's own /docs page loads Swagger UI's script and stylesheet from a CDN: on an air-gapped
host it is blank. Here the page is still FastAPI's (`get_swagger_ui_html`, same URLs as before:
/docs, /openapi.json, /docs/oauth2-redirect), but its files come from the fastapi-offline package
(a dependency, installed with keysentry; nothing of it is copied here) under /docs/static. Swagger
UI's online validator is off (its badge would send the document's URL to validator.swagger.io),
and a Content-Security-Policy lets the page load and call nothing but this service: 'self' for
files and requests, and the page's inline script by its hash."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_STATIC", "DOCS_URL", "OAUTH2_REDIRECT_URL", "install"]

DOCS_URL = "/docs"
DOCS_STATIC = "/docs/static"  # Swagger UI's JavaScript, stylesheet and icon
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_PACKAGE = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, favicon.png

# Swagger UI's defaults that would reach beyond this service: the online validator (its badge, in
# layouts that show one, is an image from validator.swagger.io on any host but localhost).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def csp(html: str) -> str:
    """The page's Content-Security-Policy: this service only, plus each inline script by hash."""
    hashes = " ".join(f"'sha256-{_sha256(script)}'" for script in _INLINE_SCRIPT.findall(html))
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def _secured(page: HTMLResponse) -> HTMLResponse:
    html = bytes(page.body).decode()
    headers: Mapping[str, str] = {
        "Content-Security-Policy": csp(html),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }
    page.headers.update(headers)
    return page


def install(app: FastAPI) -> None:
    """Serve /docs, /docs/oauth2-redirect and /docs/static on `app` (made with docs_url=None)."""
    app.mount(DOCS_STATIC, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-static")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _secured(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
                swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _secured(get_swagger_ui_oauth2_redirect_html())
