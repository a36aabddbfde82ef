"""Scenario files: the accounts, keys and faults a simulator starts with.

A scenario is YAML or JSON. Times accept ISO 8601, epoch milliseconds, or a time
relative to the moment the scenario is loaded ("now", "+5d", "-40d", "+3h", "-90s"),
so a shipped scenario stays meaningful whatever the date.

A file may `include:` other scenario files (paths relative to the including file): their
`exchanges` are merged, and the including file's own `seed` and `admin_token` win.

The models are also the simulators' live state: the admin endpoint mutates them and the
exchange handlers read them on every request, so a change shows on the next call.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import types
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

EXCHANGES = ("binance", "okx", "bybit", "kucoin")
ExchangeName = Literal["binance", "okx", "bybit", "kucoin"]

# The status names of the contract, repeated here because sim imports nothing of the client side.
INTENTS = (
    "invalid_key", "secret_mismatch", "passphrase_invalid", "clock_skew", "ip_not_allowed",
    "expired", "account_restricted", "already_connected", "withdrawal_enabled",
    "incorrect_permissions", "inactive_futures", "temporary_issue", "expires_soon",
    "connected", "unchecked",
)  # fmt: skip

_RELATIVE = re.compile(r"^([+-])(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A schema error lists at most this many problems, so the message fits on one screen.
_MAX_PROBLEMS = 12
DOCS_HINT = "docs/simulators.md describes every field"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says where and how to fix it."""


def parse_instant(value: Any, now: datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        if text == "now":
            return now
        m = _RELATIVE.match(text)
        if m:
            sign = 1 if m.group(1) == "+" else -1
            return now + sign * timedelta(seconds=float(m.group(2)) * _UNITS[m.group(3)])
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(
        f"{value!r} is not a time: use ISO 8601 (2026-01-31T00:00:00Z), epoch milliseconds, "
        "or a relative time such as now, +5d, -40d, +3h"
    )


def _instant(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        return None
    now = (info.context or {}).get("now") or datetime.now(UTC)
    return parse_instant(value, now)


_INSTANT_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": r"^(now|[+-]\d+(\.\d+)?[smhdw])$"},
        {"type": "integer", "description": "epoch milliseconds"},
    ],
    "description": "ISO 8601, epoch milliseconds, or relative to load time: now, +5d, -40d, +3h, -90s",
}
Instant = Annotated[datetime, BeforeValidator(_instant), WithJsonSchema(_INSTANT_SCHEMA)]


def check_networks(values: Iterable[str]) -> None:
    """Raise ValueError naming the first entry that is neither an IP address nor a network."""
    for item in values:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            msg = f"{item!r} is not an IP address or network (e.g. 127.0.0.2 or 10.0.0.0/24)"
            raise ValueError(msg) from None


