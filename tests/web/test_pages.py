"""The web page over real HTTP: sign-in, cookies, CSRF, tenant isolation, and every form without JavaScript.

Each test gets its own store, simulators and server (web.bench). Requests are what a browser
without JavaScript sends (form posts, Origin on POST); a request carrying `X-KS-Fragment` is
what the page's script sends. Secrets are canaries: none may appear in any page or header.
"""

from __future__ import annotations

import re
from typing import Any

import canary
from web.bench import Browser, WebBench

FRAGMENT = {"X_KS_Fragment": "card"}


def cookie_attributes(set_cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}


def cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def session_cookie(page: Any) -> str:
    found = [c for c in page.set_cookies if c.startswith("ks_session=")]
    assert len(found) == 1, page.set_cookies
    return str(found[0])


async def add(b: Browser, form: dict[str, str]) -> Any:
    await b.get("/connections/new")
    return await b.post("/connections", form)


def connection_ids(html: str) -> list[str]:
    return re.findall(r'<article class="card[^"]*" id="(con_[0-9a-f]+)"', html)


async def expire_on_exchange(web: WebBench, exchange: str, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {web.cluster.admin_token}"}
    async with web.http.post(
        f"{web.cluster.admin_url}/admin/{exchange}/keys/{api_key}/expire", headers=headers
    ) as r:
        assert r.status == 200, await r.text()


# -- signing in -----------------------------------------------------------------------------------------


async def test_signing_in_keeps_the_token_in_a_strict_http_only_cookie_under_a_new_session(
    web: WebBench,
) -> None:
    b = web.browser()
    form = await b.get("/login")
    anonymous = session_cookie(form)
    assert cookie_attributes(anonymous) >= {"httponly", "samesite", "path"}
    assert "samesite=strict" in anonymous.lower()
    assert "secure" not in cookie_attributes(anonymous)  # plain http: a Secure cookie would never come back
    old_csrf = form.csrf
    token = next(iter(web.tokens))

    signed = await b.post("/login", {"token": token, "next": "/connections"})
    assert signed.status == 303, (signed.status, signed.text[-600:])
    assert signed.headers["location"] == "/connections"
    cookie = session_cookie(signed)
    assert "samesite=strict" in cookie.lower() and "httponly" in cookie.lower()
    assert cookie_value(cookie) != cookie_value(anonymous)
    assert token not in cookie and token[4:] not in cookie  # sealed, not the token itself

    page = await b.get("/connections")
    assert page.status == 200 and "My Exchanges" in page.text
    assert page.csrf != old_csrf  # a new session id: a token planted before sign-in is worth nothing
    refused = await b.post("/logout", {"csrf_token": old_csrf})
    assert refused.status == 403
    assert (await b.get("/connections")).status == 200  # still signed in
    out = await b.post("/logout")
    assert out.status == 303 and out.headers["location"] == "/login"
    assert (await b.get("/connections")).status == 303


async def test_the_cookie_is_secure_when_served_over_https(web: WebBench) -> None:
    # the test server trusts X-Forwarded-Proto from loopback, like a TLS-terminating proxy in front
    page = await web.browser().get("/login", X_Forwarded_Proto="https")
    assert "secure" in cookie_attributes(session_cookie(page))


async def test_a_wrong_token_or_a_missing_csrf_token_does_not_sign_in(web: WebBench) -> None:
    b = web.browser()
    await b.get("/login")
    wrong = await b.post("/login", {"token": "ks_" + "A" * 43})
    assert wrong.status == 401 and "not valid" in wrong.text
    assert "ks_" + "A" * 43 not in wrong.text  # the token typed is not shown back
    no_csrf = await b.post("/login", {"token": next(iter(web.tokens))}, csrf=False)
    assert no_csrf.status == 403
    assert (await b.get("/connections")).status == 303


async def test_pages_need_a_session_and_scripts_get_401(web: WebBench) -> None:
    b = web.browser()
    page = await b.get("/connections/new")
    assert page.status == 303 and page.headers["location"] == "/login?next=/connections/new"
    assert (await b.get("/")).headers["location"] == "/login"
    await b.get("/login")
    posted = await b.post("/connections/con_0000000000000000/refresh")
    assert posted.status == 303 and posted.headers["location"] == "/login"
    scripted = await b.post("/connections/con_0000000000000000/refresh", **FRAGMENT)
    assert scripted.status == 401
    checked = await b.request(
        "POST", "/connections/check-field", json={"exchange": "bybit", "field": "api_key", "value": "x"}
    )
    assert checked.status == 401
    outside = await b.get("/login?next=//evil.example/")
    assert 'value="/connections"' in outside.text  # never sent to another site after signing in


async def test_a_revoked_token_ends_its_sessions(web: WebBench) -> None:
    b = await web.signed_in("tenant-a")
    token = next(t for t, who in web.tokens.items() if who == "tenant-a")
    del web.tokens[token]
    page = await b.get("/connections")
    assert page.status == 303 and page.headers["location"].startswith("/login")
    assert "revoked" in (await b.get("/login")).text


# -- CSRF and origins ----------------------------------------------------------------------------------


async def test_posts_without_their_csrf_token_or_from_another_site_change_nothing(web: WebBench) -> None:
    b = await web.signed_in()
    done = await web.service.add("tenant-a", "bybit", web.keys["a1"].new(), label="main")
    cid = done.connection.id
    path = f"/connections/{cid}/remove"
    attempts = [
        await b.post(path, csrf=False),
        await b.post(path, {"csrf_token": "forged"}),
        await b.post(path, Origin="https://evil.example"),
        await b.post(path, Sec_Fetch_Site="cross-site"),
        await b.post(path, Origin="null"),
    ]
    assert [a.status for a in attempts] == [403] * 5
    assert [c.id for c in await web.service.list_connections("tenant-a")] == [cid]
    # another tenant's session token does not pass for this session either
    other = await web.signed_in("tenant-b")
    assert (await b.post(path, {"csrf_token": other.csrf})).status == 403
    gone = await b.post(path)
    assert gone.status == 303 and gone.headers["location"] == "/connections"
    assert await web.service.list_connections("tenant-a") == []


async def test_pages_forbid_framing_and_foreign_scripts(web: WebBench) -> None:
    page = await web.browser().get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline for the CSP to allow


# -- tenant isolation ------------------------------------------------------------------------------------


async def test_another_tenants_connection_is_not_found_on_any_page(web: WebBench) -> None:
    mine = await web.service.add("tenant-a", "bybit", web.keys["a1"].new(), label="tenant A's bot")
    cid = mine.connection.id
    b = await web.signed_in("tenant-b")
    listing = await b.get("/connections")
    assert "tenant A&#39;s bot" not in listing.text and cid not in listing.text
    for path in ("", "/guide", "/history", "/update", "/remove"):
        page = await b.get(f"/connections/{cid}{path}")
        assert page.status == 404, path
        assert "tenant A" not in page.text
    key = web.keys["b1"]
    for path, form in (
        ("/refresh", {}),
        ("/remove", {}),
        ("/update", {"api_key": key.api_key, "secret": key.secret}),
    ):
        page = await b.post(f"/connections/{cid}{path}", form)
        assert page.status == 404, path
    assert (await b.post(f"/connections/{cid}/refresh", **FRAGMENT)).status == 404
    after = await web.service.get("tenant-a", cid)
    assert after.credential_version == 1 and after.label == "tenant A's bot"
    assert len(await web.service.history("tenant-a", cid)) == 1  # not even refreshed


# -- adding, refusing, updating, removing (no JavaScript) -----------------------------------------------


async def test_a_key_pasted_with_a_trailing_space_is_cleaned_and_connected(web: WebBench) -> None:
    b = await web.signed_in()
    key = web.keys["a1"]
    page = await add(b, key.form(label="spot bot", api_key=key.api_key + " "))
    assert page.status == 200
    assert 'data-result="added"' in page.text and "Connected" in page.text
    assert "Removed 1 space or line break at the end of the API key." in page.text
    [record] = await web.service.list_connections("tenant-a")
    assert record.masked_key == key.api_key[:4] + "…" + key.api_key[-4:]
    listing = await b.get("/connections")
    assert connection_ids(listing.text) == [record.id]
    assert "spot bot" in listing.text and record.account_id in listing.text  # type: ignore[operator]


async def test_a_refused_key_says_why_and_can_be_saved_anyway(web: WebBench) -> None:
    b = await web.signed_in()
    key = web.keys["expired"]
    refused = await add(b, key.form(label="old bot"))
    assert refused.status == 422
    assert 'data-result="refused"' in refused.text and "Expired" in refused.text
    assert '<ol class="steps">' in refused.text  # how to fix it, step by step
    assert 'name="save_anyway" value="1"' in refused.text
    assert await web.service.list_connections("tenant-a") == []
    assert 'value="old bot"' in refused.text  # the label comes back; the key fields never do
    saved = await b.post("/connections", key.form(label="old bot", save_anyway="1"))
    assert saved.status == 200 and 'data-result="added"' in saved.text
    [record] = await web.service.list_connections("tenant-a")
    assert record.status.value == "expired"


async def test_input_that_cannot_be_right_is_refused_without_save_anyway(web: WebBench) -> None:
    b = await web.signed_in()
    key = web.keys["b1"]
    page = await add(b, key.form(label="swapped", api_key=key.secret, secret=key.secret))
    assert page.status == 422
    assert 'name="save_anyway"' not in page.text
    assert await web.service.list_connections("tenant-a") == []


async def test_an_account_already_connected_is_offered_its_update_form(web: WebBench) -> None:
    b = await web.signed_in()
    first = await add(b, web.keys["a1"].form(label="main account"))
    [record] = await web.service.list_connections("tenant-a")
    assert 'data-result="added"' in first.text
    again = await b.post("/connections", web.keys["a2"].form(label="again", save_anyway="1"))
    assert again.status == 409 and 'data-result="already_connected"' in again.text
    assert f'href="/connections/{record.id}/update"' in again.text
    assert "main account" in again.text
    assert len(await web.service.list_connections("tenant-a")) == 1

    form = await b.get(f"/connections/{record.id}/update")
    assert form.status == 200 and "Update the keys of" in form.text
    key = web.keys["a2"]
    updated = await b.post(f"/connections/{record.id}/update", {"api_key": key.api_key, "secret": key.secret})
    assert updated.status == 200 and 'data-result="updated"' in updated.text
    after = await web.service.get("tenant-a", record.id)
    assert after.credential_version == 2 and after.masked_key.startswith(key.api_key[:4])
    history = await b.get(f"/connections/{record.id}/history")
    rows = re.findall(r"<tr>\s*<td data-label=\"When\">", history.text)
    assert len(rows) == 2
    assert history.text.index("keys updated") < history.text.index("added")  # newest first


async def test_the_same_key_twice_names_the_connection_it_is_stored_as(web: WebBench) -> None:
    b = await web.signed_in()
    await add(b, web.keys["a1"].form(label="first"))
    [record] = await web.service.list_connections("tenant-a")
    again = await b.post("/connections", web.keys["a1"].form(label="second"))
    assert again.status == 409 and 'data-result="duplicate"' in again.text
    assert f'href="/connections/{record.id}"' in again.text
    same = await b.post(f"/connections/{record.id}/update", web.keys["a1"].form())
    assert same.status == 409 and "nothing to update" in same.text


async def test_a_key_of_another_account_does_not_replace_the_key(web: WebBench) -> None:
    b = await web.signed_in()
    done = await web.service.add("tenant-a", "bybit", web.keys["a1"].new(), label="main")
    key = web.keys["b1"]
    page = await b.post(
        f"/connections/{done.connection.id}/update", {"api_key": key.api_key, "secret": key.secret}
    )
    assert page.status == 422 and "40000002" in page.text and "40000001" in page.text
    assert (await web.service.get("tenant-a", done.connection.id)).credential_version == 1


async def test_refresh_rechecks_in_place_and_sees_a_change_on_the_exchange(web: WebBench) -> None:
    b = await web.signed_in()
    done = await web.service.add("tenant-a", "bybit", web.keys["a1"].new(), label="main")
    cid = done.connection.id
    await b.get("/connections")
    await expire_on_exchange(web, "bybit", web.keys["a1"].api_key)
    card = await b.post(f"/connections/{cid}/refresh", **FRAGMENT)
    assert card.status == 200
    assert card.text.lstrip().startswith(f'<article class="card sev-error" id="{cid}"')
    assert "Expired" in card.text and "<html" not in card.text
    assert 'name="csrf_token" value="' + b.csrf + '"' in card.text  # the swapped card can refresh again
    plain = await b.post(f"/connections/{cid}/refresh")
    assert plain.status == 303 and plain.headers["location"] == f"/connections#{cid}"
    assert [c.trigger for c in await web.service.history("tenant-a", cid)] == ["refresh", "refresh", "add"]


async def test_the_guide_explains_the_status_with_steps_and_the_addresses_to_whitelist(web: WebBench) -> None:
    b = await web.signed_in()
    done = await web.service.add(
        "tenant-a", "bybit", web.keys["readonly"].new(), label="read only", save_anyway=True
    )
    cid = done.connection.id
    await b.get("/connections")
    fragment = await b.get(f"/connections/{cid}/guide", X_KS_Fragment="guide")
    assert fragment.status == 200 and "<html" not in fragment.text
    assert 'id="guide-title"' in fragment.text and "Incorrect permissions" in fragment.text
    assert re.search(r'<ol class="steps">\s*<li>', fragment.text)
    assert "127.0.0.1" in fragment.text and 'data-copy="127.0.0.1"' in fragment.text
    assert "Check again" in fragment.text
    page = await b.get(f"/connections/{cid}/guide")
    assert page.status == 200 and "<html" in page.text and 'id="guide-title"' in page.text
    listing = await b.get("/connections")
    assert "spot trading" in listing.text  # the missing permission, on the card


async def test_removing_asks_first_then_destroys_the_connection(web: WebBench) -> None:
    b = await web.signed_in()
    done = await web.service.add("tenant-a", "bybit", web.keys["a1"].new(), label="to remove")
    cid = done.connection.id
    confirm = await b.get(f"/connections/{cid}/remove")
    assert confirm.status == 200 and "cannot be undone" in confirm.text
    assert await web.service.list_connections("tenant-a") != []  # asking removes nothing
    gone = await b.post(f"/connections/{cid}/remove")
    assert gone.status == 303
    listing = await b.get("/connections")
    assert "“to remove” (Bybit) was removed" in listing.text
    assert cid not in listing.text
    assert (await b.get(f"/connections/{cid}")).status == 404


async def test_the_list_filters_by_severity(web: WebBench) -> None:
    b = await web.signed_in()
    good = await web.service.add("tenant-a", "bybit", web.keys["a1"].new(), label="good")
    bad = await web.service.add("tenant-a", "bybit", web.keys["expired"].new(), label="bad", save_anyway=True)
    assert connection_ids((await b.get("/connections")).text) == [bad.connection.id, good.connection.id]
    assert connection_ids((await b.get("/connections?show=ok")).text) == [good.connection.id]
    assert connection_ids((await b.get("/connections?show=error")).text) == [bad.connection.id]
    assert len(connection_ids((await b.get("/connections?show=nonsense")).text)) == 2


# -- warnings while typing -------------------------------------------------------------------------------


async def check(b: Browser, **body: Any) -> Any:
    return await b.request("POST", "/connections/check-field", json=body, X_CSRF_Token=b.csrf)


async def test_the_field_check_warns_without_echoing_the_value(web: WebBench) -> None:
    b = await web.signed_in()
    key = web.keys["okx"]
    spaced = await check(b, exchange="okx", field="api_key", value=key.api_key + " ")
    assert spaced.status == 200
    answer = spaced.json()
    assert answer["ok"] is True and [f["code"] for f in answer["findings"]] == ["input_whitespace_removed"]
    assert key.api_key not in spaced.text
    swapped = await check(b, exchange="okx", field="api_key", value=key.secret)
    assert swapped.json()["ok"] is False
    assert "input_wrong_field" in [f["code"] for f in swapped.json()["findings"]]
    clean = await check(b, exchange="okx", field="passphrase", value=key.passphrase)
    assert clean.json() == {"field": "passphrase", "ok": True, "findings": []}
    zero_width = await check(b, exchange="bybit", field="secret", value=web.keys["a1"].secret + "\u200b")
    assert "input_invisible_removed" in [f["code"] for f in zero_width.json()["findings"]]
    for bad in (
        {"exchange": "okx", "field": "label", "value": key.secret},
        {"exchange": "nope", "field": "secret", "value": key.secret},
        {"exchange": "okx", "field": "secret", "value": 12},
    ):
        refused = await check(b, **bad)
        assert refused.status == 400 and key.secret not in refused.text
    no_csrf = await b.request(
        "POST", "/connections/check-field", json={"exchange": "okx", "field": "secret", "value": "x"}
    )
    assert no_csrf.status == 403


# -- secrets ------------------------------------------------------------------------------------------


async def test_no_secret_or_passphrase_reaches_any_page(web: WebBench) -> None:
    b = await web.signed_in()
    okx = web.keys["okx"]
    await add(b, okx.form(label="okx bot"))
    await add(b, okx.form(label="okx again"))  # duplicate
    wrong_pp = dict(okx.form(label="wrong"), passphrase=okx.passphrase + "x")  # type: ignore[operator]
    await b.post("/connections", wrong_pp)
    await b.post("/connections", okx.form(label="swapped", api_key=okx.secret, secret=okx.api_key))
    await b.post("/connections", web.keys["expired"].form(label="expired"))
    await check(b, exchange="okx", field="api_key", value=okx.secret)
    await check(b, exchange="okx", field="passphrase", value=okx.passphrase + " ")
    [record] = await web.service.list_connections("tenant-a")
    for path in ("", "/guide", "/history", "/update", "/remove"):
        await b.get(f"/connections/{record.id}{path}")
    await b.get(f"/connections/{record.id}/guide", X_KS_Fragment="guide")
    await b.post(f"/connections/{record.id}/refresh", **FRAGMENT)
    await b.post(f"/connections/{record.id}/update", okx.form())
    await b.get("/connections")
    everything = web.all_text()
    assert len(b.pages) > 15
    canary.assert_no_leak(everything, "the pages, fragments and headers the browser received")
    assert okx.passphrase not in everything  # type: ignore[operator]
    assert okx.api_key not in everything  # the API key is shown masked only
