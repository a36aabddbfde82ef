"""Rendering pages and fragments: one Jinja2 environment, security headers, and the session cookie.

A request sent by the page's own script carries `X-KS-Fragment` (card, guide, result): it gets
the piece of HTML it swaps in, not the whole page. Every other request gets a full page, so
each action also works without JavaScript.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from keysentry.web.session import CSRF_FIELD, Session, SessionCodec

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
ASSETS_PATH = "/assets"
FRAGMENT_HEADER = "x-ks-fragment"

# No inline script or style anywhere: the page's own files only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secure_request(request: Request) -> bool:
    """Served over https (directly, or behind a proxy uvicorn trusts for X-Forwarded-Proto)."""
    return request.url.scheme == "https"


def fragment(request: Request) -> str | None:
    value = request.headers.get(FRAGMENT_HEADER)
    return value.strip().lower() if value else None


def _asset_version(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


class Pages:
    """The templates, and how a response gets its headers and cookie."""

    def __init__(self, codec: SessionCodec) -> None:
        self.codec = codec
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html"], default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # File hashes in the URLs: a new release is never served stale files from a cache.
        self.env.globals["asset"] = {
            name: f"{ASSETS_PATH}/{name}?v={_asset_version(name)}" for name in ("app.css", "app.js")
        }
        self.env.globals["csrf_field"] = CSRF_FIELD

    def html(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        session: Session | None,
        status: int = 200,
        signed_in: bool = False,
    ) -> HTMLResponse:
        flash = session.flash if session is not None else None
        if session is not None and flash:
            session = session.with_flash(None)  # shown once
        values = {
            "request_path": request.url.path,
            "csrf_token": self.codec.csrf_token(session) if session is not None else "",
            "signed_in": signed_in,
            "flash": flash,
            **context,
        }
        body = self.env.get_template(template).render(values)
        response = HTMLResponse(body, status_code=status)
        self.finish(request, response, session)
        return response

    def redirect(self, request: Request, url: str, *, session: Session | None = None) -> RedirectResponse:
        response = RedirectResponse(url, status_code=303)
        self.finish(request, response, session)
        return response

    def finish(self, request: Request, response: Response, session: Session | None) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if session is not None and session.changed:
            self.codec.set_cookie(response, session, secure=secure_request(request))
