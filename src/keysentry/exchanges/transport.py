"""The one HTTP layer every adapter sends through: shared aiohttp sessions, egress choice, timeouts.

aiohttp's errors are translated here, once, into this tree (the cause kept with `from`):

    TransportError                  no usable HTTP answer; says nothing about the key
    ├── TransportTimeout            no connection or no complete answer in time
    └── TransportConnectionError    refused, reset, closed early, name not resolved, TLS failed

Any HTTP answer, 4xx and 5xx included, is returned as a `RawResponse` with its raw status,
headers and body: adapters classify answers, the transport never does.

Error messages name the host and what happened, never the query (it carries a signature) nor
the headers (they carry the API key); the chained library exception is scrubbed the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import aiohttp
from aiohttp.client_reqrep import RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from keysentry import __version__

__all__ = [
    "DEFAULT_TIMEOUTS",
    "DEFAULT_USER_AGENT",
    "HttpTransport",
    "MockHandler",
    "MockTransport",
    "RawResponse",
    "SentRequest",
    "Timeouts",
    "Transport",
    "TransportConnectionError",
    "TransportError",
    "TransportTimeout",
]

DEFAULT_USER_AGENT = f"keysentry/{__version__}"
_HIDDEN = "<hidden>"


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeouts:
    """Seconds allowed to open the TCP connection (`connect`) and for the whole request (`total`)."""

    connect: float = 5.0
    total: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "total"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"timeout {name} must be a number of seconds, not {type(value).__name__}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"timeout {name} must be a positive, finite number of seconds, not {value!r}"
                )

    def client_timeout(self) -> aiohttp.ClientTimeout:
        # sock_connect, not connect: aiohttp's `connect` also counts waiting for a free pooled
        # connection, which is our own queueing, not the exchange being unreachable.
        return aiohttp.ClientTimeout(total=self.total, sock_connect=self.connect)


DEFAULT_TIMEOUTS = Timeouts()


def _empty_headers() -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict())


@dataclass(frozen=True, slots=True, repr=False)
class RawResponse:
    """One HTTP answer as received. `headers` is case-insensitive (a plain mapping given is converted)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=_empty_headers)
    body: bytes = b""
    elapsed_ms: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.headers, CIMultiDictProxy):
            object.__setattr__(self, "headers", CIMultiDictProxy(CIMultiDict(self.headers)))

    @classmethod
    def from_json(
        cls,
        status: int,
        payload: object,
        *,
        headers: Mapping[str, str] | None = None,
        elapsed_ms: float = 0.0,
    ) -> RawResponse:
        """An answer carrying `payload` as a JSON body, for fakes and simulated answers."""
        merged = CIMultiDict({"Content-Type": "application/json"})
        merged.update(headers or {})
        return cls(status, CIMultiDictProxy(merged), json.dumps(payload).encode(), elapsed_ms)

    def json(self) -> Any:
        """The parsed JSON body, or None when the body is empty or not JSON (an HTML error page, say)."""
        body = self.body
        if not body:
            return None
        try:
            if body[0] == 0x7B and len(body) > 1 and body[1]:
                # "{" then no NUL: the UTF-8 that json.loads would detect, without its detection.
                return json.loads(body.decode("utf-8", "surrogatepass"))
            return json.loads(body)
        except (ValueError, RecursionError):
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        # The body stays out: some exchanges echo the signed string, API key included (Bybit 10004).
        return f"RawResponse(status={self.status}, body=<{len(self.body)} bytes>, elapsed_ms={self.elapsed_ms:.1f})"


class TransportError(Exception):
    """The request got no usable HTTP answer. `host` is host:port; the message never holds secrets."""

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host


class TransportTimeout(TransportError):
    """No connection, or no complete answer, within the allowed time."""


class TransportConnectionError(TransportError):
    """The connection could not be opened or was lost: refused, reset, closed early, DNS, TLS."""


