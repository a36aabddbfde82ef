"""The "My Exchanges" page in a real browser (Debian's chromium, headless) against the real service.

The service is the demo (`python -m keysentry.demo`): the real API app and page under uvicorn,
a real token made through the admin API, every demo key connected, and the simulators with
their admin endpoint, all in a temporary directory. The tests walk what a user does: sign in,
read the cards, open a guide, refresh after a change on the exchange, add a key pasted with a
trailing space, add an account that is already connected and update it instead, and remove.
(The API's /docs page has its own browser test: test_api_docs.py.)

Screenshots of the main views at desktop (1280 px) and phone (390 px) width are taken on every
run, into a temporary directory; with KEYSENTRY_UPDATE_SCREENSHOTS=1 (`make screenshots`) into
docs/screenshots/ (shown in the README), so a test run leaves tracked files alone. When CI=true a
missing /usr/bin/chromium fails.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keysentry.diagnosis.catalog import STATUS_TEXTS
from keysentry.domain import Status
from keysentry.sim.runner import DEMO_SCENARIO, key_lines
from keysentry.sim.scenario import load_scenario
from web.chromium import launched, require_chromium
from web.demo_process import DemoRun, environ, start_demo, stop_demo

pytestmark = pytest.mark.e2e

DOC_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000
_ALNUM = string.ascii_letters + string.digits

if TYPE_CHECKING := False:  # pragma: no cover
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    require_chromium()
    folder = tmp_path_factory.mktemp("demo-web")
    run = start_demo(
        [sys.executable, "-m", "keysentry.demo", "--port", "0", "--data-dir", str(folder / "data")],
        env=environ(),
        cwd=folder,
    )
    try:
        yield run
    finally:
        code = stop_demo(run)
        assert code == 0, f"the demo exited with {code}: {run.error_output()}"


@pytest.fixture(scope="module")
def browser(demo: DemoRun) -> Iterator[Browser]:
    with launched() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def lines() -> list[dict[str, Any]]:
    return key_lines(load_scenario(DEMO_SCENARIO))


def signed_in(browser: Browser, demo: DemoRun, viewport: dict[str, int] = DESKTOP) -> Page:
    page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(demo.page + "/")
    page.get_by_label("Access token").fill(demo.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/connections")
    return page


def shot(page: Page, name: str) -> None:
    updating = os.environ.get("KEYSENTRY_UPDATE_SCREENSHOTS") == "1"
    where = DOC_SHOTS if updating else Path(tempfile.gettempdir()) / "keysentry-screenshots"
    where.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(where / f"{name}.png"))


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page scrolls sideways: {width} px"  # type: ignore[index]


def card(page: Page, label: str) -> Any:
    return page.locator("article.card", has=page.locator("h3", has_text=label)).first


def admin(demo: DemoRun, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        demo.admin_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {demo.admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read() or b"null")


def line(lines: list[dict[str, Any]], exchange: str, intent: str) -> dict[str, Any]:
    return next(k for k in lines if k["exchange"] == exchange and k["intent"] == intent)


# -- the tests --------------------------------------------------------------------------------------------


def test_sign_in_and_see_every_status(browser: Browser, demo: DemoRun, lines: list[dict[str, Any]]) -> None:
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
        page.goto(demo.page + "/")
        page.wait_for_url("**/login")
        shot(page, f"{name}-sign-in")
        page.close()
        page = signed_in(browser, demo, viewport)
        titles = set(page.locator("article.card .badge-text").all_inner_texts())
        expected = {STATUS_TEXTS[s].title for s in Status if s is not Status.UNCHECKED}
        assert expected <= titles, f"statuses not shown: {expected - titles}"
        assert page.locator("article.card").count() == len(lines)
        expiring = card(page, line(lines, "binance", "expires_soon")["label"])
        assert re.search(r"Expires in \d+ days?", expiring.inner_text())
        restricted = card(page, line(lines, "okx", "incorrect_permissions")["label"])
        assert "missing permissions" in restricted.inner_text().lower()
        no_horizontal_scroll(page)
        shot(page, f"{name}-connections")
        page.close()


def test_a_status_opens_its_guide_as_a_dialog(
    browser: Browser, demo: DemoRun, lines: list[dict[str, Any]]
) -> None:
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page = signed_in(browser, demo, viewport)
        target = card(page, line(lines, "binance", "ip_not_allowed")["label"])
        badge = target.locator("a.badge")
        badge.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        dialog.wait_for()
        assert dialog.locator("#guide-title").evaluate("el => el === document.activeElement")
        assert "IP not allowed" in dialog.locator("#guide-title").inner_text()
        steps = dialog.locator("ol.steps > li")
        assert steps.count() >= 1
        assert "127.0.0.2" in dialog.locator(".ip-list").inner_text()
        assert dialog.get_by_role("button", name="Copy addresses").is_visible()
        assert dialog.get_by_role("button", name="Check again").is_visible()
        no_horizontal_scroll(page)
        shot(page, f"{name}-guide")
        dialog.get_by_role("button", name="Copy addresses").click()
        copied = dialog.locator(".copy-status")
        page.wait_for_function("el => el.textContent.length > 0", arg=copied.element_handle())
        assert "127.0.0.2" in copied.inner_text() or "Select the addresses" in copied.inner_text()
        before = target.locator("time").first.get_attribute("datetime")
        dialog.get_by_role("button", name="Check again").click()
        page.wait_for_function(
            "([id, before]) => document.getElementById(id).querySelector('time').getAttribute('datetime') !== before",
            arg=[target.get_attribute("id"), before],
        )
        again = dialog.get_by_role("button", name="Check again")
        again.wait_for()
        page.wait_for_function("el => !el.disabled", arg=again.element_handle())  # the guide is reloaded
        assert "IP not allowed" in dialog.locator("#guide-title").inner_text()
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")
        # focus back on the badge (of the card swapped in by Check again): the dialog's close event moves it
        page.wait_for_function(
            "id => document.activeElement === document.getElementById(id).querySelector('a.badge')",
            arg=target.get_attribute("id"),
        )
        page.close()


def test_refresh_shows_a_change_made_on_the_exchange(
    browser: Browser, demo: DemoRun, lines: list[dict[str, Any]]
) -> None:
    healthy = line(lines, "binance", "connected")
    page = signed_in(browser, demo)
    target = card(page, healthy["label"])
    assert target.locator(".badge-text").inner_text() == "Connected"
    # the user (or someone with their account) turns on withdrawals for the bot's key
    admin(
        demo,
        "PATCH",
        f"/admin/binance/keys/{healthy['api_key']}",
        {"permissions": ["reading", "spot_and_margin_trading", "withdrawals"]},
    )
    url = page.url
    target.get_by_role("button", name=re.compile("^Refresh")).click()
    page.wait_for_function(
        "id => document.getElementById(id).querySelector('.badge-text').textContent !== 'Connected'",
        arg=target.get_attribute("id"),
    )
    assert card(page, healthy["label"]).locator(".badge-text").inner_text() == "Withdrawal enabled"
    assert page.url == url  # swapped in place, no page load
    page.close()


def test_remove_then_add_back_a_key_pasted_with_a_trailing_space(
    browser: Browser, demo: DemoRun, lines: list[dict[str, Any]]
) -> None:
    healthy = line(lines, "okx", "connected")
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page = signed_in(browser, demo, viewport)
        card(page, healthy["label"]).get_by_role("link", name=re.compile("^Details")).click()
        page.get_by_role("link", name="Remove connection").click()
        assert "cannot be undone" in page.inner_text("main")
        page.get_by_role("button", name="Remove connection").click()
        page.wait_for_url("**/connections")
        assert "was removed" in page.inner_text(".flash")
        assert card(page, healthy["label"]).count() == 0

        page.get_by_role("link", name="Add connection").first.click()
        page.get_by_role("radio", name="OKX").check()
        page.get_by_label("Name", exact=True).fill(healthy["label"])
        page.get_by_label("API key", exact=True).fill(healthy["api_key"] + " ")
        page.get_by_label("Secret key").fill(healthy["secret"])
        page.get_by_label("API passphrase").fill(healthy["passphrase"])
        note = page.locator("#api_key-notes li")
        note.wait_for()
        assert "Removed 1 space" in note.inner_text()
        no_horizontal_scroll(page)
        shot(page, f"{name}-add")
        page.get_by_role("button", name="Check and save").click()
        result = page.locator('[data-result="added"]')
        result.wait_for()
        assert "Connected" in result.locator("#result-title").inner_text()
        assert "Removed 1 space" in result.inner_text()
        assert result.locator("#result-title").evaluate("el => el === document.activeElement")
        shot(page, f"{name}-added")
        page.get_by_role("link", name="Go to My Exchanges").click()
        assert card(page, healthy["label"]).locator(".badge-text").inner_text() == "Connected"
        page.close()


def test_an_already_connected_account_is_offered_its_update(
    browser: Browser, demo: DemoRun, lines: list[dict[str, Any]]
) -> None:
    existing = line(lines, "bybit", "expires_soon")
    api_key = "".join(secrets.choice(_ALNUM) for _ in range(18))
    secret = "".join(secrets.choice(_ALNUM) for _ in range(36))
    admin(
        demo,
        "POST",
        f"/admin/bybit/accounts/{existing['account_id']}/keys",
        {
            "api_key": api_key,
            "secret": secret,
            "permissions": ["Spot.SpotTrade"],
            "ip_whitelist": ["127.0.0.2", "127.0.0.3"],
        },
    )
    page = signed_in(browser, demo)
    page.goto(demo.page + "/connections/new")
    page.get_by_role("radio", name="Bybit").check()
    page.get_by_label("Name", exact=True).fill("bybit again")
    page.get_by_label("API key", exact=True).fill(api_key)
    page.get_by_label("Secret key").fill(secret)
    page.get_by_role("button", name="Check and save").click()
    offered = page.locator('[data-result="already_connected"]')
    offered.wait_for()
    assert existing["label"] in offered.inner_text()
    offered.get_by_role("link", name=re.compile("^Update the keys of")).click()
    page.wait_for_url("**/update")
    page.get_by_label("API key", exact=True).fill(api_key)
    page.get_by_label("Secret key").fill(secret)
    page.get_by_role("button", name="Check and update").click()
    updated = page.locator('[data-result="updated"]')
    updated.wait_for()
    assert "Connected" in updated.locator("#result-title").inner_text()
    connection_id = updated.locator("article.card").get_attribute("id")
    page.goto(f"{demo.page}/connections/{connection_id}/history")
    rows = page.locator("table.history tbody tr")
    assert rows.count() == 2
    assert "keys updated" in rows.nth(0).inner_text() and "added" in rows.nth(1).inner_text()
    shot(page, "desktop-history")
    page.set_viewport_size(PHONE)
    no_horizontal_scroll(page)
    shot(page, "phone-history")
    page.close()


def test_a_refused_key_shows_why_and_can_be_saved_anyway(
    browser: Browser, demo: DemoRun, lines: list[dict[str, Any]]
) -> None:
    expired = line(lines, "bybit", "expired")
    page = signed_in(browser, demo)
    connection_id = card(page, expired["label"]).get_attribute("id")
    page.goto(f"{demo.page}/connections/{connection_id}/remove")
    page.get_by_role("button", name="Remove connection").click()
    page.wait_for_url("**/connections")
    page.goto(demo.page + "/connections/new")
    page.get_by_role("radio", name="Bybit").check()
    page.get_by_label("Name", exact=True).fill("old key")
    page.get_by_label("API key", exact=True).fill(expired["api_key"])
    page.get_by_label("Secret key").fill(expired["secret"])
    page.get_by_role("button", name="Check and save").click()
    refused = page.locator('[data-result="refused"]')
    refused.wait_for()
    assert "Expired" in refused.locator("#result-title").inner_text()
    assert refused.locator("ol.steps > li").count() >= 1
    shot(page, "desktop-refused")
    page.get_by_role("button", name="Save anyway").click()
    saved = page.locator('[data-result="added"]')
    saved.wait_for()
    assert "Expired" in saved.locator("#result-title").inner_text()
    page.get_by_role("link", name="Go to My Exchanges").click()
    assert card(page, "old key").locator(".badge-text").inner_text() == "Expired"
    page.close()
