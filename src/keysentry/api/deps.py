"""Typed dependencies: who is calling, and the connection they may touch.

Named once, used everywhere (a route says `tenant: Tenant`, `connection: OwnedConnection`):

- `Caller`: any valid token (a tenant's, or the admin token); 401 otherwise.
- `Tenant`: a tenant token; the tenant id every query of the route is scoped by.
- `Admin`: the admin token (KEYSENTRY_ADMIN_TOKEN); 403 for tenant tokens, and when it is not set.
- `OwnedConnection`: the connection of the path, loaded filtered by tenant in SQL. Another
  tenant's connection answers 404 exactly like one that does not exist: same status, same body,
  and no database work that differs between the two.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keysentry.api.config import Action, ApiConfig
from keysentry.api.problems import ApiProblem
from keysentry.api.tokens import AdminToken
from keysentry.store.records import ConnectionRecord

if TYPE_CHECKING:
    from keysentry.api.limits import RateLimiter
    from keysentry.api.metrics import ApiMetrics
    from keysentry.connections import ConnectionService
    from keysentry.diagnosis.profiles import Profile
    from keysentry.settings import Settings
    from keysentry.store.tokens import TokenView

# ids keysentry makes are letters, digits, _ and -: anything else cannot exist and is not looked up
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class ApiState:
    """Everything the routes need, made once per app (app.state.keysentry)."""

    settings: Settings
    config: ApiConfig
    service: ConnectionService
    admin: AdminToken | None
    limiter: RateLimiter
    metrics: ApiMetrics
    profiles: Mapping[str, Profile]
    authenticate: Callable[[str], Awaitable[TokenView | None]]

    def now(self) -> datetime:
        return self.service.clock()


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.keysentry
    return state


State = Annotated[ApiState, Depends(get_state)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="`Authorization: Bearer ks_...`: a tenant API token, or the admin token for /v1/tenants",
)


@dataclass(frozen=True, slots=True)
class CallerInfo:
    tenant_id: str | None  # None: the admin
    token_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    @property
    def tenant(self) -> str:
        """The tenant every query is scoped by; routes take it through `Tenant`, which refuses the admin."""
        if self.tenant_id is None:
            raise RuntimeError("the admin acts for no tenant")
        return self.tenant_id

    @property
    def actor(self) -> str:
        """Who the audit log names: the token, never its value."""
        return "api:admin" if self.is_admin else f"api:{self.token_id}"


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="keysentry"'}


async def get_caller(
    state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> CallerInfo:
    if credentials is None:
        state.metrics.auth_failure("missing")
        raise ApiProblem(
            "unauthenticated", "send your API token as `Authorization: Bearer <token>`", headers=_CHALLENGE
        )
    token = credentials.credentials
    if state.admin is not None and state.admin.matches(token):
        return CallerInfo(None, None)
    found = await state.authenticate(token)
    if found is None:
        state.metrics.auth_failure("unknown")
        raise ApiProblem(
            "unauthenticated",
            "this token is unknown or was revoked; ask your keysentry operator for a new one",
            headers=_CHALLENGE,
        )
    return CallerInfo(found.tenant_id, found.id)


Caller = Annotated[CallerInfo, Depends(get_caller)]


async def get_tenant(state: State, caller: Caller) -> CallerInfo:
    if caller.is_admin:
        state.metrics.auth_failure("forbidden")
        raise ApiProblem(
            "forbidden",
            "this route acts for one tenant: use that tenant's API token (the admin token manages "
            "tenants and tokens only; POST /v1/tenants/{tenant_id}/tokens makes one)",
        )
    return caller


Tenant = Annotated[CallerInfo, Depends(get_tenant)]


async def get_admin(state: State, caller: Caller) -> CallerInfo:
    if state.admin is None:
        raise ApiProblem(
            "admin-disabled",
            "the admin API is off: the operator enables it by setting KEYSENTRY_ADMIN_TOKEN",
        )
    if not caller.is_admin:
        state.metrics.auth_failure("forbidden")
        raise ApiProblem("forbidden", "this route needs the admin token; a tenant token cannot use it")
    return caller


Admin = Annotated[CallerInfo, Depends(get_admin)]


def not_found() -> ApiProblem:
    # One sentence for "does not exist" and "is another tenant's": nothing tells them apart.
    return ApiProblem("not-found", "there is no connection with this id")


ConnectionId = Annotated[
    str, Path(max_length=64, description="a connection id, such as con_0123456789abcdef")
]


async def get_connection(state: State, tenant: Tenant, connection_id: ConnectionId) -> ConnectionRecord:
    from keysentry.connections import ConnectionNotFound

    if _ID.fullmatch(connection_id) is None:
        raise not_found()
    try:
        return await state.service.get(tenant.tenant, connection_id)
    except ConnectionNotFound:
        raise not_found() from None


OwnedConnection = Annotated[ConnectionRecord, Depends(get_connection)]


_KNOWN_QUERY: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> set[str]:
    """Every query parameter a route takes, its dependencies' included."""
    names = {str(field.alias) for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def no_unknown_query(request: Request) -> None:
    """Refuse query parameters a route does not take, as bodies refuse extra fields: a misspelt
    filter (`?staus=expired`) must not silently answer everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _KNOWN_QUERY.get(id(route))
    if known is None:
        known = _KNOWN_QUERY[id(route)] = frozenset(_query_names(dependant))
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        from keysentry.api.problems import FieldError, validation_problem

        takes = f"it takes: {', '.join(sorted(known))}" if known else "it takes none"
        raise validation_problem(
            [
                FieldError(
                    field=name[:64],
                    location="query",
                    problem="this endpoint has no such query parameter",
                    fix=f"remove it ({takes})",
                )
                for name in unknown[:10]
            ]
        )


def valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def rate_limit(action: Action) -> Callable[[ApiState, CallerInfo], Awaitable[None]]:
    """A dependency charging one `action` to the calling tenant; 429 with Retry-After past the limit."""
    from keysentry.api.limits import LimiterUnavailable

    async def charge(state: State, tenant: Tenant) -> None:
        try:
            wait = await state.limiter.hit(action, tenant.tenant)
        except LimiterUnavailable:
            raise ApiProblem(
                "unavailable", "the rate limiter is unavailable; try again in a minute"
            ) from None
        if wait is not None:
            state.metrics.limited(action)
            raise ApiProblem(
                "rate-limited",
                f"too many {action} requests for this tenant; try again in {wait} s",
                headers={"Retry-After": str(wait)},
                retry_after_s=wait,
            )

    return charge