@runtime_checkable
class HttpTransport(Protocol):
    """What adapters send through: `Transport` in production, `MockTransport` in unit tests."""

    @property
    def egress_ips(self) -> tuple[str, ...]: ...

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        egress_ip: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> RawResponse: ...

    async def close(self) -> None: ...


def _validated_egress(egress_ips: Sequence[str]) -> tuple[str, ...]:
    if isinstance(egress_ips, str):
        raise TypeError("egress_ips must be a sequence of addresses, not one string")
    ips = tuple(egress_ips)
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"egress address {ip!r} is not an IP address") from None
    if len(set(ips)) != len(ips):
        raise ValueError(f"egress addresses are listed twice: {', '.join(ips)}")
    return ips


def _choose_egress(configured: tuple[str, ...], requested: str | None) -> str | None:
    """The source address to use: the requested one if configured; by default the first configured."""
    if requested is None:
        # With addresses configured, the system default would be an address users never whitelisted.
        return configured[0] if configured else None
    if requested in configured:
        return requested
    listed = ", ".join(configured) if configured else "none (the system default is used)"
    raise ValueError(f"egress address {requested!r} is not configured; configured: {listed}")


def _target(url: str) -> URL:
    # encoded=True: the query goes on the wire byte for byte as given, because it was signed.
    target = URL(url, encoded=True)
    if target.scheme not in ("http", "https") or not target.host:
        raise ValueError(f"not an absolute http(s) URL (scheme {target.scheme!r}, host {target.host!r})")
    return target


