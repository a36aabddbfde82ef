"""Pasting keys: adding a connection, warnings while typing, and updating a connection's keys.

Pasted values go to the connection service and nowhere else: they are never put back into a
page (a refused form comes back with its key fields empty), never logged, and the field check
answers with findings only, whose messages name positions and kinds of characters, not values.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from keysentry.connections import (
    AlreadyConnected,
    ConnectionChanged,
    ConnectionNotFound,
    DuplicateKey,
    KeyRefused,
    NewKey,
    Outcome,
)
from keysentry.credentials import SUPPORTED_EXCHANGES, FieldName, check_field, requires_passphrase
from keysentry.diagnosis.catalog import display_name
from keysentry.diagnosis.profiles import BUILTIN_PROFILES, DEFAULT_PROFILE
from keysentry.domain import Status
from keysentry.domain.secrets import Secret
from keysentry.store.errors import StoreError
from keysentry.vault import VaultError
from keysentry.web import views
from keysentry.web.deps import (
    ACTOR,
    Connection,
    Ctx,
    NotFound,
    Posted,
    SignedIn,
    Visitor,
    WebContext,
    check_post,
    describe,
    log,
    text_field,
)
from keysentry.web.render import fragment

router = APIRouter(include_in_schema=False)

MAX_VALUE_CHARS = 4096
MAX_CHECK_BODY = 16 * 1024
FIELDS: tuple[FieldName, ...] = ("api_key", "secret", "passphrase")
UNAVAILABLE = (
    "keysentry cannot reach its key store right now, so the key was not saved. Try again in a few "
    "minutes; if it lasts, tell whoever runs keysentry (the service log says why)."
)


# -- what the forms offer ------------------------------------------------------------------------


def exchanges() -> list[dict[str, Any]]:
    return [
        {"id": ex, "name": display_name(ex), "passphrase": requires_passphrase(ex)}
        for ex in SUPPORTED_EXCHANGES
    ]


def profiles() -> list[dict[str, str]]:
    return [{"id": p.name, "description": p.description} for p in BUILTIN_PROFILES.values()]


def environments(ctx: WebContext) -> list[dict[str, str]]:
    """Mainnet, plus every environment the operator configured a base URL for."""
    out = []
    for ex in SUPPORTED_EXCHANGES:
        out.append({"exchange": ex, "id": "mainnet", "name": "mainnet"})
        for env in sorted(ctx.settings.base_urls(ex)):
            if env not in {"default", "mainnet"}:
                out.append({"exchange": ex, "id": env, "name": env})
    return out


def _form_values(form: FormData | None, **defaults: str) -> dict[str, str]:
    """What a form shows again after a refusal: everything but the key, the secret and the passphrase."""
    values = {
        "exchange": "",
        "label": "",
        "profile": DEFAULT_PROFILE,
        "environment": "mainnet",
        "key_version": "2",
    }
    values.update(defaults)
    if form is not None:
        for name in values:
            given = text_field(form, name, limit=300)
            if given:
                values[name] = given
    return values


def _new_key(form: FormData, exchange: str) -> NewKey:
    passphrase = text_field(form, "passphrase", limit=MAX_VALUE_CHARS)
    try:
        key_version = int(text_field(form, "key_version", limit=2) or 2)
    except ValueError:
        key_version = 2
    return NewKey(
        api_key=text_field(form, "api_key", limit=MAX_VALUE_CHARS),
        secret=Secret(text_field(form, "secret", limit=MAX_VALUE_CHARS)),
        passphrase=Secret(passphrase) if passphrase.strip() or requires_passphrase(exchange) else None,
        key_version=key_version if exchange == "kucoin" and key_version in (1, 2, 3) else 2,
    )


# -- outcomes ------------------------------------------------------------------------------------


def _saved(kind: str, outcome: Outcome, ctx: WebContext) -> dict[str, Any]:
    now = ctx.clock()
    return {
        "kind": kind,
        "result": views.result(outcome.diagnosis, now),
        "card": views.card(outcome.connection, now),
        "message": None,
        "can_save_anyway": False,
    }


def _refused(error: Exception, *, connection_id: str | None = None) -> dict[str, Any]:
    """The outcome of a key that was not saved, in the page's own words (no CLI hints)."""
    out: dict[str, Any] = {"kind": "refused", "result": None, "card": None, "can_save_anyway": False}
    if isinstance(error, AlreadyConnected):
        name = display_name(error.diagnosis.exchange)
        out.update(
            kind="already_connected",
            result=views.result(error.diagnosis),
            existing_id=error.existing_id,
            existing_label=error.label,
            message=f"This {name} account is already connected as “{error.label}”. "
            "An account is connected once; to use this key for it, update that connection's keys: "
            "its history and settings stay.",
        )
    elif isinstance(error, DuplicateKey):
        same = error.existing_id == connection_id
        out.update(
            kind="duplicate",
            existing_id=error.existing_id,
            existing_label=error.label,
            message=(
                f"This is already the key of “{error.label}”; nothing to update. Use Refresh to check it again."
                if same
                else f"This API key is already stored as “{error.label}”."
            ),
        )
    elif isinstance(error, KeyRefused):
        diagnosis = error.diagnosis
        out.update(result=views.result(diagnosis), can_save_anyway=error.can_save_anyway)
        if error.can_save_anyway:
            title = views.badge(diagnosis.status).title
            if diagnosis.status is Status.TEMPORARY_ISSUE:
                why = (
                    f"{display_name(diagnosis.exchange)} could not answer, so the key could not be verified."
                )
            else:
                why = f"its check says “{title}”."
            out["message"] = (
                f"The key was not saved: {why} Fix it as described and try again, or save it anyway: "
                "keysentry then keeps checking it and shows its status on your connections."
            )
        elif str(error) == str(KeyRefused(diagnosis, can_save_anyway=False)):
            # the service's generic sentence names the status code; the page has the words
            title = views.badge(diagnosis.status).title
            out["message"] = f"The key was not saved: “{title}”. Fix it as described below and try again."
        else:  # a sentence of its own, such as why a new key was not switched in
            out["message"] = _sentence(str(error))
    else:
        out["message"] = _sentence(str(error))
    return out


