"""POST /v1/diagnose: check a key and store nothing (a bot's pre-flight check, a form's "Test")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from keysentry.api.deps import State, Tenant, rate_limit
from keysentry.api.keys import check_target, new_key
from keysentry.api.runtime import diagnose
from keysentry.api.schemas import DiagnoseRequest, DiagnosisOut
from keysentry.api.spec import problem_responses

router = APIRouter(prefix="/v1", tags=["checks"])


@router.post(
    "/diagnose",
    summary="Check a key: its status, every finding and how to fix it; nothing is stored",
    responses=problem_responses(401, 403, 413, 422, 429, 503),
)
async def diagnose_key(
    body: DiagnoseRequest,
    state: State,
    tenant: Tenant,
    _: Annotated[None, Depends(rate_limit("diagnose"))],
) -> DiagnosisOut:
    check_target(state, body.exchange, body.environment, body.profile)
    diagnosis = await diagnose(
        state.service, body.exchange, new_key(body), environment=body.environment, profile=body.profile
    )
    state.metrics.check(diagnosis)
    return DiagnosisOut.model_validate(diagnosis.to_json())
