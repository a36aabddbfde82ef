"""My Exchanges: the cards, a status's guide, Refresh, the history of checks, and removal."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from keysentry.connections import ConnectionChanged, ConnectionNotFound, CredentialsUnreadable
from keysentry.diagnosis.catalog import display_name
from keysentry.domain import Severity
from keysentry.store.errors import StoreError
from keysentry.store.records import ConnectionRecord
from keysentry.vault import VaultError
from keysentry.web import views
from keysentry.web.deps import (
    ACTOR,
    Connection,
    Ctx,
    NotFound,
    Posted,
    SignedIn,
    WebContext,
    describe,
    log,
    text_field,
)
from keysentry.web.render import fragment

router = APIRouter(include_in_schema=False)

SEVERITY_ORDER = {"error": 0, "warning": 1, "unknown": 2, "ok": 3}
FILTERS = {s.value: s for s in (Severity.ERROR, Severity.WARNING, Severity.OK, Severity.UNKNOWN)}
UNAVAILABLE = (
    "keysentry cannot reach its key store right now, so nothing was checked. Try again in a few "
    "minutes; if it lasts, tell whoever runs keysentry (the service log says why)."
)


@router.get("/connections")
async def list_page(request: Request, ctx: Ctx, who: SignedIn, show: str | None = None) -> Response:
    now = ctx.clock()
    records = await ctx.service.list_connections(who.tenant)
    # what needs the user first; within a severity, the order they were connected in
    cards = sorted((views.card(r, now) for r in records), key=lambda c: SEVERITY_ORDER[c.badge.severity])
    counts = Counter(c.badge.severity for c in cards)
    chosen = FILTERS.get(show or "")
    shown = [c for c in cards if chosen is None or c.badge.severity == chosen.value]
    groups: dict[str, list[views.CardView]] = {}
    for c in shown:
        groups.setdefault(c.exchange_name, []).append(c)
    context = {
        "title": "My Exchanges",
        "groups": list(groups.items()),
        "total": len(cards),
        "counts": counts,
        "show": chosen.value if chosen else "all",
    }
    return ctx.pages.html(request, "connections.html", context, session=who.session, signed_in=True)


def _guide_context(ctx: WebContext, record: ConnectionRecord, error: str | None = None) -> dict[str, Any]:
    return {
        "g": views.guide(record, ctx.clock(), ctx.egress_ips),
        "title": f"{record.label} · {display_name(record.exchange)}",
        "error": error,
    }


@router.get("/connections/{connection_id}")
async def detail(request: Request, ctx: Ctx, who: SignedIn, record: Connection) -> Response:
    context = _guide_context(ctx, record)
    return ctx.pages.html(request, "connection.html", context, session=who.session, signed_in=True)


@router.get("/connections/{connection_id}/guide")
async def guide(request: Request, ctx: Ctx, who: SignedIn, record: Connection) -> Response:
    context = _guide_context(ctx, record)
    template = "_guide.html" if fragment(request) == "guide" else "connection.html"
    return ctx.pages.html(request, template, context, session=who.session, signed_in=True)


@router.post("/connections/{connection_id}/refresh")
async def refresh(request: Request, ctx: Ctx, who: SignedIn, form: Posted, record: Connection) -> Response:
    error: str | None = None
    status = 200
    try:
        outcome = await ctx.service.refresh(who.tenant, record.id, actor=ACTOR)
        record = outcome.connection
    except ConnectionNotFound:
        raise NotFound() from None
    except ConnectionChanged:
        error = "This connection was changed elsewhere while it was being checked. Refresh again."
        status = 409
    except CredentialsUnreadable:
        error = "The stored key can no longer be read. Enter the keys again with “Update keys”."
        status = 409
    except (VaultError, StoreError) as e:
        log.error("refresh failed", extra=describe(e))
        error, status = UNAVAILABLE, 503
    back = text_field(form, "back", limit=16)
    if fragment(request) == "card":
        context = {"c": views.card(record, ctx.clock()), "error": error}
        return ctx.pages.html(request, "_card.html", context, session=who.session, status=status)
    session = who.session.with_flash(error) if error else who.session
    if back in {"detail", "guide"}:
        return ctx.pages.redirect(request, f"/connections/{record.id}", session=session)
    return ctx.pages.redirect(request, f"/connections#{record.id}", session=session)


@router.get("/connections/{connection_id}/history")
async def history(request: Request, ctx: Ctx, who: SignedIn, record: Connection) -> Response:
    now = ctx.clock()
    checks = await ctx.service.history(who.tenant, record.id, limit=100)
    context = {
        "c": views.card(record, now),
        "rows": [views.check_row(c, now) for c in checks],
        "title": f"History · {record.label}",
    }
    return ctx.pages.html(request, "history.html", context, session=who.session, signed_in=True)


@router.get("/connections/{connection_id}/remove")
async def remove_form(request: Request, ctx: Ctx, who: SignedIn, record: Connection) -> Response:
    context = {"c": views.card(record, ctx.clock()), "title": f"Remove {record.label}"}
    return ctx.pages.html(request, "remove.html", context, session=who.session, signed_in=True)


@router.post("/connections/{connection_id}/remove")
async def remove(request: Request, ctx: Ctx, who: SignedIn, form: Posted, record: Connection) -> Response:
    try:
        await ctx.service.remove(who.tenant, record.id, actor=ACTOR)
    except ConnectionNotFound:
        raise NotFound() from None
    except (VaultError, StoreError) as e:
        log.error("remove failed", extra=describe(e))
        context = {"c": views.card(record, ctx.clock()), "title": f"Remove {record.label}"}
        session = who.session.with_flash(UNAVAILABLE)
        return ctx.pages.html(request, "remove.html", context, session=session, signed_in=True, status=503)
    done = f"“{record.label}” ({display_name(record.exchange)}) was removed and its stored key destroyed."
    return ctx.pages.redirect(request, "/connections", session=who.session.with_flash(done))