def _plain(kind: str, message: str) -> dict[str, Any]:
    """An outcome that is only a sentence: invalid input, the store unavailable, a race."""
    return {"kind": kind, "result": None, "card": None, "can_save_anyway": False, "message": message}


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _status_for(outcome: dict[str, Any]) -> int:
    return {"added": 200, "updated": 200, "already_connected": 409, "duplicate": 409}.get(
        outcome["kind"], 422
    )


# -- add -----------------------------------------------------------------------------------------


def _new_page(
    request: Request,
    ctx: WebContext,
    who: Visitor,
    *,
    values: dict[str, str],
    outcome: dict[str, Any] | None,
    status: int = 200,
) -> Response:
    if outcome is not None and fragment(request) == "result":
        return ctx.pages.html(request, "_result.html", {"o": outcome}, session=who.session, status=status)
    context = {
        "title": "Add a connection",
        "exchanges": exchanges(),
        "profiles": profiles(),
        "environments": environments(ctx),
        "values": values,
        "o": outcome,
    }
    return ctx.pages.html(request, "new.html", context, session=who.session, signed_in=True, status=status)


@router.get("/connections/new")
async def new_form(request: Request, ctx: Ctx, who: SignedIn, exchange: str | None = None) -> Response:
    chosen = exchange if exchange in SUPPORTED_EXCHANGES else ""
    return _new_page(request, ctx, who, values=_form_values(None, exchange=chosen or ""), outcome=None)


