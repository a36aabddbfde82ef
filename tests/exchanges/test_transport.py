"""The shared transport against real servers on loopback, and its value objects and mock."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import aiohttp
import pytest
from aiohttp import web

from keysentry.exchanges import transport as transport_module
from keysentry.exchanges.transport import (
    DEFAULT_USER_AGENT,
    HttpTransport,
    MockTransport,
    RawResponse,
    Timeouts,
    Transport,
    TransportConnectionError,
    TransportError,
    TransportTimeout,
)

# Canaries: neither may ever appear in an error message, repr or traceback.
API_KEY = "CANARYKEYvmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7J"
SIGNATURE = "c8db56825ae71d6d79447849e617115fCANARYSIG"
SIGNED_QUERY = f"timestamp=1700000000123&recvWindow=5000&signature={SIGNATURE}"
KEY_HEADERS = {"X-MBX-APIKEY": API_KEY}
FAST = Timeouts(connect=1.0, total=0.3)


def test_public_api_is_pinned() -> None:
    assert set(transport_module.__all__) == {
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
    }
    assert issubclass(TransportTimeout, TransportError)
    assert issubclass(TransportConnectionError, TransportError)


# -- a real server on 127.0.0.1, random port ------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return web.json_response(
        {
            "remote": request.remote,
            "peer_port": peer[1] if peer else None,
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": dict(request.headers),
            "body": (await request.read()).decode(),
        }
    )


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if code == 418:
        return web.json_response(
            {"code": -1003, "msg": "Way too much request weight used; IP banned until 1731234567890."},
            status=418,
            headers={"Retry-After": "120"},
        )
    return web.Response(status=code, text="<html>maintenance</html>", content_type="text/html")


RELEASE = web.AppKey("release", asyncio.Event)


async def _slow(request: web.Request) -> web.Response:
    # Answers only when the fixture tears down, so no test waits for it.
    await request.app[RELEASE].wait()
    return web.json_response({})


async def _set_cookie(request: web.Request) -> web.Response:
    response = web.json_response({})
    response.set_cookie("session", "tracked-by-exchange")
    return response


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/echo")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/cookie", _set_cookie)
    app.router.add_get("/redirect", _redirect)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app[RELEASE].set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(misbehave: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[str]:
    """A TCP server that reads the request head and then misbehaves instead of answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            await misbehave(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def _close_silently(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    writer.transport.abort()


async def _half_answer(writer: asyncio.StreamWriter) -> None:
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{"a":')
    await writer.drain()
    writer.close()


async def _garbage(writer: asyncio.StreamWriter) -> None:
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A listening port whose accept queue is full, so a new connection attempt hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _assert_no_secret(error: BaseException) -> None:
    shown = "".join(traceback.format_exception(error))
    chained: BaseException | None = error
    while chained is not None:
        shown += repr(chained)
        chained = chained.__cause__ or chained.__context__
    for secret in (API_KEY, SIGNATURE, SIGNED_QUERY):
        assert secret not in shown


# -- what reaches the server ----------------------------------------------------------------------


async def test_server_sees_the_chosen_egress_address(server: str) -> None:
    async with Transport(egress_ips=["127.0.0.2", "127.0.0.3"]) as transport:
        seen = {}
        for ip in ("127.0.0.2", "127.0.0.3"):
            response = await transport.request("GET", f"{server}/echo", egress_ip=ip)
            seen[ip] = response.json()["remote"]
        default = (await transport.request("GET", f"{server}/echo")).json()["remote"]
    assert seen == {"127.0.0.2": "127.0.0.2", "127.0.0.3": "127.0.0.3"}
    assert default == "127.0.0.2"  # the first configured address, never the system default


async def test_without_configured_addresses_the_system_default_is_used(server: str) -> None:
    async with Transport() as transport:
        assert transport.egress_ips == ()
        response = await transport.request("GET", f"{server}/echo")
    assert response.json()["remote"] == "127.0.0.1"


async def test_unconfigured_egress_address_is_refused() -> None:
    async with Transport(egress_ips=["127.0.0.2"]) as transport:
        with pytest.raises(ValueError, match=r"'127\.0\.0\.9' is not configured; configured: 127\.0\.0\.2"):
            await transport.request("GET", "http://127.0.0.1:1/x", egress_ip="127.0.0.9")


async def test_query_goes_on_the_wire_byte_for_byte(server: str) -> None:
    # yarl would normally re-encode some of these (%7E to ~, a bare comma); a signed query must not change.
    query = "a=1&b=%2B&c=%7E&d=BTC,USDT&e=x%20y&signature=abc"
    async with Transport() as transport:
        response = await transport.request("GET", f"{server}/echo?{query}")
    assert response.json()["raw_path"] == f"/echo?{query}"


async def test_headers_and_body_arrive_unchanged(server: str) -> None:
    body = b'{"instId":"BTC-USDT","lever":"5"}'
    headers = {"OK-ACCESS-KEY": "k", "Content-Type": "application/json"}
    async with Transport(user_agent="probe/1") as transport, Transport() as plain:
        echoed = (await transport.request("POST", f"{server}/echo", headers=headers, body=body)).json()
        default_agent = (await plain.request("GET", f"{server}/echo")).json()["headers"]
    assert echoed["method"] == "POST"
    assert echoed["body"] == body.decode()
    assert echoed["headers"]["OK-ACCESS-KEY"] == "k"
    assert echoed["headers"]["Content-Type"] == "application/json"
    assert echoed["headers"]["User-Agent"] == "probe/1"
    assert default_agent["User-Agent"] == DEFAULT_USER_AGENT


async def test_one_connection_is_reused_per_egress_address(server: str) -> None:
    async with Transport(egress_ips=["127.0.0.2"]) as transport:
        ports = {(await transport.request("GET", f"{server}/echo")).json()["peer_port"] for _ in range(5)}
    assert len(ports) == 1


async def test_cookies_set_by_the_server_are_not_sent_back(server: str) -> None:
    async with Transport() as transport:
        first = await transport.request("GET", f"{server}/cookie")
        assert "session=tracked-by-exchange" in first.headers["Set-Cookie"]
        echoed = (await transport.request("GET", f"{server}/echo")).json()
    assert "Cookie" not in echoed["headers"]


async def test_redirects_are_returned_not_followed(server: str) -> None:
    async with Transport() as transport:
        response = await transport.request("GET", f"{server}/redirect", headers=KEY_HEADERS)
    assert response.status == 302
    assert response.headers["Location"] == "/echo"


# -- answers are kept raw -------------------------------------------------------------------------


async def test_error_answers_keep_status_headers_and_body(server: str) -> None:
    async with Transport() as transport:
        banned = await transport.request("GET", f"{server}/status/418")
        down = await transport.request("GET", f"{server}/status/503")
    assert banned.status == 418
    assert banned.headers["retry-after"] == "120"  # case-insensitive
    assert banned.json()["code"] == -1003
    assert down.status == 503
    assert down.body == b"<html>maintenance</html>"
    assert down.json() is None
    assert 0 < down.elapsed_ms < 5000


# -- failures become TransportError subclasses with clean messages --------------------------------


async def test_slow_answer_is_a_timeout(server: str) -> None:
    async with Transport() as transport:
        with pytest.raises(TransportTimeout) as caught:
            await transport.request(
                "GET", f"{server}/slow?{SIGNED_QUERY}", headers=KEY_HEADERS, timeouts=FAST
            )
    message = str(caught.value)
    assert message == f"{server.removeprefix('http://')}: no complete answer within 0.3 s"
    assert caught.value.host == server.removeprefix("http://")
    assert isinstance(caught.value.__cause__, TimeoutError)
    _assert_no_secret(caught.value)


async def test_connection_that_cannot_open_in_time_is_a_timeout() -> None:
    with unanswered_port() as port:
        async with Transport(egress_ips=["127.0.0.3"]) as transport:
            with pytest.raises(TransportTimeout) as caught:
                await transport.request(
                    "GET",
                    f"http://127.0.0.1:{port}/x?{SIGNED_QUERY}",
                    headers=KEY_HEADERS,
                    timeouts=Timeouts(connect=0.2, total=2.0),
                )
    assert str(caught.value) == f"127.0.0.1:{port} (from 127.0.0.3): could not connect within 0.2 s"
    # aiohttp's own message quotes the full URL: the chained cause must have been scrubbed.
    assert caught.value.__cause__ is not None
    _assert_no_secret(caught.value)


@pytest.mark.parametrize(
    ("misbehave", "what"),
    [
        (_close_silently, "closed the connection without answering"),
        (_reset, "connection"),
        (_half_answer, "cut off"),
    ],
)
async def test_aborted_connection_is_a_connection_error(
    misbehave: Callable[[asyncio.StreamWriter], Awaitable[None]], what: str
) -> None:
    async with raw_server(misbehave) as url, Transport() as transport:
        with pytest.raises(TransportConnectionError) as caught:
            await transport.request("GET", f"{url}/x?{SIGNED_QUERY}", headers=KEY_HEADERS, timeouts=FAST)
    assert str(caught.value).startswith(url.removeprefix("http://") + ": ")
    assert what in str(caught.value)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    _assert_no_secret(caught.value)


async def test_malformed_answer_is_a_transport_error_with_a_scrubbed_cause() -> None:
    async with raw_server(_garbage) as url, Transport() as transport:
        with pytest.raises(TransportError) as caught:
            await transport.request("GET", f"{url}/x?{SIGNED_QUERY}", headers=KEY_HEADERS, timeouts=FAST)
    assert type(caught.value) is TransportError
    assert str(caught.value) == f"{url.removeprefix('http://')}: the server sent a malformed HTTP answer"
    # aiohttp keeps the request's URL and headers on this error; they must be gone.
    assert isinstance(caught.value.__cause__, aiohttp.ClientResponseError)
    _assert_no_secret(caught.value)


async def test_refused_port_is_a_connection_error() -> None:
    port = _free_port()
    async with Transport() as transport:
        with pytest.raises(TransportConnectionError) as caught:
            await transport.request("GET", f"http://127.0.0.1:{port}/x?{SIGNED_QUERY}", headers=KEY_HEADERS)
    assert str(caught.value) == f"127.0.0.1:{port}: could not connect (connection refused)"
    _assert_no_secret(caught.value)


async def test_relative_or_non_http_urls_are_refused() -> None:
    async with Transport() as transport:
        for url in ("/api/v3/account", "ftp://127.0.0.1/x", f"file:///etc/passwd?{SIGNED_QUERY}"):
            with pytest.raises(ValueError, match="absolute http") as caught:
                await transport.request("GET", url)
            assert SIGNATURE not in str(caught.value)


# -- lifecycle ------------------------------------------------------------------------------------


async def test_close_closes_every_session_and_refuses_later_requests(server: str) -> None:
    transport = Transport(egress_ips=["127.0.0.2", "127.0.0.3"])
    for ip in transport.egress_ips:
        await transport.request("GET", f"{server}/echo", egress_ip=ip)
    sessions = list(transport._sessions.values())
    assert len(sessions) == 2 and not any(s.closed for s in sessions)
    await transport.close()
    assert all(s.closed for s in sessions)
    with pytest.raises(RuntimeError, match="closed"):
        await transport.request("GET", f"{server}/echo")


def test_a_transport_refuses_a_second_event_loop() -> None:
    transport = Transport()
    port = _free_port()

    async def attempt() -> None:
        with contextlib.suppress(TransportConnectionError):
            await transport.request("GET", f"http://127.0.0.1:{port}/x")

    asyncio.run(attempt())
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(attempt())
    for session in transport._sessions.values():  # nothing is open: the only attempt was refused
        asyncio.run(session.close())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"egress_ips": ["127.0.0.1", "localhost"]}, ValueError, "'localhost' is not an IP address"),
        ({"egress_ips": ["127.0.0.2", "127.0.0.2"]}, ValueError, "listed twice"),
        ({"egress_ips": "127.0.0.2"}, TypeError, "not one string"),
        ({"limit_per_host": 0}, ValueError, "at least 1"),
    ],
)
def test_transport_refuses_bad_configuration(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Transport(**kwargs)  # type: ignore[arg-type]


def test_repr_shows_configuration_only() -> None:
    assert repr(Transport(egress_ips=["127.0.0.2"])) == (
        "Transport(egress_ips=('127.0.0.2',), timeouts=Timeouts(connect=5.0, total=10.0))"
    )


# -- value objects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"connect": 0}, ValueError, "connect must be a positive"),
        ({"total": -1}, ValueError, "total must be a positive"),
        ({"total": math.nan}, ValueError, "finite"),
        ({"connect": math.inf}, ValueError, "finite"),
        ({"total": True}, TypeError, "number of seconds"),
        ({"connect": "5"}, TypeError, "number of seconds"),
    ],
)
def test_timeouts_refuse_unusable_values(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Timeouts(**kwargs)  # type: ignore[arg-type]


def test_timeouts_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Timeouts(1.0, 2.0)  # type: ignore[call-arg]
    timeouts = Timeouts(connect=1.5, total=3)
    with pytest.raises(AttributeError):
        timeouts.total = 4  # type: ignore[misc]
    client = timeouts.client_timeout()
    assert (client.sock_connect, client.total) == (1.5, 3)


def test_raw_response_json_and_headers() -> None:
    response = RawResponse(400, {"Content-Type": "application/json"}, b'{"code":-1022,"msg":"Signature"}')
    assert response.json() == {"code": -1022, "msg": "Signature"}
    assert response.headers["content-type"] == "application/json"
    assert RawResponse(502, {}, b"<html>bad gateway</html>").json() is None
    assert RawResponse(200).json() is None
    assert RawResponse(200, {}, b"\xff\xfe\x00garbage").json() is None
    assert RawResponse(200, {}, b"[" * 100_000).json() is None  # too deep to parse: not JSON to us


def test_raw_response_from_json() -> None:
    response = RawResponse.from_json(401, {"code": "50111"}, headers={"X-Extra": "1"}, elapsed_ms=3.5)
    assert response.status == 401
    assert response.json() == {"code": "50111"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-extra"] == "1"
    assert response.elapsed_ms == 3.5


def test_raw_response_repr_leaves_the_body_out() -> None:
    body = f"error sign! origin_string[1700000000123{API_KEY}5000]".encode()
    response = RawResponse(200, {"X-Bapi-Limit": "10"}, body, 12.25)
    assert repr(response) == f"RawResponse(status=200, body=<{len(body)} bytes>, elapsed_ms=12.2)"
    assert API_KEY not in repr(response)


# -- the mock and the protocol --------------------------------------------------------------------


def test_both_transports_satisfy_the_protocol() -> None:
    assert isinstance(Transport(), HttpTransport)
    assert isinstance(MockTransport(lambda *_: RawResponse(200)), HttpTransport)


async def test_mock_transport_with_sync_and_async_handlers() -> None:
    def sync_handler(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        return RawResponse.from_json(200, {"method": method, "url": url, "key": headers.get("K")})

    async def async_handler(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        await asyncio.sleep(0)
        return RawResponse(201, {}, body or b"")

    sync_mock = MockTransport(sync_handler)
    answer = await sync_mock.request("GET", "https://api.binance.com/x?a=1", headers={"K": "v"})
    assert answer.json() == {"method": "GET", "url": "https://api.binance.com/x?a=1", "key": "v"}

    async_mock = MockTransport(async_handler, egress_ips=["127.0.0.2", "127.0.0.3"])
    answer = await async_mock.request("POST", "https://www.okx.com/y", body=b"{}", egress_ip="127.0.0.3")
    assert (answer.status, answer.body) == (201, b"{}")
    assert [(s.method, s.egress_ip, s.body) for s in async_mock.sent] == [("POST", "127.0.0.3", b"{}")]
    assert "body" not in repr(async_mock.sent[0]) and "headers" not in repr(async_mock.sent[0])


async def test_mock_transport_checks_like_the_real_one() -> None:
    async def failing(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        raise TransportTimeout("api.bybit.com:443: no complete answer within 10 s", host="api.bybit.com:443")

    mock = MockTransport(failing, egress_ips=["127.0.0.2"])
    with pytest.raises(ValueError, match="not configured"):
        await mock.request("GET", "https://api.bybit.com/v5/user/query-api", egress_ip="127.0.0.4")
    with pytest.raises(ValueError, match="absolute http"):
        await mock.request("GET", "/v5/user/query-api")
    with pytest.raises(TransportTimeout):
        await mock.request("GET", "https://api.bybit.com/v5/user/query-api")
    assert mock.sent[-1].egress_ip == "127.0.0.2"  # the default, as Transport resolves it
    await mock.close()
    with pytest.raises(RuntimeError, match="closed"):
        await mock.request("GET", "https://api.bybit.com/v5/user/query-api")
