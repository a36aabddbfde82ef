"""/v1/tenants: tenants and their API tokens, for the admin token only.

A token is shown once, in the answer that makes it, and stored as a hash. Making and revoking
tokens and making tenants are written to the audit log (the token id and name, never the token).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from keysentry.api.deps import Admin, State, valid_id
from keysentry.api.problems import ApiProblem
from keysentry.api.schemas import (
    TenantCreate,
    TenantOut,
    TenantPage,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
)
from keysentry.api.spec import problem_responses
from keysentry.api.tokens import issue_token

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])

TenantId = Annotated[str, Path(max_length=64, description="a tenant id")]
TokenId = Annotated[str, Path(max_length=64, description="a token id, such as tok_0123456789abcdef")]


def _no_tenant() -> ApiProblem:
    return ApiProblem("not-found", "there is no tenant with this id")


async def _existing(state: State, tenant_id: str) -> TenantOut:
    from keysentry.store import tokens as store

    if not valid_id(tenant_id):
        raise _no_tenant()
    async with state.service.db.session() as s:
        found = await store.get_tenant(s, tenant_id)
    if found is None:
        raise _no_tenant()
    return TenantOut(id=found.id, name=found.name, created_at=found.created_at)


@router.post(
    "",
    status_code=201,
    summary="Make a tenant (a platform or customer whose connections are kept apart)",
    responses=problem_responses(401, 403, 409, 413, 422, 503),
)
async def create_tenant(body: TenantCreate, state: State, admin: Admin, response: Response) -> TenantOut:
    from keysentry.store import tokens as store

    tenant_id = body.id or f"ten_{secrets.token_hex(8)}"
    now = state.now()
    async with state.service.db.session() as s, s.begin():
        made = await store.create_tenant(s, tenant_id, body.name, now)
        if made is None:
            raise ApiProblem("tenant-exists", f"tenant {tenant_id!r} exists already; choose another id")
        s.add(
            store.audit(
                action="tenant_create",
                actor=admin.actor,
                tenant_id=tenant_id,
                now=now,
                details={"name": body.name},
            )
        )
    response.headers["Location"] = f"/v1/tenants/{tenant_id}"
    return TenantOut(id=made.id, name=made.name, created_at=made.created_at)


@router.get("", summary="Tenants, by id, a page at a time", responses=problem_responses(401, 403, 422, 503))
async def list_tenants(
    state: State,
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page")
    ] = None,
) -> TenantPage:
    from keysentry.store import tokens as store

    after = cursor if cursor is not None and valid_id(cursor) else None
    if cursor is not None and after is None:
        from keysentry.api.problems import invalid

        raise invalid(
            "cursor", "this is not a cursor of this API", "pass next_cursor as is", location="query"
        )
    async with state.service.db.session() as s:
        found = await store.list_tenants(s, after=after, limit=limit + 1)
    items = [TenantOut(id=t.id, name=t.name, created_at=t.created_at) for t in found[:limit]]
    return TenantPage(items=items, next_cursor=items[-1].id if len(found) > limit else None)


@router.get("/{tenant_id}", summary="One tenant", responses=problem_responses(401, 403, 404, 422, 503))
async def get_tenant(state: State, admin: Admin, tenant_id: TenantId) -> TenantOut:
    return await _existing(state, tenant_id)


@router.post(
    "/{tenant_id}/tokens",
    status_code=201,
    summary="Make an API token for a tenant; the token is in this answer only",
    responses=problem_responses(401, 403, 404, 413, 422, 503),
)
async def create_token(
    body: TokenCreate, state: State, admin: Admin, tenant_id: TenantId, response: Response
) -> TokenCreated:
    tenant = await _existing(state, tenant_id)
    now = state.now()
    async with state.service.db.session() as s, s.begin():
        made, view = await issue_token(s, tenant.id, body.name, now, actor=admin.actor)
    response.headers["Cache-Control"] = "no-store"  # the only answer that holds a token
    return TokenCreated(
        id=view.id,
        tenant_id=view.tenant_id,
        name=view.name,
        prefix=view.prefix,
        created_at=view.created_at,
        last_used_at=None,
        revoked_at=None,
        token=made.value.reveal(),
    )


@router.get(
    "/{tenant_id}/tokens",
    summary="A tenant's tokens (ids and first characters, never the tokens)",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_tokens(state: State, admin: Admin, tenant_id: TenantId) -> TokenList:
    from keysentry.store import tokens as store

    tenant = await _existing(state, tenant_id)
    async with state.service.db.session() as s:
        found = await store.list_tokens(s, tenant.id)
    return TokenList(
        items=[
            TokenOut(
                id=t.id,
                tenant_id=t.tenant_id,
                name=t.name,
                prefix=t.prefix,
                created_at=t.created_at,
                last_used_at=t.last_used_at,
                revoked_at=t.revoked_at,
            )
            for t in found
        ]
    )


@router.delete(
    "/{tenant_id}/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke a token: requests with it are refused from now on",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def revoke_token(state: State, admin: Admin, tenant_id: TenantId, token_id: TokenId) -> Response:
    from keysentry.store import tokens as store

    tenant = await _existing(state, tenant_id)
    now = state.now()
    if not valid_id(token_id):
        raise ApiProblem("not-found", "this tenant has no live token with this id")
    async with state.service.db.session() as s, s.begin():
        if not await store.revoke_token(s, token_id, now, tenant_id=tenant.id):
            raise ApiProblem("not-found", "this tenant has no live token with this id")
        s.add(
            store.audit(
                action="token_revoke",
                actor=admin.actor,
                tenant_id=tenant.id,
                now=now,
                target=token_id,
                details={"token_id": token_id},
            )
        )
    return Response(status_code=204)
