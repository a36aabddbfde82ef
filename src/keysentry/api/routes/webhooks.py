"""/v1/webhooks: the calling tenant's webhook endpoints (keysentry.monitor.delivery).

Tenant-scoped like /v1/connections: the tenant comes from the token, every query filters by
it, and another tenant's webhook answers 404 exactly like one that does not exist. The signing
secret is in the answer that registers the endpoint and nowhere else (`Cache-Control:
no-store`); docs/webhooks.md shows a receiver how to verify it.

Which URLs are refused is keysentry.monitor.webhooks.check_url's business, so registration and
every delivery refuse the same ones. A test event makes the service call the tenant's URL at
once: it is rate-limited per tenant like the routes that call an exchange
(KEYSENTRY_RATE_LIMIT_WEBHOOK_TEST).
"""

from __future__ import annotations

import logging
import unicodedata
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from keysentry.api.deps import State, Tenant, rate_limit, valid_id
from keysentry.api.problems import ApiProblem, invalid
from keysentry.api.spec import problem_responses

if TYPE_CHECKING:
    from keysentry.monitor.delivery import WebhookView
    from keysentry.vault import Vault

log = logging.getLogger("keysentry.api")

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookId = Annotated[str, Path(max_length=64, description="a webhook id, such as whk_0123456789abcdef")]
EVENT_TYPES_HELP = (
    "connection.status_changed, connection.broken, connection.recovered, connection.expiring; "
    "left out (null): all of them"
)


def _printable(value: str) -> str:
    """Refuse control characters and lone surrogates: they cannot be stored (PostgreSQL refuses
    NUL), shown or sent, and would otherwise fail deep in the store instead of here."""
    for c in value:
        if unicodedata.category(c) in {"Cc", "Cs"}:
            raise ValueError("remove control characters and invalid Unicode (lone surrogates) from this text")
    return value