@router.post("/connections")
async def add(request: Request, ctx: Ctx, who: SignedIn, form: Posted) -> Response:
    values = _form_values(form)
    exchange = values["exchange"].strip().lower()
    if exchange not in SUPPORTED_EXCHANGES:
        outcome = _plain("invalid", "Choose the exchange the key was created on.")
        return _new_page(request, ctx, who, values=values, outcome=outcome, status=400)
    if not values["label"].strip():
        outcome = _plain("invalid", "Give the connection a name, such as “grid bot”.")
        return _new_page(request, ctx, who, values=values, outcome=outcome, status=400)
    allowed_envs = {e["id"] for e in environments(ctx) if e["exchange"] == exchange}
    if values["environment"] not in allowed_envs:
        values["environment"] = "mainnet"
    try:
        done = await ctx.service.add(
            who.tenant,
            exchange,
            _new_key(form, exchange),
            label=values["label"],
            profile=values["profile"] if values["profile"] in BUILTIN_PROFILES else DEFAULT_PROFILE,
            environment=values["environment"],
            save_anyway=text_field(form, "save_anyway", limit=4) == "1",
            actor=ACTOR,
        )
    except (KeyRefused, DuplicateKey) as e:
        outcome = _refused(e)
    except ValueError as e:  # the label, profile or environment
        outcome = _plain("invalid", _sentence(str(e)))
        return _new_page(request, ctx, who, values=values, outcome=outcome, status=400)
    except (VaultError, StoreError) as e:
        log.error("add failed", extra=describe(e))
        outcome = _plain("unavailable", UNAVAILABLE)
        return _new_page(request, ctx, who, values=values, outcome=outcome, status=503)
    else:
        outcome = _saved("added", done, ctx)
    return _new_page(request, ctx, who, values=values, outcome=outcome, status=_status_for(outcome))


# -- warnings while typing -----------------------------------------------------------------------


@router.post("/connections/check-field")
async def check_one_field(request: Request, ctx: Ctx, who: SignedIn) -> Response:
    """Findings about one pasted field. Answers never contain the value, and nothing is logged."""
    check_post(request, ctx, who.session, None)
    try:
        if int(request.headers.get("content-length") or 0) > MAX_CHECK_BODY:
            raise ValueError
        body = json.loads(await request.body())
        exchange, name, value = body["exchange"], body["field"], body["value"]
        if not (isinstance(exchange, str) and isinstance(value, str) and name in FIELDS):
            raise ValueError
        if exchange not in SUPPORTED_EXCHANGES or len(value) > MAX_VALUE_CHARS:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        # a fixed answer: a validation error that quoted the body would echo the pasted value
        return JSONResponse(
            {"error": "send JSON with exchange, field (api_key, secret or passphrase) and value"}, 400
        )
    findings = check_field(exchange, name, value) if value else ()
    return JSONResponse(
        {
            "field": name,
            "ok": not any(f.severity.value == "error" for f in findings),
            "findings": [
                {"code": f.code, "severity": f.severity.value, "message": f.message, "steps": list(f.remedy)}
                for f in findings
            ],
        },
        headers={"Cache-Control": "no-store"},
    )


# -- update --------------------------------------------------------------------------------------


def _update_page(
    request: Request,
    ctx: WebContext,
    who: Visitor,
    record: Any,
    *,
    outcome: dict[str, Any] | None,
    status: int = 200,
) -> Response:
    if outcome is not None and fragment(request) == "result":
        return ctx.pages.html(request, "_result.html", {"o": outcome}, session=who.session, status=status)
    context = {
        "title": f"Update keys · {record.label}",
        "c": views.card(record, ctx.clock()),
        "passphrase": requires_passphrase(record.exchange),
        "o": outcome,
    }
    return ctx.pages.html(request, "update.html", context, session=who.session, signed_in=True, status=status)


@router.get("/connections/{connection_id}/update")
async def update_form(request: Request, ctx: Ctx, who: SignedIn, record: Connection) -> Response:
    return _update_page(request, ctx, who, record, outcome=None)


@router.post("/connections/{connection_id}/update")
async def update(request: Request, ctx: Ctx, who: SignedIn, form: Posted, record: Connection) -> Response:
    try:
        done = await ctx.service.update_credentials(
            who.tenant,
            record.id,
            _new_key(form, record.exchange),
            save_anyway=text_field(form, "save_anyway", limit=4) == "1",
            actor=ACTOR,
        )
    except ConnectionNotFound:
        raise NotFound() from None
    except (KeyRefused, DuplicateKey) as e:
        outcome = _refused(e, connection_id=record.id)
    except ConnectionChanged:
        outcome = _plain(
            "refused",
            "This connection was changed elsewhere meanwhile; nothing was saved. Paste the keys again.",
        )
    except (VaultError, StoreError) as e:
        log.error("update failed", extra=describe(e))
        outcome = _plain("unavailable", UNAVAILABLE)
    else:
        outcome = _saved("updated", done, ctx)
        record = done.connection
    return _update_page(request, ctx, who, record, outcome=outcome, status=_status_for(outcome))
