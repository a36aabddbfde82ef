"""GET /v1/statuses: the status contract with the texts people see (diagnosis.catalog)."""

from __future__ import annotations

from fastapi import APIRouter

from keysentry.api.deps import Caller
from keysentry.api.schemas import StatusList, StatusOut
from keysentry.api.spec import problem_responses

router = APIRouter(prefix="/v1", tags=["checks"])


@router.get(
    "/statuses",
    summary="Every status of the contract, most severe first, with its meaning and what to do",
    responses=problem_responses(401),
)
async def list_statuses(caller: Caller) -> StatusList:
    from keysentry.diagnosis.catalog import STATUS_TEXTS
    from keysentry.domain import EXIT_CODES, PRECEDENCE

    return StatusList(
        statuses=[
            StatusOut(
                status=status,
                severity=text.severity,
                title=text.title,
                meaning=text.meaning,
                action=text.action,
                colour=text.colour,
                exit_code=EXIT_CODES[text.severity],
                precedence=i,
            )
            for i, status in enumerate(PRECEDENCE)
            for text in (STATUS_TEXTS[status],)
        ]
    )
