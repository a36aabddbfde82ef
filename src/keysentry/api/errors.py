"""The lifecycle's, the vault's and the store's errors as problems, with API wording.

The lifecycle's messages name CLI commands (`keysentry update ID`); here each cause gets the
sentence an API client needs (which request to send). Operator-facing errors (a sealed vault,
an unreachable database) are logged with their full message for the operator and answered
with a sentence that reveals no path, host or configuration.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError

from keysentry.api import problems
from keysentry.api.schemas import DiagnosisOut
from keysentry.connections import (
    AccountMismatch,
    AlreadyConnected,
    ConnectionChanged,
    ConnectionNotFound,
    CredentialsUnreadable,
    DuplicateKey,
    KeyRefused,
)
from keysentry.domain import Status
from keysentry.exchanges.base import AdapterConfigError
from keysentry.store.errors import StoreError
from keysentry.vault import VaultError, VaultSealed

log = logging.getLogger("keysentry.api")

SAVE_ANYWAY = 'send "save_anyway": true to store it anyway'


def _diagnosis(error: KeyRefused) -> dict[str, object]:
    return DiagnosisOut.model_validate(error.diagnosis.to_json()).model_dump(mode="json")


def _record_check(request: Request, error: KeyRefused) -> None:
    state = getattr(request.app.state, "keysentry", None)
    if state is not None:
        state.metrics.check(error.diagnosis)


def refused_detail(error: KeyRefused) -> str:
    diagnosis = error.diagnosis
    if isinstance(error, AccountMismatch) or not error.can_save_anyway:
        return str(error)  # these name no CLI command; nothing to reword
    anyway = f" ({SAVE_ANYWAY})"
    if diagnosis.status is Status.TEMPORARY_ISSUE:
        return (
            f"the key was not saved: {diagnosis.exchange} could not answer, so it was not verified "
            f"({diagnosis.summary}). Try again later{anyway}"
        )
    return (
        f"the key was not saved: its status is {diagnosis.status.value}: {diagnosis.summary} "
        f"Fix the key and try again{anyway}"
    )


async def _key_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeyRefused)
    _record_check(request, exc)
    instance = request.url.path
    if isinstance(exc, AlreadyConnected):
        return problems.response(
            "already-connected",
            f"this {exc.diagnosis.exchange} account is already connected as “{exc.label}” "
            f"({exc.existing_id}); to use this key for it, update that connection: "
            f"PUT /v1/connections/{exc.existing_id}/credentials",
            instance=instance,
            existing_id=exc.existing_id,
            diagnosis=_diagnosis(exc),
            can_save_anyway=False,
        )
    slug = "account-mismatch" if isinstance(exc, AccountMismatch) else "key-refused"
    return problems.response(
        slug,
        refused_detail(exc),
        instance=instance,
        diagnosis=_diagnosis(exc),
        can_save_anyway=exc.can_save_anyway,
    )


async def _duplicate(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DuplicateKey)
    return problems.response(
        "duplicate-key",
        f"this API key is already stored as connection “{exc.label}” ({exc.existing_id}); "
        f"POST /v1/connections/{exc.existing_id}/refresh checks it again",
        instance=request.url.path,
        existing_id=exc.existing_id,
    )


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    # the same answer as the loader's: nothing tells "another tenant's" from "does not exist"
    return problems.response("not-found", "there is no connection with this id", instance=request.url.path)


async def _changed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConnectionChanged)
    return problems.response(
        "connection-changed",
        f"connection {exc.connection_id} was changed by another request while this one ran (its key was "
        "updated or it was removed); nothing was saved: send the request again",
        instance=request.url.path,
    )


async def _unreadable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CredentialsUnreadable)
    return problems.response(
        "credentials-unreadable",
        f"the stored key of connection {exc.connection_id} cannot be decrypted; enter it again with "
        f"PUT /v1/connections/{exc.connection_id}/credentials",
        instance=request.url.path,
    )


async def _sealed(request: Request, exc: Exception) -> JSONResponse:
    log.error("vault sealed: %s", exc)  # the vault's messages hold no secret and tell the operator what to do
    return problems.response(
        "sealed",
        "the service's key vault is sealed: an operator must provide its master key; try again later",
        instance=request.url.path,
        headers={"Retry-After": "60"},
    )


async def _vault(request: Request, exc: Exception) -> JSONResponse:
    log.error("vault error (%s): %s", type(exc).__name__, exc)
    return problems.response(
        "unavailable",
        "the service's key vault cannot be used right now; try again later",
        instance=request.url.path,
        headers={"Retry-After": "60"},
    )


async def _store(request: Request, exc: Exception) -> JSONResponse:
    log.error("store error (%s): %s", type(exc).__name__, exc)  # store messages hide passwords
    return problems.response(
        "unavailable",
        "the service's database is unavailable; try again later",
        instance=request.url.path,
        headers={"Retry-After": "30"},
    )


async def _integrity(request: Request, exc: Exception) -> JSONResponse:
    # a race the lifecycle could not name (two requests storing the same thing at once)
    log.warning("integrity conflict on %s %s", request.method, request.url.path)
    return problems.response(
        "connection-changed",
        "another request changed the same data at the same time; nothing was saved: send the request again",
        instance=request.url.path,
    )


async def _database(request: Request, exc: Exception) -> JSONResponse:
    # the driver's message may quote statement parameters: log the type only
    log.error("database error %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return problems.response(
        "unavailable",
        "the service's database is unavailable; try again later",
        instance=request.url.path,
        headers={"Retry-After": "30"},
    )


async def _misconfigured(request: Request, exc: Exception) -> JSONResponse:
    # an operator setting the adapters cannot use (a base URL that is not one, ...): the message names it
    log.error("exchange configuration error: %s", exc)
    return problems.response(
        "unavailable",
        "the service cannot reach this exchange as configured; its operator has been told",
        instance=request.url.path,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(KeyRefused, _key_refused)
    app.add_exception_handler(DuplicateKey, _duplicate)
    app.add_exception_handler(ConnectionNotFound, _not_found)
    app.add_exception_handler(ConnectionChanged, _changed)
    app.add_exception_handler(CredentialsUnreadable, _unreadable)
    app.add_exception_handler(VaultSealed, _sealed)
    app.add_exception_handler(VaultError, _vault)
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(OSError, _database)
    app.add_exception_handler(AdapterConfigError, _misconfigured)
