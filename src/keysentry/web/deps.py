"""The web page's shared state and the dependencies every route names: who is signed in, CSRF, and
the connection a URL names (loaded for this tenant only: another tenant's id is a plain 404).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException
from starlette.datastructures import FormData
from starlette.requests import Request

from keysentry.store.records import ConnectionRecord
from keysentry.web.render import Pages
from keysentry.web.session import (
    COOKIE_NAME,
    CSRF_FIELD,
    CSRF_HEADER,
    MAX_TOKEN_CHARS,
    Session,
    SessionCodec,
    cross_site,
)

if TYPE_CHECKING:
    from keysentry.connections import ConnectionService
    from keysentry.settings import Settings

log = logging.getLogger("keysentry.web")

Authenticate = Callable[[str], Awaitable[str | None]]
STATE_KEY = "keysentry_web"
MAX_ID_CHARS = 64
ACTOR = "web"


@dataclass
class WebContext:
    service: ConnectionService
    authenticate: Authenticate
    settings: Settings
    codec: SessionCodec
    pages: Pages
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def egress_ips(self) -> tuple[str, ...]:
        return self.settings.egress_ip_list


def web_context(request: Request) -> WebContext:
    ctx: WebContext = getattr(request.app.state, STATE_KEY)
    return ctx


Ctx = Annotated[WebContext, Depends(web_context)]


class NotSignedIn(Exception):
    """No valid session: pages redirect to the sign-in form, scripts get 401."""

    def __init__(self, *, revoked: bool = False) -> None:
        super().__init__("not signed in")
        self.revoked = revoked


class Forbidden(Exception):
    """A POST without its session's CSRF token, or sent from another site."""


class NotFound(Exception):
    """No such connection for this tenant (or no such page)."""


@dataclass(frozen=True, slots=True, repr=False)
class Visitor:
    """A signed-in browser: its tenant and its session (the token inside is never shown)."""

    tenant: str
    session: Session

    def __repr__(self) -> str:
        return f"Visitor(tenant={self.tenant!r})"


def open_session(request: Request, ctx: WebContext) -> Session | None:
    return ctx.codec.open(request.cookies.get(COOKIE_NAME))


async def visitor(request: Request, ctx: Ctx) -> Visitor:
    session = open_session(request, ctx)
    if session is None or session.token is None:
        raise NotSignedIn()
    if len(session.token) > MAX_TOKEN_CHARS:
        raise NotSignedIn(revoked=True)
    tenant = await ctx.authenticate(session.token)
    if tenant is None:
        raise NotSignedIn(revoked=True)
    return Visitor(tenant, session)


SignedIn = Annotated[Visitor, Depends(visitor)]


async def read_form(request: Request) -> FormData:
    try:
        return await request.form(max_files=0, max_fields=50, max_part_size=64 * 1024)
    except Exception as e:  # malformed bodies: a clear 400, never a traceback
        raise HTTPException(400, "the form could not be read; reload the page and try again") from e


def check_post(request: Request, ctx: WebContext, session: Session | None, form: FormData | None) -> None:
    """Refuse a POST from another site or without the CSRF token of this very session."""
    if cross_site(request):
        raise Forbidden()
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and form is not None:
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not ctx.codec.csrf_ok(session, presented):
        raise Forbidden()


async def posted(request: Request, ctx: Ctx, who: SignedIn) -> FormData:
    """The form of a signed-in POST, after the CSRF and origin checks."""
    form = await read_form(request)
    check_post(request, ctx, who.session, form)
    return form


Posted = Annotated[FormData, Depends(posted)]


async def connection(connection_id: str, ctx: Ctx, who: SignedIn) -> ConnectionRecord:
    from keysentry.connections import ConnectionNotFound

    if len(connection_id) > MAX_ID_CHARS:
        raise NotFound()
    try:
        return await ctx.service.get(who.tenant, connection_id)
    except ConnectionNotFound:
        raise NotFound() from None


Connection = Annotated[ConnectionRecord, Depends(connection)]


def text_field(form: FormData, name: str, *, limit: int = 1024) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value[:limit]


def form_flag(form: FormData, name: str) -> bool:
    return text_field(form, name, limit=8).lower() in {"1", "true", "on", "yes"}


def describe(error: BaseException) -> dict[str, Any]:
    """What an operator's log line may say about an error: its type and its (secret-free) message."""
    return {"error": type(error).__name__, "message": str(error)[:300]}
