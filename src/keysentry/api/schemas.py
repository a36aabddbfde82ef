"""Request and response models of the REST API.

Responses cannot carry a secret by construction: they are built from the store's read models
(masked key and fingerprint only) and forbid fields they do not declare. Requests forbid extra
fields (a misspelt field is an error, not silently ignored) and have no URL field anywhere: the
exchange endpoints are operator configuration only (no server-side request forgery). Secrets
arrive as SecretStr, whose repr and str are masked, so a logged request model shows nothing.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from keysentry.domain import Severity, Status

ExchangeName = Literal["binance", "okx", "bybit", "kucoin"]
KeyVersion = Literal[1, 2, 3]
MAX_LABEL = 200


def _text(value: str) -> str:
    """Printable text, whitespace runs collapsed; control characters and lone surrogates refused."""
    for c in value:
        if unicodedata.category(c) in {"Cc", "Cs"} and c not in "\t\n\r":
            raise ValueError("remove control characters and invalid Unicode (lone surrogates) from this text")
    collapsed = " ".join(value.split())
    if not collapsed:
        raise ValueError("write something here: it is blank")
    return collapsed


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL), AfterValidator(_text)]
Environment = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$"),
    Field(
        description="the exchange's environment: mainnet, testnet, demo, ... (GET /v1/exchanges lists them)"
    ),
]
ProfileName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$"),
    Field(
        description="requirement profile: trading, futures-trading, read-only, market-making, or the operator's own"
    ),
]
# Generous: pasted keys carry spaces and invisible characters that keysentry cleans and reports.
ApiKeyField = Annotated[SecretStr, Field(min_length=1, max_length=512, description="the API key as pasted")]
SecretField = Annotated[
    SecretStr, Field(min_length=1, max_length=512, description="the API secret as pasted")
]
PassphraseField = Annotated[
    SecretStr | None,
    Field(None, max_length=256, description="OKX and KuCoin: the passphrase chosen when the key was made"),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -----------------------------------------------------------------------------------------


class KeyInput(_Request):
    api_key: ApiKeyField
    secret: SecretField
    passphrase: PassphraseField = None
    key_version: KeyVersion = Field(
        2, description="KuCoin's API key version (1 sends the passphrase in clear; 2 and 3 sign it)"
    )


class DiagnoseRequest(KeyInput):
    """Check a key and store nothing."""

    exchange: ExchangeName
    environment: Environment = "mainnet"
    profile: ProfileName = "trading"


class ConnectionCreate(DiagnoseRequest):
    """Check a key, then store it encrypted as a new connection."""

    label: Text = Field(description="a name the user recognises, such as 'spot bot'")
    save_anyway: bool = Field(
        False,
        description="store the key even though its check failed (never for an already connected account)",
    )


class CredentialsUpdate(KeyInput):
    """Replace the key of a connection with a new key of the same exchange account."""

    save_anyway: bool = False


class TenantCreate(_Request):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")] | None = Field(
        None, description="lowercase letters, digits, - and _ (generated when left out)"
    )
    name: Text


class TokenCreate(_Request):
    name: Text = Field(description="what the token is for, such as 'production backend'")


# -- responses ----------------------------------------------------------------------------------------


class FindingOut(_Response):
    code: str = Field(description="stable finding code (docs/statuses.md)")
    severity: Severity
    message: str
    remedy: list[str]
    status: Status | None = None
    details: dict[str, Any] | None = None


class DiagnosisOut(_Response):
    """One check of a key: the headline status, every finding and its fix."""

    exchange: str
    environment: str
    status: Status
    severity: Severity
    summary: str
    reason: str | None
    account_id: str | None
    masked_key: str | None
    permissions: list[str]
    missing_permissions: list[str]
    ip_restricted: bool | None
    ip_whitelist: list[str]
    expires_at: datetime | None
    expires_in_days: int | None
    findings: list[FindingOut]
    checked_at: datetime | None
    latency_ms: float | None


class ConnectionOut(_Response):
    """A stored connection: masked key and fingerprint, never a secret.

    `status` is what to show now (temporary_issue while the exchange cannot answer);
    `last_known_status` and the facts are the last definitive answer."""

    id: str
    exchange: str
    environment: str
    label: str
    profile: str
    account_id: str | None
    masked_key: str
    key_fingerprint: str
    credential_version: int
    status: Status
    severity: Severity
    summary: str
    last_known_status: Status
    permissions: list[str]
    ip_restricted: bool | None
    expires_at: datetime | None
    expires_in_days: int | None
    findings: list[FindingOut]
    last_checked_at: datetime | None
    last_definitive_at: datetime | None
    temporary_since: datetime | None
    next_check_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ConnectionResult(_Response):
    """A connection and the check that was just made of it."""

    connection: ConnectionOut
    diagnosis: DiagnosisOut


class ConnectionPage(_Response):
    items: list[ConnectionOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


class CheckOut(_Response):
    id: int
    connection_id: str
    credential_version: int
    trigger: str = Field(description="add, update or refresh")
    checked_at: datetime
    status: Status
    severity: Severity
    summary: str
    account_id: str | None
    expires_at: datetime | None
    latency_ms: float | None
    findings: list[FindingOut]


class CheckList(_Response):
    items: list[CheckOut] = Field(description="newest first")


class KeyField(_Response):
    name: Literal["api_key", "secret", "passphrase"]
    required: bool
    format: str


class ExchangeOut(_Response):
    name: str
    display_name: str
    environments: list[str]
    fields: list[KeyField]
    key_versions: list[int] | None = Field(None, description="KuCoin: the API key versions accepted")
    unrestricted_key_expiry_days: int | None = Field(
        None,
        description="days after which the exchange stops a key without an IP whitelist, when it has such a rule",
    )


class ExchangeList(_Response):
    egress_ips: list[str] = Field(
        description="the addresses keysentry sends from: whitelist these on the key (empty: not configured)"
    )
    exchanges: list[ExchangeOut]


class StatusOut(_Response):
    status: Status
    severity: Severity
    title: str
    meaning: str
    action: str
    colour: str
    exit_code: int
    precedence: int = Field(description="0 is the most severe; the most severe finding wins the headline")


class StatusList(_Response):
    statuses: list[StatusOut]


class TenantOut(_Response):
    id: str
    name: str
    created_at: datetime


class TenantPage(_Response):
    items: list[TenantOut]
    next_cursor: str | None


class TokenOut(_Response):
    """A token as listed: its id and first characters, never the token."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown this once, stored only as a hash")


class TokenList(_Response):
    items: list[TokenOut]


class Health(_Response):
    status: Literal["ok"]


class Readiness(_Response):
    status: Literal["ready"]
    checks: dict[str, str]
