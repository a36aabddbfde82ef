"""A bench for the web page (import as `web.bench`): a bare FastAPI app with the page mounted, served by uvicorn on a random
loopback port, over a real store and the Bybit and OKX simulators; and a small browser-like client.

The API's own app and token table are not used here (unit tests of the page alone): tokens are
a dict behind a fake `authenticate`. The browser and demo tests in tests/e2e use the real ones.
Secrets and passphrases are canaries: any that reaches a page, a header or a log fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import string
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from fastapi import FastAPI

import canary
from keysentry.connections import ConnectionService, NewKey
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain.secrets import Secret
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.settings import Settings
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store.db import Database
from keysentry.vault import Vault, generate_master_key
from keysentry.web import mount

_ALNUM = string.ascii_letters + string.digits
EGRESS = ("127.0.0.1",)
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@dataclass(frozen=True)
class Key:
    exchange: str
    api_key: str
    secret: str
    account: str
    passphrase: str | None = None

    def form(self, **extra: str) -> dict[str, str]:
        out = {"exchange": self.exchange, "api_key": self.api_key, "secret": self.secret, **extra}
        if self.passphrase:
            out["passphrase"] = self.passphrase
        return out

    def new(self) -> NewKey:
        return NewKey(self.api_key, Secret(self.secret), Secret(self.passphrase) if self.passphrase else None)

    def __repr__(self) -> str:
        return f"Key({self.exchange}, {self.api_key[:4]}…)"


def _bybit(account: str) -> Key:
    return Key("bybit", "".join(secrets.choice(_ALNUM) for _ in range(18)), canary.bybit_secret(), account)


def _okx(account: str) -> Key:
    import uuid

    return Key("okx", str(uuid.uuid4()), canary.okx_secret(), account, canary.passphrase("okx"))


_KEYS: dict[str, Key] = {}


def keys() -> dict[str, Key]:
    """Made once per run: every registered canary makes each later test's log scan slower."""
    if not _KEYS:
        _KEYS.update(
            a1=_bybit("40000001"),  # healthy, account A
            a2=_bybit("40000001"),  # a second healthy key of account A
            b1=_bybit("40000002"),  # healthy, account B
            expired=_bybit("40000003"),
            readonly=_bybit("40000004"),
            okx=_okx("604000000000000001"),
        )
    return _KEYS


GOOD = {"permissions": ["Spot.SpotTrade"], "ip_whitelist": ["127.0.0.1"], "created_at": "-5d"}


def scenario(ks: Mapping[str, Key]) -> dict[str, Any]:
    bybit: dict[str, list[dict[str, Any]]] = {}
    for name, k in ks.items():
        if k.exchange != "bybit":
            continue
        spec: dict[str, Any] = {"api_key": k.api_key, "secret": k.secret, **GOOD}
        if name == "expired":
            spec.update(ip_whitelist=[], created_at="-95d")
        if name == "readonly":
            spec.update(permissions=[])
        bybit.setdefault(k.account, []).append(spec)
    okx = ks["okx"]
    return {
        "seed": 9,
        "exchanges": {
            "bybit": {"accounts": [{"id": acc, "keys": specs} for acc, specs in bybit.items()]},
            "okx": {
                "accounts": [
                    {
                        "id": okx.account,
                        "keys": [
                            {
                                "api_key": okx.api_key,
                                "secret": okx.secret,
                                "passphrase": okx.passphrase,
                                "permissions": ["read_only", "trade"],
                                "ip_whitelist": ["127.0.0.1"],
                            }
                        ],
                    }
                ]
            },
        },
    }


# -- serving an app on a random port --------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


@contextlib.asynccontextmanager
async def serve(app: FastAPI, host: str = "127.0.0.1") -> AsyncIterator[str]:
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=5)


# -- a browser-like client ----------------------------------------------------------------------------


