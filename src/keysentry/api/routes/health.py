"""Liveness, readiness and the Prometheus exposition (outside /v1, without a token).

/metrics holds only closed-set labels (route templates, statuses, exchanges): no tenant, token or
key. Operators still keep it on the internal network, like any metrics endpoint.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from keysentry.api.deps import State
from keysentry.api.problems import ApiProblem
from keysentry.api.schemas import Health, Readiness
from keysentry.api.spec import problem_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the database answers and the vault is open",
    responses=problem_responses(503),
)
async def readyz(state: State) -> Readiness:
    checks = {"vault": "ok"}  # a sealed vault refuses at start: a running API has an open one
    try:
        async with state.service.db.session() as s:
            await s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # any failure means "not ready"; the type is enough for the operator
        checks["database"] = "unavailable"
        raise ApiProblem(
            "not-ready", "the database does not answer", checks=checks, headers={"Retry-After": "5"}
        ) from e
    return Readiness(status="ready", checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics of the API and the monitor",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