def check_intent(value: str | None) -> str | None:
    if value is not None and value not in INTENTS:
        raise ValueError(f"unknown intent {value!r}; use one of: {', '.join(INTENTS)}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Latency(_Model):
    distribution: Literal["none", "fixed", "uniform", "normal", "lognormal"] = "none"
    ms: float = Field(0.0, ge=0, description="fixed: the delay; normal/lognormal: the mean")
    min_ms: float = Field(0.0, ge=0, description="uniform: the lower bound")
    max_ms: float = Field(0.0, ge=0, description="uniform: the upper bound")
    stddev_ms: float = Field(0.0, ge=0, description="normal/lognormal: the standard deviation")

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.distribution == "uniform" and self.max_ms < self.min_ms:
            raise ValueError(f"uniform latency needs max_ms >= min_ms (got {self.min_ms} > {self.max_ms})")
        return self


class Faults(_Model):
    latency: Latency = Field(default_factory=lambda: Latency())
    error_rate: float = Field(0.0, ge=0, le=1, description="share of requests answered with a 5xx")
    reset_rate: float = Field(0.0, ge=0, le=1, description="share of connections closed without an answer")
    timeout_rate: float = Field(0.0, ge=0, le=1, description="share of requests that hang for timeout_s")
    timeout_s: float = Field(30.0, ge=0, description="how long a timed-out request hangs before a 5xx")

    @property
    def active(self) -> bool:
        return bool(
            self.error_rate or self.reset_rate or self.timeout_rate or self.latency.distribution != "none"
        )


class MaintenanceWindow(_Model):
    start: Instant
    end: Instant | None = Field(None, description="none: until ended through the admin endpoint")


class KeySpec(_Model):
    api_key: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    passphrase: str | None = None
    key_version: int = Field(2, ge=1, le=3, description="KuCoin: 1 plain passphrase, 2/3 HMAC'd")
    environment: str = "mainnet"
    permissions: list[str] = Field(default_factory=list, description="the exchange's own vocabulary")
    ip_whitelist: list[str] = Field(default_factory=list)
    created_at: Instant = Field(default_factory=lambda: datetime.now(UTC) - timedelta(days=30))
    expires_at: Instant | None = None
    last_used_at: Instant | None = None
    label: str = ""
    intent: str | None = Field(None, description="the status this key is meant to show")
    enabled: bool = Field(True, description="false: created but not activated")
    deleted: bool = False
    # Demo aids, so one scenario can show statuses that depend on the client's side.
    # --list-keys hands out client_secret / client_passphrase instead of the real ones.
    client_secret: str | None = Field(None, description="a wrong secret handed to clients (secret_mismatch)")
    client_passphrase: str | None = Field(None, description="a wrong passphrase handed to clients")
    clock_offset_ms: int = Field(0, description="extra exchange clock offset seen by requests with this key")

    @field_validator("ip_whitelist")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        check_networks(value)
        return value

    @field_validator("intent")
    @classmethod
    def _intent(cls, value: str | None) -> str | None:
        return check_intent(value)

    def allows_ip(self, ip: str) -> bool:
        if not self.ip_whitelist:
            return True
        addr = ipaddress.ip_address(ip)
        return any(addr in ipaddress.ip_network(n, strict=False) for n in self.ip_whitelist)

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class AccountSpec(_Model):
    id: str = Field(min_length=1, description="the exchange's account id (uid)")
    kyc_level: int = Field(2, ge=0, le=3)
    kyc_required: bool = False
    frozen: bool = False
    banned: bool = False
    api_disabled: bool = False
    region: str = "FR"
    region_restricted: bool = False
    futures_opened: bool = True
    agreement_signed: bool = True
    deposit_addresses: dict[str, str] = Field(default_factory=dict)
    balances: dict[str, str] = Field(default_factory=dict)
    keys: list[KeySpec] = Field(default_factory=list)


class ExchangeSpec(_Model):
    environments: list[str] = Field(default_factory=lambda: ["mainnet"])
    settings: dict[str, Any] = Field(
        default_factory=dict, description="behaviours the reference marks unverified"
    )
    limits: dict[str, float] = Field(default_factory=dict, description="override the published rate limits")
    faults: Faults = Field(default_factory=lambda: Faults())
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    clock_offset_ms: int = Field(0, description="the exchange clock minus real time, in ms")
    accounts: list[AccountSpec] = Field(default_factory=list)

    def in_maintenance(self, now: datetime) -> bool:
        return any(w.start <= now and (w.end is None or now < w.end) for w in self.maintenance)

    def find_key(self, api_key: str) -> tuple[KeySpec, AccountSpec] | None:
        for account in self.accounts:
            for key in account.keys:
                if key.api_key == api_key and not key.deleted:
                    return key, account
        return None


class Scenario(_Model):
    seed: int = Field(0, description="seeds every simulator's fault stream: same seed, same faults")
    admin_token: str | None = Field(None, description="bearer token of the admin endpoint")
    include: list[str] = Field(
        default_factory=list, description="scenario files whose exchanges are merged in (relative paths)"
    )
    exchanges: dict[ExchangeName, ExchangeSpec] = Field(default_factory=dict)


# -- error messages ---------------------------------------------------------------------------


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key: the name itself is wrong
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that holds the field at `loc`, to list the names allowed there."""
    tp: Any = Scenario
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _describe(err: ErrorDetails) -> str:
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = f"; allowed here: {', '.join(model.model_fields)}" if model else ""
        return f"unknown field{allowed}"
    if err["type"] == "missing":
        return "required field is missing"
    if loc and loc[-1] == "[key]" and loc[0] == "exchanges":
        return f"unknown exchange; use one of: {', '.join(EXCHANGES)}"
    msg = err["msg"].removeprefix("Value error, ")
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    shown = err.get("input")
    # Echo short scalar inputs so the reader sees what was wrong, but never a secret.
    if (
        isinstance(shown, str | int | float)
        and not any(w in name for w in ("secret", "passphrase", "token"))
        and repr(shown) not in msg
    ):
        text = repr(shown)
        msg += f" (got {text if len(text) <= 40 else text[:37] + '...'})"
    return msg


def _schema_error(source: str, e: ValidationError) -> ScenarioError:
    errors = e.errors()
    lines = [f"{source}: {len(errors)} problem(s) in the scenario ({DOCS_HINT}):"]
    lines += [f"  {_location(err['loc'])}: {_describe(err)}" for err in errors[:_MAX_PROBLEMS]]
    if len(errors) > _MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - _MAX_PROBLEMS} more; fix these first")
    return ScenarioError("\n".join(lines))


# -- loading ----------------------------------------------------------------------------------


def parse_scenario(
    data: Any, *, source: str = "scenario", now: datetime | None = None, base_dir: Path | None = None
) -> Scenario:
    """Validate scenario data; `include:` paths are resolved against `base_dir` (default: cwd)."""
    return _build(data, source, base_dir or Path.cwd(), now or datetime.now(UTC), ())[0]


def load_scenario(path: str | Path, *, now: datetime | None = None) -> Scenario:
    p = Path(path)
    return _build(_read(p, str(p)), str(p), p.parent, now or datetime.now(UTC), (p.resolve(),))[0]


def _read(p: Path, shown: str) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"cannot read scenario file {shown}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{shown}: not UTF-8 text; save the scenario as UTF-8 YAML or JSON") from None
    kind = "JSON" if p.suffix == ".json" else "YAML"
    try:
        if kind == "JSON":
            return json.loads(text)
        stream = io.StringIO(text)
        stream.name = shown  # PyYAML names the file in its messages
        return yaml.safe_load(stream)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ScenarioError(f"{shown}: not valid {kind}; fix the syntax where shown:\n{e}") from None


def _build(
    data: Any, source: str, base_dir: Path, now: datetime, stack: tuple[Path, ...]
) -> tuple[Scenario, dict[str, str]]:
    """The scenario with its includes merged, and the file each exchange was declared in."""
    if data is None:
        raise ScenarioError(f"{source}: the file is empty; a scenario needs at least 'exchanges:'")
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: the top level must be a mapping with 'exchanges:'")
    try:
        own = Scenario.model_validate(data, context={"now": now})
    except ValidationError as e:
        raise _schema_error(source, e) from None
    _check_unique_keys(own, source)
    origin: dict[str, str] = {name: source for name in own.exchanges}
    if not own.include:
        return own, origin
    exchanges = dict(own.exchanges)
    inherited: dict[str, Any] = {}
    for i, rel in enumerate(own.include):
        where = f"{source}: include[{i}]"
        path = base_dir / rel
        resolved = path.resolve()
        if resolved in stack:
            chain = " -> ".join([*(s.name for s in stack), resolved.name])
            raise ScenarioError(f"{where}: include loop ({chain}); remove one of these includes")
        if not path.is_file():
            raise ScenarioError(
                f"{where}: cannot read {rel!r} ({resolved} does not exist or is not a file); "
                f"include paths are relative to the folder of {source}"
            )
        child, child_origin = _build(_read(path, str(path)), str(path), path.parent, now, (*stack, resolved))
        for name, spec in child.exchanges.items():
            if name in exchanges:
                raise ScenarioError(
                    f"{where}: exchange {name!r} is declared in both {origin[name]} and "
                    f"{child_origin[name]}; declare each exchange in one file only"
                )
            exchanges[name] = spec
            origin[name] = child_origin[name]
        for field in ("seed", "admin_token"):
            if field in child.model_fields_set and field not in inherited:
                inherited[field] = getattr(child, field)
    own_top: dict[str, Any] = {
        f: getattr(own, f) for f in ("seed", "admin_token") if f in own.model_fields_set
    }
    fields: dict[str, Any] = {**inherited, **own_top, "include": own.include, "exchanges": exchanges}
    merged = Scenario(**fields)
    return merged, origin


def _check_unique_keys(scenario: Scenario, source: str) -> None:
    for name, spec in scenario.exchanges.items():
        seen: set[str] = set()
        for account in spec.accounts:
            for key in account.keys:
                if key.api_key in seen:
                    raise ScenarioError(
                        f"{source}: exchanges.{name}: api_key {key.api_key!r} is declared twice; "
                        "each key must be unique within its exchange"
                    )
                seen.add(key.api_key)
                if key.environment not in spec.environments:
                    raise ScenarioError(
                        f"{source}: exchanges.{name}: key {key.label or key.api_key[:6]!r} is in environment "
                        f"{key.environment!r}, which is not served; add it to exchanges.{name}.environments"
                    )
