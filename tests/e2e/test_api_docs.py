"""The API's /docs page in a real browser (Debian's chromium, headless) with no internet: Swagger UI
served by the service itself.

The app is the real one (api.harness: create_app on uvicorn, in a thread). The browser reaches it
by a name that is not localhost (keysentry.test, mapped to 127.0.0.1 in chromium's resolver), as
on a deployed host: Swagger UI treats localhost apart in places (its online validator). Every
request to another host is aborted and recorded; the page must render the API's operations, run
one of them with "Try it out", and log no console error (a refusal by the page's
Content-Security-Policy is one). When CI=true a missing /usr/bin/chromium fails.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from api.harness import Threaded, threaded_stack
from web.chromium import launched

pytestmark = pytest.mark.e2e

HOST = "keysentry.test"  # a name that is not localhost, resolved by chromium to the loopback
TIMEOUT_MS = 15_000

if TYPE_CHECKING := False:  # pragma: no cover
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Threaded]:
    tmp: Path = tmp_path_factory.mktemp("docs")
    with threaded_stack(tmp, f"sqlite+aiosqlite:///{tmp / 'k.db'}") as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Chromium resolves the name to the loopback: the page runs as on a deployed host.
    with launched([f"--host-resolver-rules=MAP {HOST} 127.0.0.1"]) as chromium:
        yield chromium


def test_the_docs_page_renders_the_api_without_leaving_the_host(browser: Browser, live: Threaded) -> None:
    site = f"{HOST}:{urlsplit(live.base).port}"
    requested: list[str] = []
    off_host: list[str] = []
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(TIMEOUT_MS)

    def only_this_host(route: Any) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).netloc == site:
            route.continue_()
        else:
            off_host.append(url)
            route.abort()

    page.route("**/*", only_this_host)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
    try:
        answer = page.goto(f"http://{site}/docs")
        assert answer is not None and answer.status == 200
        # Swagger UI rendered the document: the title and the operations.
        try:
            page.locator('.opblock-summary-path[data-path="/v1/connections"]').first.wait_for()
        except PlaywrightTimeout:
            pytest.fail(f"Swagger UI rendered nothing; aborted off-host: {off_host}; errors: {errors}")
        assert "keysentry" in page.locator(".info .title").inner_text().lower()
        assert page.locator(".opblock").count() >= 10
        # Try it out: Swagger UI calls the service from the page (the policy allows 'self').
        health = page.locator(".opblock", has=page.locator('[data-path="/healthz"]')).first
        health.locator(".opblock-summary").click()
        health.get_by_role("button", name="Try it out").click()
        health.get_by_role("button", name="Execute").click()
        status = health.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "200"
        page.wait_for_load_state("networkidle")
        assert off_host == [], f"/docs reached beyond {site}: {off_host}"
        assert errors == [], errors
        assert f"http://{site}/docs/static/swagger-ui-bundle.js" in requested
        assert f"http://{site}/openapi.json" in requested
    finally:
        page.close()


def _get(url: str) -> tuple[int, Any, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers, r.read()


def test_swagger_ui_files_are_served_by_the_service(live: Threaded) -> None:
    for asset, kind in (
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("favicon.png", "image/png"),
    ):
        status, headers, body = _get(f"{live.base}/docs/static/{asset}")
        assert status == 200 and kind in headers["Content-Type"], (asset, headers["Content-Type"])
        assert len(body) > 1000, asset


def test_the_docs_pages_may_load_only_from_the_service(live: Threaded) -> None:
    for path in ("/docs", "/docs/oauth2-redirect"):
        status, headers, body = _get(live.base + path)
        assert status == 200 and headers["Content-Type"].startswith("text/html"), path
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self' 'sha256-" in policy, policy
        assert "http" not in policy and "*" not in policy and "unsafe" not in policy, policy
        assert b"https://" not in body and b"http://" not in body, path
    _, _, page = _get(live.base + "/docs")
    assert b'src="/docs/static/swagger-ui-bundle.js"' in page and b'"validatorUrl": null' in page
