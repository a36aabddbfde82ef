"""Webhook delivery: signed POSTs to tenants' endpoints, retried with backoff, every attempt logged.

Signing (docs/webhooks.md has the receiver's side, with code to copy):

    Keysentry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>[,v1=<...>]
    Keysentry-Event-Id: <the event id, the same on every attempt: de-duplicate on it>

The timestamp is signed with the body, so a captured request cannot be replayed once it is
older than the receiver's tolerance (5 minutes by default). During a secret rotation both the
new and the previous secret sign, giving two v1 entries.

Delivery is at least once: an attempt that timed out may still have been processed, so the same
event can arrive twice and receivers de-duplicate on the event id. Redirects are never followed
(the endpoint must be registered with its final URL); endpoint URLs must be http(s), and unless
the operator allows private networks they must resolve to public addresses only, checked when
connecting so a DNS answer cannot be swapped after the check (no server-side request forgery
into the service's own network); hosts that lead to a non-public address without DNS (address
literals, `localhost`, shorthand IPv4 such as 127.1) are refused by `check_url` already. Nothing
logged or recorded carries the secret, the signature or any part of the endpoint URL, its host
included (webhook URLs often embed a token, in the path or in a subdomain): the endpoint's id
stands for it, and connection errors are reduced to a reason that names no host or address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import random
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Literal, Protocol, Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from keysentry import __version__
from keysentry.domain.secrets import Secret
from keysentry.monitor.events import Event, EventType
from keysentry.monitor.metrics import MonitorMetrics

__all__ = [
    "ATTEMPT_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "DeliveryAttempt",
    "DeliveryLog",
    "DeliveryResult",
    "MemoryDeliveryLog",
    "RetryPolicy",
    "SignatureError",
    "WebhookEndpoint",
    "WebhookSender",
    "WebhookURLError",
    "backoff_delay",
    "check_url",
    "new_secret",
    "sign",
    "signature_header",
    "verify",
]

SIGNATURE_HEADER = "Keysentry-Signature"
EVENT_ID_HEADER = "Keysentry-Event-Id"
EVENT_TYPE_HEADER = "Keysentry-Event-Type"
ATTEMPT_HEADER = "Keysentry-Delivery-Attempt"
USER_AGENT = f"keysentry-webhooks/{__version__}"
_EXCERPT_BYTES = 512  # enough of the receiver's answer to debug with, and no more is read


class SignatureError(ValueError):
    """A webhook request that must be rejected; the message says why (never the secret)."""


class WebhookURLError(ValueError):
    """An endpoint URL keysentry will not send to; the message says why."""


# -- signing ---------------------------------------------------------------------------------------


def new_secret() -> Secret:
    """A fresh endpoint secret, shown to the tenant once at registration."""
    return Secret("whsec_" + secrets.token_urlsafe(32))


def sign(secret: Secret | str, body: bytes, timestamp: int) -> str:
    """hex HMAC-SHA256 under the secret (its UTF-8 text as the key) of `"<timestamp>." + body`."""
    key = (secret.reveal() if isinstance(secret, Secret) else secret).encode()
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets_: Sequence[Secret | str], body: bytes, timestamp: int) -> str:
    if not secrets_:
        raise ValueError("a signature needs at least one secret")
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, body, timestamp)}" for s in secrets_)])


def verify(
    secret: Secret | str, header: str, body: bytes, *, tolerance_s: float = 300, now: float | None = None
) -> int:
    """Check a delivered request; return its signed timestamp or raise `SignatureError`."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name == "t":
            timestamps.append(value)
        elif sep and name == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: expected t=<unix seconds>,v1=<hex>")
    timestamp = int(timestamps[0])
    expected = sign(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("the signature does not match the body and timestamp under this secret")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_s:
        raise SignatureError(
            f"the signed timestamp is {abs(age):.0f} s {'old' if age > 0 else 'in the future'}, "
            f"beyond the {tolerance_s:g} s tolerance: a replay or a wrong clock"
        )
    return timestamp


# -- endpoints ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A tenant's registered receiver. `event_types` None: every type. `url` is never logged."""

    id: str
    tenant_id: str
    url: str = field(repr=False)
    secret: Secret
    previous_secret: Secret | None = None  # still signs while receivers switch to the new one
    event_types: frozenset[str] | None = None

    def accepts(self, event: Event) -> bool:
        return (
            event.type is EventType.TEST or self.event_types is None or event.type.value in self.event_types
        )

    @property
    def signing_secrets(self) -> tuple[Secret, ...]:
        return (self.secret,) if self.previous_secret is None else (self.secret, self.previous_secret)


_PRIVATE_URL = (
    "a webhook URL must point to a public address; private, loopback and link-local ones are refused"
)


def check_url(url: str, *, allow_private: bool = False) -> URL:
    """The URL if keysentry may send to it: http(s), a host, no credentials and, unless
    `allow_private`, no host that names a non-public address without asking DNS (see
    `_names_a_private_host`). Registration and every delivery attempt call it."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise WebhookURLError("the webhook URL cannot be parsed") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookURLError("a webhook URL must be an absolute http:// or https:// URL")
    if parsed.user is not None or parsed.password is not None:
        raise WebhookURLError("a webhook URL must not carry a user name or password")
    if not allow_private and _names_a_private_host(parsed.host):
        raise WebhookURLError(_PRIVATE_URL)
    return parsed


def _names_a_private_host(host: str) -> bool:
    """Whether the host leads to a non-public address without asking DNS: an address literal,
    `localhost` and `*.localhost` (RFC 6761: loopback, answered locally), and the numeric IPv4
    forms resolvers accept that are not address literals (127.1, 2130706433, 0x7f.1, 0177.0.0.1).
    Other names are checked when connecting (`_PublicOnlyResolver`)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(name)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, ValueError):
            return False  # a name: its addresses are checked when connecting
    return not _is_public(address)


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class _NonPublicHost(OSError):
    """A name that resolved to non-public addresses only. Its message names no host: it ends up
    in the delivery log, and a host can carry a token too."""


