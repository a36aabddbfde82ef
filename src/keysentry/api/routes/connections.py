"""/v1/connections: a tenant's stored exchange connections, on the lifecycle (keysentry.connections).

Every route takes the tenant from its token; every route with an id loads the connection through
`OwnedConnection` (filtered by tenant in SQL, 404 otherwise) before doing anything with it, and
passes the tenant on to the lifecycle, which filters by it again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from keysentry.api.deps import OwnedConnection, State, Tenant, rate_limit
from keysentry.api.keys import check_target, new_key
from keysentry.api.problems import invalid
from keysentry.api.queries import BadCursor, connection_page, decode_cursor, encode_cursor
from keysentry.api.schemas import (
    CheckList,
    CheckOut,
    ConnectionCreate,
    ConnectionOut,
    ConnectionPage,
    ConnectionResult,
    CredentialsUpdate,
    DiagnosisOut,
    ExchangeName,
)
from keysentry.api.spec import problem_responses
from keysentry.connections import Outcome
from keysentry.domain import Status
from keysentry.store.records import ConnectionRecord

router = APIRouter(prefix="/v1/connections", tags=["connections"])


def _out(state: State, record: ConnectionRecord) -> ConnectionOut:
    return ConnectionOut.model_validate(record.to_json(state.now()))


def _result(state: State, outcome: Outcome) -> ConnectionResult:
    state.metrics.check(outcome.diagnosis)
    return ConnectionResult(
        connection=_out(state, outcome.connection),
        diagnosis=DiagnosisOut.model_validate(outcome.diagnosis.to_json()),
    )


@router.post(
    "",
    status_code=201,
    summary="Check a key and store it as a new connection",
    description=(
        "The key is cleaned, checked against the exchange, and stored encrypted only when it works "
        "(or with `save_anyway`). A refused key answers 422 `key-refused` with the full diagnosis; an "
        "exchange account this tenant connected already answers 409 `already-connected` naming it."
    ),
    responses=problem_responses(401, 403, 409, 413, 422, 429, 503),
)
async def add_connection(
    body: ConnectionCreate,
    state: State,
    tenant: Tenant,
    response: Response,
    _: Annotated[None, Depends(rate_limit("add"))],
) -> ConnectionResult:
    check_target(state, body.exchange, body.environment, body.profile)
    outcome = await state.service.add(
        tenant.tenant,
        body.exchange,
        new_key(body),
        label=body.label,
        profile=body.profile,
        environment=body.environment,
        save_anyway=body.save_anyway,
        actor=tenant.actor,
    )
    response.headers["Location"] = f"/v1/connections/{outcome.connection.id}"
    return _result(state, outcome)


@router.get(
    "",
    summary="The tenant's connections, filtered by status and exchange, a page at a time",
    responses=problem_responses(401, 403, 422, 503),
)
async def list_connections(
    state: State,
    tenant: Tenant,
    status: Annotated[list[Status] | None, Query(description="keep these statuses (repeatable)")] = None,
    exchange: Annotated[
        list[ExchangeName] | None, Query(description="keep these exchanges (repeatable)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> ConnectionPage:
    try:
        after = decode_cursor(cursor) if cursor else None
    except BadCursor:
        raise invalid(
            "cursor",
            "this is not a cursor of this API",
            "pass next_cursor from the previous page as is",
            location="query",
        ) from None
    records, more = await connection_page(
        state.service.db,
        tenant.tenant,
        statuses=[s.value for s in status or ()],
        exchanges=list(exchange or ()),
        after=after,
        limit=limit,
    )
    return ConnectionPage(
        items=[_out(state, r) for r in records],
        next_cursor=encode_cursor(records[-1]) if more and records else None,
    )


@router.get(
    "/{connection_id}",
    summary="One connection: its status, findings and facts (never a secret)",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_connection(state: State, connection: OwnedConnection) -> ConnectionOut:
    return _out(state, connection)


@router.delete(
    "/{connection_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a connection: every stored version of its key is destroyed",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def remove_connection(state: State, tenant: Tenant, connection: OwnedConnection) -> Response:
    await state.service.remove(tenant.tenant, connection.id, actor=tenant.actor)
    return Response(status_code=204)


@router.put(
    "/{connection_id}/credentials",
    summary="Replace the key with a new key of the same exchange account; history is kept",
    description=(
        "The new key is checked first and must belong to the same exchange account; the switch is "
        "atomic. Connection id, label and history stay; the old key version is kept, revoked."
    ),
    responses=problem_responses(401, 403, 404, 409, 413, 422, 429, 503),
)
async def update_credentials(
    body: CredentialsUpdate,
    state: State,
    tenant: Tenant,
    connection: OwnedConnection,
    _: Annotated[None, Depends(rate_limit("update"))],
) -> ConnectionResult:
    outcome = await state.service.update_credentials(
        tenant.tenant,
        connection.id,
        new_key(body),
        save_anyway=body.save_anyway,
        actor=tenant.actor,
    )
    return _result(state, outcome)


@router.post(
    "/{connection_id}/refresh",
    summary="Check the stored key again and record the result",
    description="A temporary issue (the exchange did not answer) never overwrites the last definitive state.",
    responses=problem_responses(401, 403, 404, 409, 422, 429, 503),
)
async def refresh_connection(
    state: State,
    tenant: Tenant,
    connection: OwnedConnection,
    _: Annotated[None, Depends(rate_limit("refresh"))],
) -> ConnectionResult:
    outcome = await state.service.refresh(tenant.tenant, connection.id, actor=tenant.actor)
    return _result(state, outcome)


@router.get(
    "/{connection_id}/checks",
    summary="The connection's check history, newest first",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_checks(
    state: State,
    tenant: Tenant,
    connection: OwnedConnection,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CheckList:
    checks = await state.service.history(tenant.tenant, connection.id, limit=limit)
    return CheckList(items=[CheckOut.model_validate(c.to_json()) for c in checks])
