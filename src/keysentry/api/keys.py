"""From request models to the lifecycle's inputs: the key, and the environment and profile checked.

Environment and profile are checked here, before anything is sent, so a name the exchange or the
operator does not have is a validation problem naming the field, not an error deep in a check.
"""

from __future__ import annotations

from keysentry.api.deps import ApiState
from keysentry.api.problems import invalid
from keysentry.api.schemas import KeyInput
from keysentry.connections import NewKey
from keysentry.domain.secrets import Secret


def new_key(body: KeyInput) -> NewKey:
    return NewKey(
        api_key=body.api_key.get_secret_value(),
        secret=Secret(body.secret.get_secret_value()),
        passphrase=Secret(body.passphrase.get_secret_value()) if body.passphrase is not None else None,
        key_version=body.key_version,
    )


def check_target(state: ApiState, exchange: str, environment: str, profile: str) -> None:
    from keysentry.api.routes.exchanges import environments
    from keysentry.diagnosis.profiles import BUILTIN_PROFILES

    known = environments(exchange)
    if environment not in known:
        raise invalid(
            "environment",
            f"{exchange} has no environment {environment!r}",
            f"use one of: {', '.join(known)}",
        )
    profiles = sorted({*BUILTIN_PROFILES, *state.profiles})
    if profile not in profiles:
        raise invalid("profile", f"there is no profile {profile!r}", f"use one of: {', '.join(profiles)}")