class _PublicOnlyResolver(AbstractResolver):
    """Resolves names, then drops every non-public address: a name cannot lead into our network."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if _is_public(ipaddress.ip_address(r["host"]))]
        if not public:
            raise _NonPublicHost("the host resolves only to private, loopback or link-local addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


# -- the delivery log --------------------------------------------------------------------------------

Outcome = Literal["delivered", "retrying", "failed"]


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One attempt to deliver one event to one endpoint, as the delivery log keeps it."""

    event_id: str
    event_type: str
    tenant_id: str
    endpoint_id: str
    attempt: int  # 1 for the first
    sent_at: datetime
    outcome: Outcome  # retrying: failed, another attempt follows at next_attempt_at
    http_status: int | None = None
    error: str | None = None  # why it failed, in words; never the URL or a header
    duration_ms: float = 0.0
    response_excerpt: str = ""
    next_attempt_at: datetime | None = None


class DeliveryLog(Protocol):
    """Where attempts are recorded (the store implements it; `MemoryDeliveryLog` in tests)."""

    async def record(self, attempt: DeliveryAttempt) -> None: ...


class MemoryDeliveryLog:
    def __init__(self) -> None:
        self.attempts: list[DeliveryAttempt] = []

    async def record(self, attempt: DeliveryAttempt) -> None:
        self.attempts.append(attempt)

    def for_event(self, event_id: str) -> list[DeliveryAttempt]:
        return [a for a in self.attempts if a.event_id == event_id]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    event_id: str
    endpoint_id: str
    delivered: bool
    attempts: int
    last: DeliveryAttempt


# -- retries -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Attempts per event and endpoint and the waits between them: by default 15 attempts spread
    over 7 to 14 hours (waits of 30 s doubling up to 2 h), long enough to outlast a receiver's
    deploy or a night's outage."""

    max_attempts: int = 15
    base_s: float = 30.0
    cap_s: float = 3600.0 * 2
    connect_timeout_s: float = 5.0
    total_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        for name in ("base_s", "cap_s", "connect_timeout_s", "total_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")