def _no_spaces(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError("a URL has no spaces: percent-encode them (%20) or remove them")
    return value


EndpointUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    AfterValidator(_printable),
    AfterValidator(_no_spaces),
    Field(
        description=(
            "the endpoint: an https:// (or http://) URL that resolves to a public address; "
            "redirects are not followed"
        )
    ),
]
EventTypeName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Note = Annotated[str, StringConstraints(max_length=200), AfterValidator(_printable)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: EndpointUrl
    event_types: list[EventTypeName] | None = Field(None, max_length=10, description=EVENT_TYPES_HELP)
    description: Note = Field("", description="a note for people")


class WebhookOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    url: str
    event_types: list[str] | None
    description: str
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret: shown in this answer only; keep it like a password")


class WebhookList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str
    event_type: str
    attempt: int
    status: str = Field(description="pending, delivered, retrying (another attempt follows) or failed")
    http_status: int | None
    sent_at: datetime | None
    error: str | None
    duration_ms: float | None
    next_attempt_at: datetime | None


class DeliveryList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[DeliveryOut]


class TestResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str
    delivered: bool
    http_status: int | None
    error: str | None = Field(description="why it failed; a failed test is retried like any event")
    duration_ms: float


def _out(view: WebhookView) -> WebhookOut:
    types = list(view.event_types) if view.event_types is not None else None
    return WebhookOut(
        id=view.id, url=view.url, event_types=types, description=view.description, created_at=view.created_at
    )


def _not_found() -> ApiProblem:
    return ApiProblem("not-found", "there is no webhook with this id")


def _vault(state: State) -> Vault:
    # The service holds the API's vault; the webhook secrets are sealed by the same one.
    vault = state.service.vault
    if vault is None:
        raise ApiProblem("sealed", "the key vault is not open: webhooks cannot be registered or read")
    return vault


def _allow_private() -> bool:
    """KEYSENTRY_MONITOR_WEBHOOK_ALLOW_PRIVATE, read as the monitor reads it. An API that builds its
    own runtime has read these settings at start (a bad value refuses to start); one given its
    service (embedded, tests) reads them here, and a bad value answers 503, never a 500."""
    from pydantic import ValidationError

    from keysentry.monitor.service import MonitorConfig

    try:
        return MonitorConfig().webhook_allow_private
    except ValueError as e:  # ValidationError, or pydantic-settings' SettingsError
        names = sorted({str(err["loc"][0]) for err in e.errors()}) if isinstance(e, ValidationError) else []
        # the field names only: a value could be anything the operator typed
        log.error("invalid KEYSENTRY_MONITOR_* settings: %s", ", ".join(names) or type(e).__name__)
        raise ApiProblem(
            "unavailable", "the service's webhook settings are invalid; its operator has been told"
        ) from None


@router.post(
    "",
    status_code=201,
    summary="Register a webhook endpoint; its signing secret is in this answer only",
    responses=problem_responses(401, 403, 409, 413, 422, 503),
)
async def create_webhook(
    body: WebhookCreate, state: State, tenant: Tenant, response: Response
) -> WebhookCreated:
    from keysentry.monitor import delivery
    from keysentry.monitor.webhooks import WebhookURLError

    fix = "register the endpoint's public https:// URL"
    allow_private = _allow_private()
    try:
        view, secret = await delivery.create_webhook(
            state.service.db,
            _vault(state),
            tenant_id=tenant.tenant,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            actor=tenant.actor,
            now=state.now(),
            allow_private=allow_private,
        )
    except WebhookURLError as e:
        raise invalid("url", str(e), fix) from None
    except delivery.EventTypesError as e:
        raise invalid("event_types", str(e), f"use {EVENT_TYPES_HELP}") from None
    except delivery.TooManyWebhooks:
        # a valid request the tenant's current endpoints leave no room for: a conflict, not a field
        raise ApiProblem(
            "too-many-webhooks",
            f"this tenant has {delivery.MAX_WEBHOOKS_PER_TENANT} webhook endpoints, the most it may "
            "register; delete one it no longer uses (DELETE /v1/webhooks/{webhook_id}) first",
        ) from None
    except ValueError as e:
        # The lifecycle's sentences are written for the caller and never quote the URL.
        raise invalid("body", str(e), "see docs/webhooks.md") from None
    response.headers["Location"] = f"/v1/webhooks/{view.id}"
    response.headers["Cache-Control"] = "no-store"  # the only answer that holds the secret
    return WebhookCreated(**_out(view).model_dump(), secret=secret.reveal())


@router.get(
    "",
    summary="The tenant's webhook endpoints (never their secrets)",
    responses=problem_responses(401, 403, 422, 503),
)
async def list_webhooks(state: State, tenant: Tenant) -> WebhookList:
    from keysentry.monitor import delivery

    found = await delivery.list_webhooks(state.service.db, _vault(state), tenant.tenant)
    return WebhookList(items=[_out(v) for v in found])


@router.get(
    "/{webhook_id}", summary="One webhook endpoint", responses=problem_responses(401, 403, 404, 422, 503)
)
async def get_webhook(state: State, tenant: Tenant, webhook_id: WebhookId) -> WebhookOut:
    from keysentry.monitor import delivery

    if not valid_id(webhook_id):
        raise _not_found()
    try:
        return _out(await delivery.get_webhook(state.service.db, _vault(state), tenant.tenant, webhook_id))
    except delivery.WebhookNotFound:
        raise _not_found() from None


@router.delete(
    "/{webhook_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a webhook endpoint: nothing more is sent to it",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def delete_webhook(state: State, tenant: Tenant, webhook_id: WebhookId) -> Response:
    from keysentry.monitor import delivery

    if not valid_id(webhook_id):
        raise _not_found()
    try:
        await delivery.delete_webhook(
            state.service.db, tenant.tenant, webhook_id, actor=tenant.actor, now=state.now()
        )
    except delivery.WebhookNotFound:
        raise _not_found() from None
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/test",
    summary="Send a webhook.test event to the endpoint now, and say how it answered",
    description=(
        "Rate-limited per tenant (KEYSENTRY_RATE_LIMIT_WEBHOOK_TEST): past the limit, "
        "429 `rate-limited` with Retry-After."
    ),
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
async def test_webhook(
    state: State,
    tenant: Tenant,
    webhook_id: WebhookId,
    _: Annotated[None, Depends(rate_limit("webhook_test"))],
) -> TestResult:
    from keysentry.monitor import delivery
    from keysentry.monitor.webhooks import RetryPolicy, WebhookSender

    if not valid_id(webhook_id):
        raise _not_found()
    db = state.service.db
    # A short timeout: the caller waits for this answer.
    policy = RetryPolicy(connect_timeout_s=3.0, total_timeout_s=5.0)
    async with WebhookSender(
        delivery.StoreDeliveryLog(db), policy=policy, allow_private=_allow_private()
    ) as sender:
        try:
            attempt = await delivery.send_test(
                db, _vault(state), sender, tenant_id=tenant.tenant, webhook_id=webhook_id, actor=tenant.actor,
                now=state.now(),
            )  # fmt: skip
        except delivery.WebhookNotFound:
            raise _not_found() from None
    return TestResult(
        event_id=attempt.event_id,
        delivered=attempt.outcome == "delivered",
        http_status=attempt.http_status,
        error=attempt.error,
        duration_ms=round(attempt.duration_ms, 1),
    )


@router.get(
    "/{webhook_id}/deliveries",
    summary="The endpoint's delivery log, newest first",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_deliveries(
    state: State, tenant: Tenant, webhook_id: WebhookId, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> DeliveryList:
    from keysentry.monitor import delivery

    if not valid_id(webhook_id):
        raise _not_found()
    try:
        found = await delivery.list_deliveries(state.service.db, tenant.tenant, webhook_id, limit=limit)
    except delivery.WebhookNotFound:
        raise _not_found() from None
    return DeliveryList(
        items=[
            DeliveryOut(
                event_id=d.event_id,
                event_type=d.event_type,
                attempt=d.attempt,
                status=d.status,
                http_status=d.http_status,
                sent_at=d.sent_at,
                error=d.error,
                duration_ms=d.duration_ms,
                next_attempt_at=d.next_attempt_at,
            )
            for d in found
        ]
    )
