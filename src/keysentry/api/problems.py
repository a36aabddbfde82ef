"""Errors as RFC 9457 problem details (application/problem+json), one stable `type` per cause.

`type` is `urn:keysentry:problem:<slug>`; the slugs below are public API (docs/api.md lists
them). `detail` is one sentence for the person who has to act. Extension members carry what a
client needs to act: `errors` (validation: the field and the fix), `diagnosis` (a refused key:
what is wrong with it and how to fix it), `existing_id` (a conflict: the connection to use
instead), `retry_after_s` (rate limits).

What never appears in a problem: a stack trace, an exception's own message when it could hold
input (validation problems are rebuilt from field names and rules, never from the value sent),
a secret, or anything about another tenant. Operator-facing messages (a sealed vault, a database
that is down) are logged for the operator; the caller gets a sentence without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from keysentry.api.schemas import DiagnosisOut

log = logging.getLogger("keysentry.api")

NAMESPACE = "urn:keysentry:problem:"
MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Kind:
    slug: str
    status: int
    title: str


_KINDS = (
    Kind("bad-request", 400, "The request cannot be read"),
    Kind("unauthenticated", 401, "Authentication required"),
    Kind("forbidden", 403, "Not allowed with this token"),
    Kind("admin-disabled", 403, "The admin API is off"),
    Kind("not-found", 404, "Not found"),
    Kind("method-not-allowed", 405, "Method not allowed"),
    Kind("not-acceptable", 406, "Not acceptable"),
    Kind("already-connected", 409, "This exchange account is already connected"),
    Kind("duplicate-key", 409, "This API key is already stored"),
    Kind("connection-changed", 409, "The connection changed meanwhile"),
    Kind("credentials-unreadable", 409, "The stored key cannot be decrypted"),
    Kind("tenant-exists", 409, "This tenant exists already"),
    Kind("too-many-webhooks", 409, "Too many webhook endpoints"),
    Kind("payload-too-large", 413, "Request body too large"),
    Kind("unsupported-media-type", 415, "Unsupported media type"),
    Kind("validation-error", 422, "The request is not valid"),
    Kind("key-refused", 422, "The key was refused"),
    Kind("account-mismatch", 422, "The new key belongs to another account"),
    Kind("rate-limited", 429, "Too many requests"),
    Kind("internal-error", 500, "Internal error"),
    Kind("sealed", 503, "The key vault is sealed"),
    Kind("unavailable", 503, "A backing service is unavailable"),
    Kind("not-ready", 503, "Not ready"),
)
KINDS: Mapping[str, Kind] = {k.slug: k for k in _KINDS}
_BY_STATUS: Mapping[int, Kind] = {k.status: k for k in reversed(_KINDS)}  # the first kind of a status wins


class FieldError(BaseModel):
    """One invalid field: where it is, what is wrong, and how to fix it."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="the field, dotted for nested ones (`passphrase`, `status.0`)")
    location: str = Field(description="body, query, path or header")
    problem: str
    fix: str