def backoff_delay(
    attempt: int, *, base_s: float, cap_s: float, rng: random.Random, retry_after_s: float | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Jittered between half and all of min(cap, base·2^(attempt-1)): deliveries that failed together
    (a receiver's outage) come back spread out, and none comes back at once. A receiver's
    Retry-After is honoured, up to the cap.
    """
    bound = min(cap_s, base_s * 2.0 ** min(max(attempt, 1) - 1, 60))
    delay = bound * (0.5 + 0.5 * rng.random())
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap_s))
    return delay


# -- the sender --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int | None = None
    error: str | None = None
    retryable: bool = True
    retry_after_s: float | None = None
    excerpt: str = ""
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookSender:
    """Delivers events over one aiohttp session of its own. Create and use it in one event loop."""

    def __init__(
        self,
        log: DeliveryLog,
        *,
        policy: RetryPolicy | None = None,
        allow_private: bool = False,
        metrics: MonitorMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.log = log
        self.policy = policy or RetryPolicy()
        self.allow_private = allow_private
        self._metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=None if self.allow_private else _PublicOnlyResolver(), limit_per_host=20
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing a receiver sets may follow to another one
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(
                    total=self.policy.total_timeout_s, sock_connect=self.policy.connect_timeout_s
                ),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def deliver(self, event: Event, endpoint: WebhookEndpoint) -> DeliveryResult:
        """Attempt until delivered, refused for good, or out of attempts; sleeps between attempts."""
        number = 1
        while True:
            record = await self.attempt(event, endpoint, number)
            if record.outcome != "retrying" or record.next_attempt_at is None:
                return DeliveryResult(event.id, endpoint.id, record.outcome == "delivered", number, record)
            wait = (record.next_attempt_at - record.sent_at).total_seconds()
            await self._sleep(max(0.0, wait))
            number += 1

    async def attempt(self, event: Event, endpoint: WebhookEndpoint, number: int) -> DeliveryAttempt:
        """One attempt, recorded in the log. A caller scheduling retries itself (a task queue)
        calls this with increasing numbers at each record's `next_attempt_at`."""
        sent = self._clock()
        answer = await self._post(event, endpoint, number, int(sent))
        final = answer.ok or not answer.retryable or number >= self.policy.max_attempts
        next_at: datetime | None = None
        if not final:
            delay = backoff_delay(
                number,
                base_s=self.policy.base_s,
                cap_s=self.policy.cap_s,
                rng=self._rng,
                retry_after_s=answer.retry_after_s,
            )
            next_at = datetime.fromtimestamp(sent, UTC) + timedelta(seconds=delay)
        outcome: Outcome = "delivered" if answer.ok else "failed" if final else "retrying"
        record = DeliveryAttempt(
            event_id=event.id,
            event_type=event.type.value,
            tenant_id=endpoint.tenant_id,
            endpoint_id=endpoint.id,
            attempt=number,
            sent_at=datetime.fromtimestamp(sent, UTC),
            outcome=outcome,
            http_status=answer.status,
            error=answer.error,
            duration_ms=answer.duration_ms,
            response_excerpt=answer.excerpt,
            next_attempt_at=next_at,
        )
        await self.log.record(record)
        if self._metrics is not None and final:
            self._metrics.record_delivery(event.type, delivered=answer.ok)
        return record

    async def _post(self, event: Event, endpoint: WebhookEndpoint, number: int, timestamp: int) -> _Answer:
        if endpoint.tenant_id != event.tenant_id:
            raise ValueError("an event is delivered only to endpoints of its own tenant")
        try:
            target = check_url(endpoint.url, allow_private=self.allow_private)
        except WebhookURLError as e:
            return _Answer(error=f"not sent: {e}", retryable=False)
        body = event.body()
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event.id,
            EVENT_TYPE_HEADER: event.type.value,
            ATTEMPT_HEADER: str(number),
            SIGNATURE_HEADER: signature_header(endpoint.signing_secrets, body, timestamp),
        }
        started = time.perf_counter()
        try:
            async with self._client().post(
                target, data=body, headers=headers, allow_redirects=False
            ) as response:
                excerpt = (await response.content.read(_EXCERPT_BYTES)).decode("utf-8", "replace")
                status, retry_after = response.status, _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            return _Answer(
                error=f"no answer within {self.policy.total_timeout_s:g} s", duration_ms=_ms(started)
            )
        except aiohttp.ClientConnectorError as e:
            return _Answer(error=f"could not connect: {_reason(e)}", duration_ms=_ms(started))
        except aiohttp.InvalidURL:  # its text quotes the URL; and no later attempt would fare better
            return _Answer(error="not sent: the HTTP client cannot use this URL", retryable=False)
        except aiohttp.ClientError as e:
            return _Answer(error=f"the connection failed ({type(e).__name__})", duration_ms=_ms(started))
        duration = _ms(started)
        if 300 <= status < 400:
            why = "redirects are not followed: register the final URL"
            return _Answer(status, why, retryable=False, excerpt=excerpt, duration_ms=duration)
        if status == 410:
            why = "the receiver says the endpoint is gone (410)"
            return _Answer(status, why, retryable=False, excerpt=excerpt, duration_ms=duration)
        error = None if 200 <= status < 300 else f"the receiver answered HTTP {status}"
        return _Answer(status, error, retry_after_s=retry_after, excerpt=excerpt, duration_ms=duration)


def _reason(error: aiohttp.ClientConnectorError) -> str:
    """Why connecting failed, in words that name neither the endpoint's host nor its address:
    aiohttp's own text, the resolver's, TLS's and the socket's repeat them, so none is used as is."""
    os_error = error.os_error
    if isinstance(os_error, _NonPublicHost):
        return str(os_error)
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return "the endpoint's TLS certificate could not be verified"
    if isinstance(os_error, ssl.SSLError):
        return f"the TLS handshake failed ({os_error.reason or type(os_error).__name__})"
    if isinstance(error, aiohttp.ClientConnectorDNSError) or isinstance(os_error, socket.gaierror):
        return "the host name cannot be resolved"
    if os_error.errno is not None and os_error.errno > 0:
        return os.strerror(os_error.errno)  # "Connection refused", "Network is unreachable"...
    return type(os_error).__name__


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
