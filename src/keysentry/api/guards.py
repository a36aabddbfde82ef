"""ASGI middleware around every request: the body size limit, the catch-all, metrics and access log.

`BodyLimit` refuses a body larger than the limit with 413 before the application reads it: at
once when Content-Length says so, else while it arrives (chunked bodies count too).

`Guard` is the last line: an exception no handler knew becomes a 500 problem without details,
logged by type and code location only (an exception's message can quote input, and input may be
a secret). Starlette's own error middleware would log the full traceback, message included;
nothing reaches it. It also times every request for the metrics and writes the access log line:
method, route template (never the real path, which holds ids), status and duration.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keysentry.api import problems
from keysentry.api.metrics import ApiMetrics

log = logging.getLogger("keysentry.api")
access = logging.getLogger("keysentry.api.access")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _send_problem(send: Send, scope: Scope, slug: str, detail: str) -> None:
    kind = problems.KINDS[slug]
    body = json.dumps(problems.content(kind, detail, scope.get("path"))).encode()
    raw = [(b"content-type", problems.MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": kind.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return (
            f"the request body is larger than {self.max_bytes} bytes; send only the fields the endpoint takes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                await _send_problem(send, scope, "bad-request", "the Content-Length header is not a number")
                return
            if size > self.max_bytes:
                await _send_problem(send, scope, "payload-too-large", self._too_large())
                return
        # Read the whole (small) body here, so a chunked body over the limit is refused as well.
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body: nothing to answer
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await _send_problem(send, scope, "payload-too-large", self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _where(exc: BaseException) -> str:
    """Where an exception was raised, as file:line in function, for each exception in the chain."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 5:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)[-3:]
        trail = " <- ".join(
            f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} in {f.name}" for f in reversed(frames)
        )
        parts.append(f"{type(current).__name__} at {trail or 'unknown'}")
        current = current.__cause__ or current.__context__
    return "; caused by ".join(parts)


class Guard:
    def __init__(
        self, app: ASGIApp, *, metrics: Callable[[], ApiMetrics | None], static_paths: Callable[[], set[str]]
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._static_paths = static_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def watch(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            route = self._route(scope)
            log.error("unhandled %s on %s %s", _where(exc), scope.get("method"), route)
            if not response_started:
                status = 500
                await _send_problem(
                    send, scope, "internal-error", "something went wrong on our side; it has been logged"
                )
        finally:
            elapsed = time.perf_counter() - started
            route = self._route(scope)
            metrics = self._metrics()
            if metrics is not None:
                metrics.observe(route, str(scope.get("method", "")), status, elapsed)
            access.info("%s %s %d %.1fms", scope.get("method"), route, status, elapsed * 1000)

    def _route(self, scope: Scope) -> str:
        """The route template: a closed set of labels (a real path holds ids, so it is never used)."""
        route: Any = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        # FastAPI does not name its own routes (/openapi.json, /docs) in the scope: they have no
        # parameters, so a path that is one of them is its own template.
        given = scope.get("path")
        return given if isinstance(given, str) and given in self._static_paths() else "unmatched"