@dataclass
class Page:
    status: int
    headers: Mapping[str, str]
    text: str
    set_cookies: list[str]

    @property
    def csrf(self) -> str:
        found = CSRF_META.search(self.text)
        assert found is not None, "the page has no CSRF token"
        return found.group(1)

    def json(self) -> Any:
        import json

        return json.loads(self.text)


@dataclass
class Browser:
    """Keeps its cookie like a browser (by hand: the values are what the tests look at) and its
    last CSRF token; sends Origin like a browser on POST."""

    base: str
    http: aiohttp.ClientSession
    cookie: str | None = None
    csrf: str = ""
    pages: list[Page] = field(default_factory=list)

    async def request(
        self, method: str, path: str, *, data: Any = None, json: Any = None, **headers: str
    ) -> Page:
        sent = {"Origin": self.base} if method == "POST" else {}
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        if self.cookie is not None:
            sent["Cookie"] = f"ks_session={self.cookie}"
        async with self.http.request(
            method, self.base + path, data=data, json=json, headers=sent, allow_redirects=False
        ) as r:
            text = await r.text()
            cookies = r.headers.getall("Set-Cookie", [])
            page = Page(r.status, r.headers.copy(), text, cookies)
        for c in cookies:
            if c.startswith("ks_session="):
                value = c.split(";", 1)[0].split("=", 1)[1].strip('"')
                self.cookie = value or None
        if CSRF_META.search(text):
            self.csrf = page.csrf
        self.pages.append(page)
        return page

    async def get(self, path: str, **headers: str) -> Page:
        return await self.request("GET", path, **headers)

    async def post(
        self, path: str, data: Mapping[str, str] | None = None, *, csrf: bool = True, **headers: str
    ) -> Page:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        return await self.request("POST", path, data=form, **headers)

    async def login(self, token: str) -> Page:
        await self.get("/login")
        page = await self.post("/login", {"token": token})
        assert page.status == 303, page.text
        await self.get("/connections")
        return page


@dataclass
class WebBench:
    url: str
    cluster: SimCluster
    service: ConnectionService
    tokens: dict[str, str]
    keys: dict[str, Key]
    http: aiohttp.ClientSession
    browsers: list[Browser] = field(default_factory=list)

    def browser(self) -> Browser:
        b = Browser(self.url, self.http)
        self.browsers.append(b)
        return b

    async def signed_in(self, tenant: str = "tenant-a") -> Browser:
        token = next(t for t, who in self.tokens.items() if who == tenant)
        b = self.browser()
        await b.login(token)
        return b

    def all_text(self) -> str:
        """Everything every browser of the test received: bodies and headers."""
        return "\n".join(f"{p.headers}\n{p.text}" for b in self.browsers for p in b.pages)


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebBench]:
    ks = keys()
    tokens = {"tok-" + secrets.token_urlsafe(16): "tenant-a", "tok-" + secrets.token_urlsafe(16): "tenant-b"}

    async def authenticate(token: str) -> str | None:
        return tokens.get(token)

    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'web.db'}")
    vault = Vault.open(tmp_path / "vault", master_key=generate_master_key())
    async with (
        SimCluster(parse_scenario(scenario(ks))) as cluster,
        Transport(egress_ips=EGRESS, timeouts=Timeouts(connect=2.0, total=4.0)) as transport,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):

        def options(exchange: str, environment: str, profile: str) -> CheckOptions:
            return CheckOptions(
                profile=get_profile(profile),
                environment=environment,
                base_url=cluster.url(exchange, environment),
                egress_ips=EGRESS,
            )

        service = ConnectionService(db, vault=vault, engine=DiagnosisEngine(transport), options=options)
        app = FastAPI()
        settings = Settings(data_dir=tmp_path / "data", egress_ips=",".join(EGRESS))
        mount(app, service=service, authenticate=authenticate, settings=settings)
        try:
            async with serve(app) as url:
                yield WebBench(url, cluster, service, tokens, ks, http)
        finally:
            await db.close()
