"""GET /v1/exchanges: what a "My Exchanges" page needs to ask for a key, per exchange.

Environments come from the adapters; field formats from the credential checks; egress addresses
from KEYSENTRY_EGRESS_IPS (what users must whitelist on their keys). Base URLs are operator
configuration and are not shown.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter

from keysentry.api.deps import Caller, State
from keysentry.api.schemas import ExchangeList, ExchangeOut, KeyField
from keysentry.api.spec import problem_responses

router = APIRouter(prefix="/v1", tags=["checks"])


@cache
def supported() -> tuple[ExchangeOut, ...]:
    # The credential checks own the formats; no public accessor exists yet, so read their table.
    from keysentry.credentials import _EXCHANGES, SUPPORTED_EXCHANGES
    from keysentry.diagnosis.catalog import display_name, no_ip_expiry_days
    from keysentry.diagnosis.engine import adapter_class

    out = []
    for name in SUPPORTED_EXCHANGES:
        spec = _EXCHANGES[name]
        fields = [
            KeyField(name="api_key", required=True, format=spec.api_key.describe),
            KeyField(name="secret", required=True, format=spec.secret.describe),
        ]
        if spec.passphrase is not None:
            fields.append(KeyField(name="passphrase", required=True, format=spec.passphrase.describe))
        out.append(
            ExchangeOut(
                name=name,
                display_name=display_name(name),
                environments=list(adapter_class(name).environments),
                fields=fields,
                key_versions=[1, 2, 3] if name == "kucoin" else None,
                unrestricted_key_expiry_days=no_ip_expiry_days(name),
            )
        )
    return tuple(out)


def environments(exchange: str) -> tuple[str, ...]:
    return next((tuple(e.environments) for e in supported() if e.name == exchange), ())


@router.get(
    "/exchanges",
    summary="Supported exchanges: environments, the fields a key needs, the addresses to whitelist",
    responses=problem_responses(401),
)
async def list_exchanges(state: State, caller: Caller) -> ExchangeList:
    return ExchangeList(egress_ips=list(state.settings.egress_ip_list), exchanges=list(supported()))
