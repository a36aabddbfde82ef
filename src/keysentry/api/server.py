"""`keysentry serve`: the REST API on uvicorn, after the checks that must pass before listening.

In order: the settings parse; the admin token is strong (or absent: admin API off); the vault
opens (sealed: refuse, with the vault's sentence); the database is migrated. Only then does
uvicorn listen. Once it does, one line goes to stdout, `keysentry API listening on http://H:P`
(with the real port when 0 was asked), so scripts and tests can read where it is.

Logs go to stderr through the standard logging module: the API's access log names route
templates, never paths with ids, and never a header; uvicorn's own access log is off.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["REFUSED", "serve"]

REFUSED = 3  # the CLI's usage/configuration exit code
log = logging.getLogger("keysentry.api")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _settings_problem(error: Exception) -> str:
    """A settings error without the values: pydantic would echo the input, which may be a secret."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        from keysentry.settings import settings_problem

        return "invalid settings: " + settings_problem(error)
    return _first_line(error)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    log_level: str = "info",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the API until SIGINT or SIGTERM. 0 after a clean shutdown; 3 when it refuses to start."""
    out, err = out or sys.stdout, err or sys.stderr
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    try:
        app, url, proxies = _prepare()
    except Exception as e:
        err.write(f"keysentry serve: refusing to start: {_settings_problem(e)}\n")
        err.flush()
        return REFUSED
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # Forwarded headers only from proxies the operator named: otherwise any client could claim
        # https (and so a Secure cookie) or another address (and so another rate-limit bucket).
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        timeout_graceful_shutdown=10,
    )
    log.info("database %s is migrated; starting the API", url)
    return asyncio.run(_run(uvicorn.Server(config), host, out))


def _prepare() -> tuple[FastAPI, str, str]:
    """The app, after every check that must pass before listening; the database shown safely; the
    trusted proxies."""
    from keysentry.api.app import create_app
    from keysentry.process import tune_collector
    from keysentry.settings import load_settings
    from keysentry.store.db import resolve_url, safe_url
    from keysentry.store.migrate import upgrade

    settings = load_settings()
    tune_collector(settings.gc_threshold)
    app = create_app(settings)  # admin token, profiles file, vault: each refuses with its sentence
    url = resolve_url(settings.database_url, settings.data_dir)
    upgrade(url)
    return app, safe_url(url), settings.forwarded_allow_ips


async def _run(server: uvicorn.Server, host: str, out: TextIO) -> int:
    task = asyncio.create_task(server.serve())
    # uvicorn exposes startup as a flag only, no event to wait on
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        out.write(f"keysentry API listening on {_url(host, port)}\n")
        out.flush()
    await task
    return 0 if server.started else REFUSED
