"""The simulators' admin endpoint: change the live scenario while clients talk to the simulators.

It is its own aiohttp app on its own port, protected by `Authorization: Bearer <token>`.
Every operation mutates the scenario models the exchange handlers read on each request, so
the next exchange answer reflects it (all simulators of one exchange share one ExchangeSpec,
so a change reaches every environment of that exchange). Times given to it ("now", "+1h",
ISO 8601, epoch ms) are read on the exchange's clock, which includes its clock offset.

Routes (all JSON; errors are `{"error": ..., "hint": ...}` with 400, 401 or 404):

    GET    /admin/state                                      every exchange, account and key (secrets masked)
    GET    /admin/{exchange}                                 one exchange
    GET    /admin/{exchange}/keys/{api_key}                  one key
    PATCH  /admin/{exchange}/keys/{api_key}                  permissions, ip_whitelist, last_used_at, ...
    POST   /admin/{exchange}/keys/{api_key}/expire           {"at": time} optional, default now
    DELETE /admin/{exchange}/keys/{api_key}                  the key stops existing
    POST   /admin/{exchange}/keys/{api_key}/restore          undo the delete
    GET    /admin/{exchange}/accounts/{account_id}           one account
    PATCH  /admin/{exchange}/accounts/{account_id}           frozen, banned, api_disabled, kyc_level, ...
    POST   /admin/{exchange}/accounts/{account_id}/freeze    (and /unfreeze)
    POST   /admin/{exchange}/accounts/{account_id}/keys      add a key (a scenario key object)
    POST   /admin/{exchange}/maintenance                     {"active": true, "end": time?} / {"active": false}
    PUT    /admin/{exchange}/faults                          a scenario `faults` object; DELETE resets
    PUT    /admin/{exchange}/clock                           {"offset_ms": 5000}
    PATCH  /admin/{exchange}/settings                        unverified behaviours; PATCH .../limits too
    POST   /admin/{exchange}/reset-limits                    forget rate-limit counters and bans
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from keysentry.sim.base import ExchangeSim, json_response
from keysentry.sim.scenario import (
    AccountSpec,
    ExchangeSpec,
    Faults,
    KeySpec,
    MaintenanceWindow,
    Scenario,
    parse_instant,
)

if TYPE_CHECKING:
    from keysentry.sim.server import Endpoint

log = logging.getLogger(__name__)
_M = TypeVar("_M", KeySpec, AccountSpec)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DOCS = "docs/simulators.md lists the admin routes"
_SECRET_FIELDS = ("secret", "passphrase", "client_secret", "client_passphrase")
_ACCOUNT_READONLY = frozenset({"id", "keys"})
_KEY_READONLY = frozenset({"api_key"})


class AdminError(Exception):
    """An admin request that cannot be carried out; answered as `{"error", "hint"}` JSON."""

    def __init__(self, status: int, error: str, hint: str = _DOCS) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint


def mask(value: str | None) -> str | None:
    """Enough of a secret to tell two apart, never enough to use one."""
    if value is None:
        return None
    return f"****{value[-4:]}" if len(value) >= 16 else "****"


def _problems(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class Admin:
    """Builds the admin app over a running scenario and the simulators serving it."""

    def __init__(self, scenario: Scenario, endpoints: Sequence[Endpoint], token: str) -> None:
        if not token:
            raise ValueError("the admin endpoint needs a non-empty token")
        self.scenario = scenario
        self._token = token.encode()
        self._endpoints = list(endpoints)
        self._classes: dict[str, type[ExchangeSim]] = {ep.exchange: type(ep.sim) for ep in endpoints}

    def __repr__(self) -> str:
        return f"Admin(exchanges={sorted(self._classes)}, token=<hidden>)"

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth])
        r = app.router
        r.add_get("/admin/state", self.get_state)
        r.add_get("/admin/{exchange}", self.get_exchange)
        r.add_get("/admin/{exchange}/keys/{api_key}", self.get_key)
        r.add_patch("/admin/{exchange}/keys/{api_key}", self.patch_key)
        r.add_delete("/admin/{exchange}/keys/{api_key}", self.delete_key)
        r.add_post("/admin/{exchange}/keys/{api_key}/expire", self.expire_key)
        r.add_post("/admin/{exchange}/keys/{api_key}/restore", self.restore_key)
        r.add_get("/admin/{exchange}/accounts/{account_id}", self.get_account)
        r.add_patch("/admin/{exchange}/accounts/{account_id}", self.patch_account)
        r.add_post("/admin/{exchange}/accounts/{account_id}/freeze", self.freeze)
        r.add_post("/admin/{exchange}/accounts/{account_id}/unfreeze", self.unfreeze)
        r.add_post("/admin/{exchange}/accounts/{account_id}/keys", self.add_key)
        r.add_post("/admin/{exchange}/maintenance", self.maintenance)
        r.add_put("/admin/{exchange}/faults", self.put_faults)
        r.add_delete("/admin/{exchange}/faults", self.reset_faults)
        r.add_put("/admin/{exchange}/clock", self.put_clock)
        r.add_patch("/admin/{exchange}/settings", self.patch_settings)
        r.add_patch("/admin/{exchange}/limits", self.patch_limits)
        r.add_post("/admin/{exchange}/reset-limits", self.reset_limits)
        return app

    # -- middlewares --------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except AdminError as e:
            return json_response({"error": e.error, "hint": e.hint}, status=e.status)
        except web.HTTPException as e:
            if e.status == 404:
                error = f"no admin route {request.method} {request.path}"
            elif e.status == 405:
                error = f"{request.path} does not take {request.method}"
            else:
                error = e.reason
            return json_response({"error": error, "hint": _DOCS}, status=e.status)
        except Exception as e:
            # A bug of ours: say so without a traceback or the request body (it may hold a secret).
            log.error("admin endpoint failed on %s %s: %s", request.method, request.path, type(e).__name__)
            return json_response(
                {"error": f"internal error ({type(e).__name__})", "hint": "please report it"}, status=500
            )

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            return json_response(
                {
                    "error": "missing or wrong admin token",
                    "hint": "send 'Authorization: Bearer <token>' with the token the simulator printed",
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="keysentry-sim-admin"'},
            )
        return await handler(request)

    # -- lookups --------------------------------------------------------------------------------

    def _exchange(self, request: web.Request) -> tuple[str, ExchangeSpec]:
        name = request.match_info["exchange"]
        spec = self.scenario.exchanges.get(name)  # type: ignore[call-overload]
        if spec is None:
            raise AdminError(
                404,
                f"exchange {name!r} is not in this scenario",
                f"running: {', '.join(self.scenario.exchanges) or '(none)'}",
            )
        return name, spec

    @staticmethod
    def _now(spec: ExchangeSpec) -> datetime:
        return datetime.now(UTC) + timedelta(milliseconds=spec.clock_offset_ms)

    def _key(self, request: web.Request) -> tuple[str, ExchangeSpec, KeySpec, AccountSpec]:
        name, spec = self._exchange(request)
        api_key = request.match_info["api_key"]
        for account in spec.accounts:
            for key in account.keys:
                if key.api_key == api_key:  # deleted keys too: they can be restored
                    return name, spec, key, account
        raise AdminError(404, f"{name} has no key {api_key!r}", f"GET /admin/{name} lists its keys")

    def _account(self, request: web.Request) -> tuple[str, ExchangeSpec, AccountSpec]:
        name, spec = self._exchange(request)
        account_id = request.match_info["account_id"]
        for account in spec.accounts:
            if account.id == account_id:
                return name, spec, account
        known = ", ".join(a.id for a in spec.accounts) or "(none)"
        raise AdminError(404, f"{name} has no account {account_id!r}", f"{name} accounts: {known}")

    @staticmethod
    async def _body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
        if not request.can_read_body:
            if required:
                raise AdminError(400, "this operation needs a JSON object body")
            return {}
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AdminError(400, "the body is not valid JSON", "send a JSON object") from None
        if not isinstance(body, dict):
            raise AdminError(400, "the body must be a JSON object", 'e.g. {"frozen": true}')
        return body

    def _check_permissions(self, exchange: str, permissions: Sequence[str]) -> None:
        vocabulary = self._classes[exchange].permissions
        unknown = sorted(set(permissions) - vocabulary)
        if unknown:
            raise AdminError(
                400,
                f"unknown {exchange} permission(s): {', '.join(unknown)}",
                f"{exchange} knows: {', '.join(sorted(vocabulary))}",
            )

    # -- views (secrets masked) -----------------------------------------------------------------

    def _key_view(self, spec: ExchangeSpec, key: KeySpec) -> dict[str, Any]:
        view = key.model_dump(mode="json")
        for name in _SECRET_FIELDS:
            view[name] = mask(getattr(key, name))
        view["expired"] = key.is_expired(self._now(spec))
        return view

    def _account_view(self, spec: ExchangeSpec, account: AccountSpec) -> dict[str, Any]:
        view = account.model_dump(mode="json", exclude={"keys"})
        view["keys"] = [self._key_view(spec, k) for k in account.keys]
        return view

    def _exchange_view(self, name: str, spec: ExchangeSpec) -> dict[str, Any]:
        now = self._now(spec)
        view = spec.model_dump(mode="json", exclude={"accounts", "environments"})
        view["environments"] = [
            {"name": ep.environment, "url": ep.url} for ep in self._endpoints if ep.exchange == name
        ]
        view["in_maintenance"] = spec.in_maintenance(now)
        view["exchange_time"] = now.isoformat()
        view["permission_vocabulary"] = sorted(self._classes[name].permissions)
        view["accounts"] = [self._account_view(spec, a) for a in spec.accounts]
        return view

    # -- handlers: reading ----------------------------------------------------------------------

    async def get_state(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "seed": self.scenario.seed,
                "exchanges": {n: self._exchange_view(n, s) for n, s in self.scenario.exchanges.items()},
            }
        )

    async def get_exchange(self, request: web.Request) -> web.Response:
        return json_response(self._exchange_view(*self._exchange(request)))

    async def get_key(self, request: web.Request) -> web.Response:
        _, spec, key, _ = self._key(request)
        return json_response(self._key_view(spec, key))

    async def get_account(self, request: web.Request) -> web.Response:
        _, spec, account = self._account(request)
        return json_response(self._account_view(spec, account))

    # -- handlers: keys -------------------------------------------------------------------------

    async def patch_key(self, request: web.Request) -> web.Response:
        name, spec, key, _ = self._key(request)
        body = await self._body(request)
        self._refuse_fields(body, KeySpec, _KEY_READONLY, what="key")
        if "permissions" in body and isinstance(body["permissions"], list):
            self._check_permissions(name, [str(p) for p in body["permissions"]])
        if "environment" in body and body["environment"] not in spec.environments:
            raise AdminError(
                400,
                f"{name} does not serve environment {body['environment']!r}",
                f"served: {', '.join(spec.environments)}",
            )
        candidate = self._validate(KeySpec, {**key.model_dump(), **body}, spec)
        for field in body:  # all checked first, so a bad field changes nothing
            setattr(key, field, getattr(candidate, field))
        return json_response(self._key_view(spec, key))

    async def expire_key(self, request: web.Request) -> web.Response:
        _, spec, key, _ = self._key(request)
        body = await self._body(request, required=False)
        self._refuse_unknown(body, {"at"})
        now = self._now(spec)
        try:
            at = parse_instant(body["at"], now) if body.get("at") is not None else now
        except ValueError as e:
            raise AdminError(400, f"at: {e}") from None
        key.expires_at = at
        return json_response(self._key_view(spec, key))

    async def delete_key(self, request: web.Request) -> web.Response:
        _, spec, key, _ = self._key(request)
        key.deleted = True
        return json_response(self._key_view(spec, key))

    async def restore_key(self, request: web.Request) -> web.Response:
        _, spec, key, _ = self._key(request)
        key.deleted = False
        return json_response(self._key_view(spec, key))

    async def add_key(self, request: web.Request) -> web.Response:
        name, spec, account = self._account(request)
        body = await self._body(request)
        self._refuse_fields(body, KeySpec, frozenset(), what="key")
        if isinstance(body.get("permissions"), list):
            self._check_permissions(name, [str(p) for p in body["permissions"]])
        key = self._validate(KeySpec, body, spec)
        if any(k.api_key == key.api_key for a in spec.accounts for k in a.keys):
            raise AdminError(
                400,
                f"{name} already has a key {key.api_key!r}",
                f"PATCH /admin/{name}/keys/<api_key> changes an existing key",
            )
        if key.environment not in spec.environments:
            raise AdminError(
                400,
                f"{name} does not serve environment {key.environment!r}",
                f"served: {', '.join(spec.environments)}",
            )
        account.keys.append(key)
        return json_response(self._key_view(spec, key), status=201)

    # -- handlers: accounts ---------------------------------------------------------------------

    async def patch_account(self, request: web.Request) -> web.Response:
        _, spec, account = self._account(request)
        body = await self._body(request)
        self._refuse_fields(body, AccountSpec, _ACCOUNT_READONLY, what="account")
        candidate = self._validate(AccountSpec, {**account.model_dump(exclude={"keys"}), **body}, spec)
        for field in body:
            setattr(account, field, getattr(candidate, field))
        return json_response(self._account_view(spec, account))

    async def freeze(self, request: web.Request) -> web.Response:
        _, spec, account = self._account(request)
        account.frozen = True
        return json_response(self._account_view(spec, account))

    async def unfreeze(self, request: web.Request) -> web.Response:
        _, spec, account = self._account(request)
        account.frozen = False
        return json_response(self._account_view(spec, account))

    # -- handlers: the exchange as a whole ------------------------------------------------------

    async def maintenance(self, request: web.Request) -> web.Response:
        name, spec = self._exchange(request)
        body = await self._body(request)
        self._refuse_unknown(body, {"active", "end"})
        active = body.get("active")
        if not isinstance(active, bool):
            raise AdminError(400, "'active' must be true or false", '{"active": true} starts maintenance')
        now = self._now(spec)
        if active:
            try:
                end = parse_instant(body["end"], now) if body.get("end") is not None else None
            except ValueError as e:
                raise AdminError(400, f"end: {e}") from None
            spec.maintenance.append(MaintenanceWindow(start=now, end=end))
        else:
            for window in spec.maintenance:
                if window.start <= now and (window.end is None or now < window.end):
                    window.end = now
        return json_response(self._exchange_view(name, spec))

    async def put_faults(self, request: web.Request) -> web.Response:
        name, spec = self._exchange(request)
        body = await self._body(request)
        try:
            spec.faults = Faults.model_validate(body)
        except ValidationError as e:
            raise AdminError(
                400, f"invalid faults: {_problems(e)}", "see the faults section of " + _DOCS
            ) from None
        return json_response(self._exchange_view(name, spec))

    async def reset_faults(self, request: web.Request) -> web.Response:
        name, spec = self._exchange(request)
        spec.faults = Faults()
        return json_response(self._exchange_view(name, spec))

    async def put_clock(self, request: web.Request) -> web.Response:
        name, spec = self._exchange(request)
        body = await self._body(request)
        self._refuse_unknown(body, {"offset_ms"})
        offset = body.get("offset_ms")
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise AdminError(400, "'offset_ms' must be an integer", '{"offset_ms": 5000}: exchange 5 s ahead')
        spec.clock_offset_ms = offset
        return json_response(self._exchange_view(name, spec))

    async def patch_settings(self, request: web.Request) -> web.Response:
        return await self._patch_mapping(request, "settings")

    async def patch_limits(self, request: web.Request) -> web.Response:
        return await self._patch_mapping(request, "limits")

    async def _patch_mapping(self, request: web.Request, what: str) -> web.Response:
        name, spec = self._exchange(request)
        body = await self._body(request)
        cls = self._classes[name]
        known: Mapping[str, Any] = cls.default_settings if what == "settings" else cls.default_limits
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise AdminError(
                400,
                f"unknown {name} {what}: {', '.join(unknown)}",
                f"known: {', '.join(sorted(known)) or '(none)'}",
            )
        # null puts a name back to its default
        merged = {k: v for k, v in {**getattr(spec, what), **body}.items() if v is not None}
        try:
            setattr(spec, what, merged)
        except ValidationError as e:
            raise AdminError(400, f"invalid {what}: {_problems(e)}") from None
        return json_response(self._exchange_view(name, spec))

    async def reset_limits(self, request: web.Request) -> web.Response:
        name, spec = self._exchange(request)
        for ep in self._endpoints:
            if ep.exchange == name:
                ep.sim.reset_limits()
        return json_response(self._exchange_view(name, spec))

    # -- validation helpers ---------------------------------------------------------------------

    @staticmethod
    def _refuse_unknown(body: Mapping[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise AdminError(
                400, f"unknown field(s): {', '.join(unknown)}", f"allowed: {', '.join(sorted(allowed))}"
            )

    @staticmethod
    def _refuse_fields(
        body: Mapping[str, Any], model: type[KeySpec] | type[AccountSpec], readonly: frozenset[str], what: str
    ) -> None:
        allowed = set(model.model_fields) - readonly
        unknown = sorted(set(body) - allowed)
        if unknown:
            fixed = f" ({', '.join(sorted(readonly))} cannot change)" if set(unknown) & readonly else ""
            raise AdminError(
                400,
                f"unknown or read-only {what} field(s): {', '.join(unknown)}{fixed}",
                f"allowed: {', '.join(sorted(allowed))}",
            )

    def _validate(self, model: type[_M], data: dict[str, Any], spec: ExchangeSpec) -> _M:
        try:
            return model.model_validate(data, context={"now": self._now(spec)})
        except ValidationError as e:
            raise AdminError(400, f"invalid value: {_problems(e)}") from None