class Problem(BaseModel):
    """An RFC 9457 problem. `type` is stable per cause; extension members appear only when they apply."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="urn:keysentry:problem:<slug>; docs/api.md lists every slug")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="the request path")
    errors: list[FieldError] | None = None
    diagnosis: DiagnosisOut | None = Field(None, description="a refused key: what is wrong and how to fix it")
    existing_id: str | None = Field(None, description="a conflict: the connection to use instead")
    can_save_anyway: bool | None = Field(
        None, description="a refused key: whether save_anyway would store it"
    )
    retry_after_s: int | None = None
    checks: dict[str, str] | None = Field(None, description="readiness: the state of each dependency")


class ApiProblem(Exception):
    """Raise to answer with a problem; `extensions` become members of the problem object."""

    def __init__(
        self, slug: str, detail: str, *, headers: Mapping[str, str] | None = None, **extensions: Any
    ) -> None:
        if slug not in KINDS:
            raise ValueError(f"unknown problem type {slug!r}")
        super().__init__(detail)
        self.kind = KINDS[slug]
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


def content(kind: Kind, detail: str, instance: str | None = None, **extensions: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": NAMESPACE + kind.slug,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def response(
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    kind = KINDS[slug]
    return JSONResponse(
        content(kind, detail, instance, **extensions),
        status_code=kind.status,
        media_type=MEDIA_TYPE,
        headers=dict(headers or {}),
    )


# -- validation -------------------------------------------------------------------------------------


def _expected(ctx: Mapping[str, Any]) -> str:
    return str(ctx.get("expected", "")).replace("'", "")


_FIXES: Mapping[str, Any] = {
    "missing": lambda name, ctx: f"add `{name}`",
    "extra_forbidden": lambda name, ctx: (
        f"remove `{name}`: this request has no such field (docs/api.md lists them)"
    ),
    "json_invalid": lambda name, ctx: "send the body as one JSON object, with Content-Type: application/json",
    "model_attributes_type": lambda name, ctx: "send the body as one JSON object",
    "dict_type": lambda name, ctx: "send a JSON object",
    "model_type": lambda name, ctx: "send a JSON object",
    "string_type": lambda name, ctx: "send a string",
    "string_too_long": lambda name, ctx: f"send at most {ctx.get('max_length')} characters",
    "string_too_short": lambda name, ctx: f"send at least {ctx.get('min_length')} character(s)",
    "string_pattern_mismatch": lambda name, ctx: f"use only what the pattern {ctx.get('pattern')} allows",
    "literal_error": lambda name, ctx: f"use one of: {_expected(ctx)}",
    "enum": lambda name, ctx: f"use one of: {_expected(ctx)}",
    "int_parsing": lambda name, ctx: "send a whole number",
    "int_type": lambda name, ctx: "send a whole number",
    "int_from_float": lambda name, ctx: "send a whole number",
    "bool_parsing": lambda name, ctx: "send true or false",
    "bool_type": lambda name, ctx: "send true or false",
    "greater_than_equal": lambda name, ctx: f"send a number of at least {ctx.get('ge')}",
    "less_than_equal": lambda name, ctx: f"send a number of at most {ctx.get('le')}",
    "list_type": lambda name, ctx: "send a list",
    "too_long": lambda name, ctx: f"send at most {ctx.get('max_length')} items",
}


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[FieldError]:
    """Field errors from pydantic's, built from locations, types and rules only: never the input."""
    out: list[FieldError] = []
    for error in errors:
        loc = tuple(error.get("loc") or ())
        location = str(loc[0]) if loc else "body"
        name = ".".join(str(part) for part in loc[1:]) or location
        kind = str(error.get("type", ""))
        ctx = error.get("ctx") or {}
        message = str(error.get("msg", "invalid value"))
        if kind == "value_error":
            # our own validators' messages say what to do, and hold no input
            message = message.removeprefix("Value error, ")
            fix = message
        else:
            maker = _FIXES.get(kind)
            fix = maker(name, ctx) if maker else "see docs/api.md for what this field takes"
        if kind == "json_invalid":
            message, name = "the body is not valid JSON", "body"
        out.append(FieldError(field=name, location=location, problem=message, fix=fix))
    return out


def validation_problem(errors: Sequence[FieldError]) -> ApiProblem:
    first = errors[0] if errors else FieldError(field="body", location="body", problem="invalid", fix="")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    detail = f"{first.location} field `{first.field}`: {first.problem}; {first.fix}{more}"
    return ApiProblem("validation-error", detail, errors=[e.model_dump() for e in errors])


def invalid(field: str, problem: str, fix: str, *, location: str = "body") -> ApiProblem:
    """A validation problem found after the schema (an environment the exchange does not have...)."""
    return validation_problem([FieldError(field=field, location=location, problem=problem, fix=fix)])


# -- handlers ---------------------------------------------------------------------------------------


def _instance(request: Request) -> str:
    return request.url.path


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return response(
        exc.kind.slug, exc.detail, instance=_instance(request), headers=exc.headers, **exc.extensions
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problem = validation_problem(field_errors(exc.errors()))
    return await _on_problem(request, problem)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8, say): a validation problem like bad JSON
        unreadable = FieldError(
            field="body",
            location="body",
            problem="the body cannot be read as JSON",
            fix="send one JSON object, encoded in UTF-8, with Content-Type: application/json",
        )
        return await _on_problem(request, validation_problem([unreadable]))
    kind = _BY_STATUS.get(exc.status_code)
    headers = dict(exc.headers or {})
    if kind is None:
        kind = KINDS["bad-request"] if exc.status_code < 500 else KINDS["internal-error"]
    detail = {
        404: "there is nothing at this path; docs/api.md and /docs list the endpoints",
        405: f"{request.method} is not allowed here; the Allow header lists what is",
    }.get(exc.status_code, kind.title)
    return response(kind.slug, detail, instance=_instance(request), headers=headers)


def install(app: FastAPI) -> None:
    """Register the problem handlers (the lifecycle's errors are added by keysentry.api.errors)."""
    app.add_exception_handler(ApiProblem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