class Transport:
    """Shared HTTP client: one aiohttp session per egress address, created lazily in the running loop.

    `egress_ip=None` sends from the first configured address, or from the system default when
    none is configured. Sessions keep no cookies (an exchange's cookies must never follow a
    request made for another key) and follow no redirects (the API key header would go along).
    Set Content-Type yourself when sending a body; aiohttp would call bytes octet-stream.
    """

    def __init__(
        self,
        *,
        egress_ips: Sequence[str] = (),
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        limit_per_host: int = 100,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if limit_per_host < 1:
            raise ValueError(f"limit_per_host must be at least 1, not {limit_per_host}")
        self._egress_ips = _validated_egress(egress_ips)
        self._timeouts = timeouts
        self._client_timeout = timeouts.client_timeout()
        self._limit_per_host = limit_per_host
        self._user_agent = user_agent
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def egress_ips(self) -> tuple[str, ...]:
        return self._egress_ips

    @property
    def timeouts(self) -> Timeouts:
        return self._timeouts

    def __repr__(self) -> str:
        return f"Transport(egress_ips={self._egress_ips!r}, timeouts={self._timeouts!r})"

    def _session(self, source: str | None) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                raise RuntimeError("this Transport belongs to another event loop; create one per loop")
            self._loop = loop
        session = self._sessions.get(source)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=0,  # the per-host limit is the one that matters: exchanges count per host
                limit_per_host=self._limit_per_host,
                local_addr=(source, 0) if source is not None else None,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": self._user_agent},
                timeout=self._client_timeout,
                raise_for_status=False,
                trust_env=False,  # a proxy from the environment would hide the chosen egress address
            )
            self._sessions[source] = session
        return session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        egress_ip: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> RawResponse:
        if self._closed:
            raise RuntimeError("this Transport is closed")
        source = _choose_egress(self._egress_ips, egress_ip)
        target = _target(url)
        session = self._session(source)
        chosen = self._timeouts if timeouts is None else timeouts
        client_timeout = self._client_timeout if timeouts is None else timeouts.client_timeout()
        started = time.perf_counter()
        try:
            async with session.request(
                method,
                target,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=client_timeout,
            ) as response:
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _translate(e, target, source, chosen) from e
        return RawResponse(response.status, response.headers, payload, (time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        self._closed = True
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _translate(e: BaseException, target: URL, source: str | None, timeouts: Timeouts) -> TransportError:
    host = f"{target.host}:{target.port}"
    where = f"{host} (from {source})" if source else host
    _scrub(e, target)
    # Order matters: aiohttp's timeout errors are also connection errors.
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return TransportTimeout(f"{where}: could not connect within {timeouts.connect:g} s", host=host)
    if isinstance(e, TimeoutError):
        return TransportTimeout(f"{where}: no complete answer within {timeouts.total:g} s", host=host)
    if isinstance(e, aiohttp.ClientConnectorDNSError):
        return TransportConnectionError(f"{where}: the host name could not be resolved", host=host)
    if isinstance(e, aiohttp.ClientSSLError):
        return TransportConnectionError(f"{where}: the TLS handshake or certificate check failed", host=host)
    if isinstance(e, aiohttp.ClientConnectorError):
        return TransportConnectionError(f"{where}: could not connect ({_os_reason(e.os_error)})", host=host)
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return TransportConnectionError(
            f"{where}: the server closed the connection without answering", host=host
        )
    if isinstance(e, aiohttp.ClientPayloadError):
        return TransportConnectionError(f"{where}: the answer was cut off", host=host)
    if isinstance(e, OSError):  # ClientOSError, ClientConnectionResetError
        return TransportConnectionError(f"{where}: the connection was lost ({_os_reason(e)})", host=host)
    if isinstance(e, aiohttp.ClientConnectionError):
        return TransportConnectionError(f"{where}: the connection failed ({type(e).__name__})", host=host)
    if isinstance(e, aiohttp.ClientResponseError):
        return TransportError(f"{where}: the server sent a malformed HTTP answer", host=host)
    return TransportError(f"{where}: the request failed ({type(e).__name__})", host=host)


def _os_reason(error: OSError) -> str:
    if error.errno:
        return os.strerror(error.errno).lower()
    return type(error).__name__


def _scrub(error: BaseException, target: URL) -> None:
    """Hide the query and request headers in the library exceptions we chain as the cause.

    aiohttp quotes the full URL in some messages (a connect timeout, a malformed answer) and
    keeps the request headers on response errors; a logged traceback would show them.
    """
    queries = {q for q in (target.raw_query_string, target.query_string) if q}
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientResponseError):
            info = current.request_info
            current.request_info = RequestInfo(
                info.url.with_query(None), info.method, _empty_headers(), info.real_url.with_query(None)
            )
            current.args = (current.request_info, current.history)
        if queries and any(isinstance(arg, str) for arg in current.args):
            current.args = tuple(_hide(arg, queries) if isinstance(arg, str) else arg for arg in current.args)
        current = current.__cause__ or current.__context__


def _hide(text: str, queries: set[str]) -> str:
    for query in queries:
        text = text.replace(query, _HIDDEN)
    return text


# -- a transport for unit tests of one unit -----------------------------------------------------------

MockHandler = Callable[[str, str, Mapping[str, str], bytes | None], RawResponse | Awaitable[RawResponse]]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request a `MockTransport` received, with the egress address it resolved to."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = field(repr=False)
    egress_ip: str | None
    timeouts: Timeouts | None


class MockTransport:
    """Answers in-process through `handler(method, url, headers, body)`, sync or async.

    It checks egress addresses and URLs like `Transport` and records every request in `sent`.
    The record is appended just before the handler runs, so a handler that must answer per
    egress address reads `mock.sent[-1].egress_ip`. A handler raises TransportTimeout or
    TransportConnectionError to simulate a network failure.
    """

    def __init__(self, handler: MockHandler, *, egress_ips: Sequence[str] = ()) -> None:
        self._handler = handler
        self._egress_ips = _validated_egress(egress_ips)
        self.sent: list[SentRequest] = []
        self.closed = False

    @property
    def egress_ips(self) -> tuple[str, ...]:
        return self._egress_ips

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        egress_ip: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> RawResponse:
        if self.closed:
            raise RuntimeError("this MockTransport is closed")
        source = _choose_egress(self._egress_ips, egress_ip)
        _target(url)
        sent_headers: Mapping[str, str] = dict(headers or {})
        self.sent.append(SentRequest(method, url, sent_headers, body, source, timeouts))
        answer = self._handler(method, url, sent_headers, body)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
