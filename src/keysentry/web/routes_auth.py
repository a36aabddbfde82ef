"""Signing in with a tenant token, signing out, and where "/" leads."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from keysentry.web.deps import (
    Ctx,
    Forbidden,
    NotSignedIn,
    check_post,
    open_session,
    read_form,
    text_field,
    visitor,
)
from keysentry.web.session import MAX_TOKEN_CHARS

router = APIRouter(include_in_schema=False)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this page only (never another site)."""
    if value and value.startswith("/connections") and not value.startswith("//") and "\\" not in value:
        return value[:300]
    return "/connections"


async def _signed_in(request: Request, ctx: Ctx) -> bool:
    try:
        await visitor(request, ctx)
    except NotSignedIn:
        return False
    return True


@router.get("/")
async def home(request: Request, ctx: Ctx) -> Response:
    target = "/connections" if await _signed_in(request, ctx) else "/login"
    return ctx.pages.redirect(request, target)


@router.get("/login")
async def login_form(request: Request, ctx: Ctx, next: str | None = None) -> Response:
    if await _signed_in(request, ctx):
        return ctx.pages.redirect(request, safe_next(next))
    session = open_session(request, ctx) or ctx.codec.new()
    return ctx.pages.html(
        request, "login.html", {"next": safe_next(next), "error": None, "title": "Sign in"}, session=session
    )


@router.post("/login")
async def login(request: Request, ctx: Ctx) -> Response:
    form = await read_form(request)
    session = open_session(request, ctx)
    try:
        check_post(request, ctx, session, form)
    except Forbidden:
        # an expired or missing session on the sign-in form: show it again with a fresh one
        fresh = ctx.codec.new()
        error = "The sign-in form had expired. Paste your token again."
        context = {"next": safe_next(text_field(form, "next")), "error": error, "title": "Sign in"}
        return ctx.pages.html(request, "login.html", context, session=fresh, status=403)
    token = text_field(form, "token", limit=MAX_TOKEN_CHARS + 1).strip()
    target = safe_next(text_field(form, "next"))
    tenant = await ctx.authenticate(token) if token and len(token) <= MAX_TOKEN_CHARS else None
    if tenant is None:
        error = (
            "Paste your access token to sign in."
            if not token
            else "This token is not valid: it may have been mistyped, revoked or replaced. "
            "Paste it again, or ask whoever runs keysentry for a new one."
        )
        assert session is not None  # check_post passed, so there is a session
        context = {"next": target, "error": error, "title": "Sign in"}
        return ctx.pages.html(request, "login.html", context, session=session, status=401)
    # A new session id on sign-in: an id planted before it (session fixation) is worth nothing.
    return ctx.pages.redirect(request, target, session=ctx.codec.new(token))


@router.post("/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    form = await read_form(request)
    check_post(request, ctx, open_session(request, ctx), form)
    return ctx.pages.redirect(request, "/login", session=ctx.codec.new().with_flash("You are signed out."))
