"""The adapter contract: what every exchange module provides, and the plumbing they share.

An adapter turns one key check into a handful of signed HTTP probes run in parallel,
classifies each raw answer with the exchange's own code table into a `Cause`, and
returns `KeyFacts`: what the exchange told us, in the domain's vocabulary. It decides
nothing about statuses or remedies; that is the diagnosis engine's job one floor up.

Error tree of this room (library errors are translated once, here and in transport.py):

    TransportError                      (transport.py) network-level, the check could not ask
    ├── TransportTimeout
    └── TransportConnectionError
    AdapterConfigError                  an operator mistake: unknown environment, bad base URL
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from keysentry.domain.permissions import Permission
from keysentry.domain.secrets import ApiCredentials
from keysentry.exchanges.transport import HttpTransport, RawResponse, TransportError, TransportTimeout

_T = TypeVar("_T")


class AdapterConfigError(ValueError):
    """The operator configured something unusable (environment, base URL); the message says what."""


class Probe(StrEnum):
    INTROSPECTION = "introspection"  # the key's own permissions / IP list / expiry
    ACCOUNT = "account"  # account id and account flags
    TRADE = "trade"  # a trade-permission probe that places no order
    FUTURES = "futures"  # the futures account
    DEPOSIT_ADDRESS = "deposit_address"
    BALANCE = "balance"
    TRADE_HISTORY = "trade_history"
    SERVER_TIME = "server_time"
    SYSTEM_STATUS = "system_status"


class Cause(StrEnum):
    """What one raw answer means, as far as that one answer can tell."""

    OK = "ok"
    UNKNOWN_KEY = "unknown_key"
    MALFORMED_KEY = "malformed_key"
    KEY_NOT_ACTIVATED = "key_not_activated"
    WRONG_ENVIRONMENT = "wrong_environment"
    BAD_SIGNATURE = "bad_signature"
    BAD_PASSPHRASE = "bad_passphrase"
    CLOCK_SKEW = "clock_skew"
    IP_NOT_ALLOWED = "ip_not_allowed"
    PERMISSION_DENIED = "permission_denied"
    KEY_EXPIRED = "key_expired"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_BANNED = "account_banned"
    API_DISABLED = "api_disabled"
    KYC_REQUIRED = "kyc_required"
    REGION_RESTRICTED = "region_restricted"
    AGREEMENT_PENDING = "agreement_pending"
    FUTURES_NOT_OPENED = "futures_not_opened"
    NOT_FOUND = "not_found"  # e.g. no deposit address for that coin
    # Binance's -2015: unknown key, IP outside the whitelist, or missing permission alike.
    AMBIGUOUS_AUTH = "ambiguous_auth"
    RATE_LIMITED = "rate_limited"
    IP_BANNED = "ip_banned"
    MAINTENANCE = "maintenance"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    UNEXPECTED = "unexpected"  # an answer we do not know; reported with its raw code


# Causes that say nothing about the key: the exchange could not answer this time.
TEMPORARY_CAUSES: frozenset[Cause] = frozenset(
    {Cause.RATE_LIMITED, Cause.IP_BANNED, Cause.MAINTENANCE, Cause.SERVER_ERROR, Cause.TIMEOUT, Cause.NETWORK}
)


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    probe: Probe
    cause: Cause
    http_status: int | None = None
    code: str | None = None  # the exchange's own error code, as text
    message: str | None = None  # the exchange's own message (never contains our secret)
    elapsed_ms: float = 0.0
    retry_after_s: float | None = None
    egress_ip: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.cause is Cause.OK


@dataclass(frozen=True, slots=True)
class CheckRequest:
    credentials: ApiCredentials
    needs_futures: bool = False
    deposit_currency: str | None = None
    pairs: tuple[str, ...] = ()
    # Configured egress addresses; the first is the default. More than one lets an adapter
    # re-ask from another address to tell an IP block from other causes.
    egress_ips: tuple[str, ...] = ()


@dataclass(slots=True)
class KeyFacts:
    """What the exchange told us about one key, in the domain's vocabulary. None means unknown."""

    exchange: str
    environment: str
    outcomes: dict[Probe, ProbeOutcome] = field(default_factory=dict)
    account_id: str | None = None
    permissions: frozenset[Permission] | None = None
    native_permissions: tuple[str, ...] = ()
    ip_restricted: bool | None = None
    ip_whitelist: tuple[str, ...] | None = None  # None: the exchange does not reveal the list
    expires_at: datetime | None = None
    expiry_kind: Literal["key", "trading_authority", "inactivity"] | None = None
    created_at: datetime | None = None
    label: str | None = None
    futures_active: bool | None = None
    deposit_addresses: dict[str, bool] = field(default_factory=dict)
    tradable_pairs: frozenset[str] | None = None
    account_flags: dict[str, Any] = field(default_factory=dict)
    server_time_offset_ms: float | None = None  # exchange clock minus ours, measured
    system_status: Literal["normal", "maintenance"] | None = None
    # The adapter's conclusion: the cause that decides the check (OK when nothing failed),
    # and, when it cannot be pinned, the remaining possible causes, most likely first.
    cause: Cause = Cause.OK
    candidates: tuple[Cause, ...] = ()
    evidence: list[str] = field(default_factory=list)  # short notes on how a cause was told apart

    def outcome(self, probe: Probe) -> ProbeOutcome | None:
        return self.outcomes.get(probe)

    @property
    def latency_ms(self) -> float:
        return max((o.elapsed_ms for o in self.outcomes.values()), default=0.0)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    method: str
    url: str  # with the exact, already encoded query that was signed
    headers: Mapping[str, str]
    body: bytes | None = None


