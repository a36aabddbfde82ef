"""Settings of the REST API that `keysentry.settings` does not hold: request size and rate limits.

From `KEYSENTRY_*` environment variables like the rest of the configuration:

| variable | meaning | default |
| --- | --- | --- |
| KEYSENTRY_MAX_BODY_BYTES | largest request body accepted (413 above) | 16384 |
| KEYSENTRY_RATE_LIMIT_DIAGNOSE | per tenant: POST /v1/diagnose | 60/minute;600/hour |
| KEYSENTRY_RATE_LIMIT_ADD | per tenant: POST /v1/connections | 60/minute;600/hour |
| KEYSENTRY_RATE_LIMIT_UPDATE | per tenant: PUT /v1/connections/{id}/credentials | 60/minute;600/hour |
| KEYSENTRY_RATE_LIMIT_REFRESH | per tenant: POST /v1/connections/{id}/refresh | 120/minute;1200/hour |
| KEYSENTRY_RATE_LIMIT_WEBHOOK_TEST | per tenant: POST /v1/webhooks/{id}/test | 10/minute;100/hour |

Rate limits use the `limits` notation ("10/minute", several joined by ";"). The first four
routes make the service call an exchange with a key the caller supplies or stored: without a
limit, a tenant (or whoever stole its token) could use keysentry to test stolen keys in bulk.
A webhook test makes the service call a URL the tenant chose, at once: without a limit it would
be a request cannon pointed wherever a tenant likes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Action = Literal["diagnose", "add", "update", "refresh", "webhook_test"]
ACTIONS: tuple[Action, ...] = ("diagnose", "add", "update", "refresh", "webhook_test")


def _check_rate(value: str) -> str:
    from limits import parse_many

    try:
        items = parse_many(value)
    except ValueError:
        items = []
    if not items:
        raise ValueError(
            f"{value!r} is not a rate limit; write it as COUNT/PERIOD, e.g. 60/minute or 60/minute;600/hour"
        )
    return value


class ApiConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYSENTRY_", extra="ignore", frozen=True)

    max_body_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    rate_limit_diagnose: str = "60/minute;600/hour"
    rate_limit_add: str = "60/minute;600/hour"
    rate_limit_update: str = "60/minute;600/hour"
    rate_limit_refresh: str = "120/minute;1200/hour"
    rate_limit_webhook_test: str = "10/minute;100/hour"

    @field_validator(
        "rate_limit_diagnose",
        "rate_limit_add",
        "rate_limit_update",
        "rate_limit_refresh",
        "rate_limit_webhook_test",
    )
    @classmethod
    def _rates(cls, value: str) -> str:
        return _check_rate(value)

    def rate(self, action: Action) -> str:
        rate: str = getattr(self, f"rate_limit_{action}")
        return rate
