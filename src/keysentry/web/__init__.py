"""The "My Exchanges" web page: sign in with a tenant token, see a card per connection with its
status, open a status's guide, refresh, add, update and remove connections.

Served by the REST API's app (`keysentry serve`): its `create_app` calls `mount`, which adds
the page's routes (outside /v1), its static files under /assets and its error pages. Jinja2
templates, one CSS file and a small hand-written script; no build step. docs/web.md describes
the page, its security and its configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles

from keysentry.web.deps import (
    STATE_KEY,
    Authenticate,
    Forbidden,
    NotFound,
    NotSignedIn,
    WebContext,
    open_session,
)
from keysentry.web.render import ASSETS_PATH, STATIC, Pages, fragment
from keysentry.web.session import SessionCodec, session_key_from_env

if TYPE_CHECKING:
    from keysentry.connections import ConnectionService
    from keysentry.settings import Settings

__all__ = ["mount"]


def mount(
    app: FastAPI,
    *,
    service: ConnectionService,
    authenticate: Authenticate,
    settings: Settings,
    session_key: bytes | None = None,
) -> None:
    """Add the web page to `app`. `authenticate(token)` answers the tenant id of a token, or None.

    `session_key` (32 bytes) seals the session cookies; by default KEYSENTRY_WEB_SESSION_KEY,
    else a random key of this process.
    """
    from keysentry.web import routes_auth, routes_connections, routes_keys

    codec = SessionCodec(session_key if session_key is not None else session_key_from_env())
    ctx = WebContext(
        service=service, authenticate=authenticate, settings=settings, codec=codec, pages=Pages(codec)
    )
    setattr(app.state, STATE_KEY, ctx)
    app.include_router(routes_auth.router)
    # check-field and new before the routes that take a connection id in the same place
    app.include_router(routes_keys.router)
    app.include_router(routes_connections.router)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC), name="keysentry-web-assets")
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(NotFound, _not_found)


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = getattr(request.app.state, STATE_KEY)
    return ctx


def _scripted(request: Request) -> bool:
    return fragment(request) is not None or request.url.path.endswith("/check-field")


async def _not_signed_in(request: Request, error: Exception) -> Response:
    ctx = _ctx(request)
    if _scripted(request):
        return JSONResponse({"error": "signed out", "login": "/login"}, status_code=401)
    session = ctx.codec.new()
    if isinstance(error, NotSignedIn) and error.revoked:
        session = session.with_flash("Your session ended: the token was revoked or replaced. Sign in again.")
    target = "/login"
    if request.method == "GET" and request.url.path.startswith("/connections"):
        from urllib.parse import quote

        target += "?next=" + quote(request.url.path, safe="/")
    return ctx.pages.redirect(request, target, session=session)


async def _forbidden(request: Request, error: Exception) -> Response:
    ctx = _ctx(request)
    message = (
        "This form was out of date or sent from another site, so nothing was done. "
        "Go back, reload the page and try again."
    )
    if _scripted(request):
        return JSONResponse({"error": message}, status_code=403)
    session = open_session(request, ctx)
    context = {"title": "Not done", "heading": "Nothing was done", "message": message}
    return ctx.pages.html(
        request,
        "error.html",
        context,
        session=session,
        status=403,
        signed_in=session is not None and session.token is not None,
    )


async def _not_found(request: Request, error: Exception) -> Response:
    ctx = _ctx(request)
    message = "There is no such connection among yours. It may have been removed."
    if _scripted(request):
        return ctx.pages.html(request, "_gone.html", {"message": message}, session=None, status=404)
    session = open_session(request, ctx)
    context = {"title": "Not found", "heading": "Not found", "message": message}
    return ctx.pages.html(request, "error.html", context, session=session, status=404, signed_in=True)