class ExchangeAdapter(ABC):
    """One exchange. Subclasses declare hosts and tables, sign requests and read answers."""

    name: ClassVar[str]
    # environment -> API family -> the exchange's real base URL (scheme + host)
    environments: ClassVar[Mapping[str, Mapping[str, str]]]
    needs_passphrase: ClassVar[bool] = False

    def __init__(
        self,
        transport: HttpTransport,
        *,
        environment: str = "mainnet",
        base_url: str | None = None,
        clock_ms: Any = now_ms,
    ) -> None:
        if environment not in self.environments:
            raise AdapterConfigError(
                f"{self.name} has no environment {environment!r}; use one of: {', '.join(self.environments)}"
            )
        self.transport = transport
        self.environment = environment
        self.clock_ms = clock_ms
        self.base_urls: Mapping[str, str] = _base_urls(type(self), environment, base_url)

    def url(self, family: str, path_and_query: str) -> str:
        return self.base_urls[family].rstrip("/") + path_and_query

    # -- what each exchange provides ------------------------------------------------------------

    @abstractmethod
    async def check(self, request: CheckRequest) -> KeyFacts:
        """Run the probes (in parallel) and return the facts with the deciding cause."""

    @abstractmethod
    def classify(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        """Read one raw answer with the exchange's own code table."""

    # -- shared plumbing --------------------------------------------------------------------------

    async def send(
        self, probe: Probe, request: SignedRequest, *, egress_ip: str | None = None
    ) -> ProbeOutcome:
        """Send one request; network failures become outcomes, never exceptions."""
        started = time.perf_counter()
        try:
            raw = await self.transport.request(
                request.method, request.url, headers=request.headers, body=request.body, egress_ip=egress_ip
            )
        except TransportError as e:
            cause = Cause.TIMEOUT if isinstance(e, TransportTimeout) else Cause.NETWORK
            return ProbeOutcome(probe, cause, message=str(e), elapsed_ms=_since(started), egress_ip=egress_ip)
        outcome = self.classify(probe, raw)
        if sys.getrefcount(outcome) == 2:
            # Only this frame holds the outcome classify just built (the count includes the
            # argument): stamped in place rather than rebuilt, since building a frozen
            # dataclass costs a microsecond and a check does it for every probe.
            object.__setattr__(outcome, "elapsed_ms", raw.elapsed_ms)
            object.__setattr__(outcome, "egress_ip", egress_ip)
            return outcome
        return _with_timing(outcome, raw.elapsed_ms, egress_ip)

    @staticmethod
    async def gather(*coros: Coroutine[Any, Any, _T]) -> list[_T]:
        """The probes' outcomes, in order, the probes run concurrently.

        The first probe runs in the calling task and only the others get a task of their own:
        unlike `asyncio.gather`, no task and no gathering future for the first, so a check of two
        calls makes one task. Probes return outcomes rather than raise; should one raise all the
        same (a bug), the others are cancelled.
        """
        if not coros:
            return []
        others = [asyncio.create_task(c) for c in coros[1:]]
        try:
            results = [await coros[0]]
            for task in others:
                results.append(await task)
        except BaseException:
            for task in others:
                task.cancel()
            raise
        return results


def classify_http(probe: Probe, raw: RawResponse) -> ProbeOutcome | None:
    """The answers every exchange gives the same way at the HTTP level, or None."""
    if raw.status < 500 and raw.status not in (418, 429):
        return None
    retry_after = _retry_after(raw.headers)
    if raw.status == 418:
        return ProbeOutcome(probe, Cause.IP_BANNED, raw.status, retry_after_s=retry_after)
    if raw.status == 429:
        return ProbeOutcome(probe, Cause.RATE_LIMITED, raw.status, retry_after_s=retry_after)
    if raw.status == 503:
        return ProbeOutcome(probe, Cause.MAINTENANCE, raw.status, retry_after_s=retry_after)
    if raw.status >= 500:
        return ProbeOutcome(probe, Cause.SERVER_ERROR, raw.status, retry_after_s=retry_after)
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def _base_urls(cls: type[ExchangeAdapter], environment: str, base_url: str | None) -> Mapping[str, str]:
    """An environment's API families, on `base_url` when given: worked out once, not per check."""
    families = dict(cls.environments[environment])
    if base_url is not None:
        families = {family: replace_origin(url, base_url) for family, url in families.items()}
    return MappingProxyType(families)


def replace_origin(url: str, base_url: str) -> str:
    """Replace scheme and host of `url` by those of `base_url`, keeping url's path."""
    base = urlsplit(base_url)
    if base.scheme not in {"http", "https"} or not base.netloc:
        raise AdapterConfigError(f"base URL {base_url!r} must look like https://host[:port]")
    target = urlsplit(url)
    prefix = base.path.rstrip("/")
    return f"{base.scheme}://{base.netloc}{prefix}{target.path}".rstrip("/")


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _with_timing(o: ProbeOutcome, elapsed_ms: float, egress_ip: str | None) -> ProbeOutcome:
    # Built directly: dataclasses.replace costs 4x more, on every request.
    return ProbeOutcome(
        o.probe, o.cause, o.http_status, o.code, o.message, elapsed_ms, o.retry_after_s, egress_ip, o.data
    )
